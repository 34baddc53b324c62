"""Downloading dataset files with a progress bar; failures become clear, actionable errors."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from envs.errors import DatasetNotFoundError

CHUNK = 1 << 20
TIMEOUT_S = 30.0


class DownloadError(OSError):
    """A download could not be completed (offline, refused, interrupted)."""


def _urlopen(url: str, timeout: float):
    """urllib's urlopen; a separate name so tests can replace the network."""
    return urllib.request.urlopen(url, timeout=timeout)


def download_file(url: str, dest: str | Path, desc: str | None = None) -> Path:
    """Download ``url`` to ``dest`` (via a .part file, renamed when complete) with a tqdm bar."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with _urlopen(url, TIMEOUT_S) as resp:
            total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            total = int(total) if total else None
            with open(part, "wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or dest.name
            ) as bar:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
        if total is not None and part.stat().st_size != total:
            raise DownloadError(f"download of {url} stopped after {part.stat().st_size} of {total} bytes")
        os.replace(part, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        if isinstance(exc, DownloadError):
            raise
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"could not download {url}: {reason}") from None
    return dest


def fetch_or_explain(url: str, dest: Path, what: str, hint: str) -> Path:
    """Download ``url`` to ``dest``; on failure raise DatasetNotFoundError telling where to put it."""
    try:
        return download_file(url, dest, desc=what)
    except DownloadError as exc:
        raise DatasetNotFoundError(
            f"{what} is not on this machine and could not be downloaded ({exc}).\n"
            f"  Fetch it on a machine with network access:  {url}\n"
            f"  and place it at:  {dest}\n"
            f"  {hint}"
        ) from None
