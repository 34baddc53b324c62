"""Atomic checkpoint and JSON writes: a crash mid-write never destroys the previous file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save ``payload`` to ``path`` atomically (temp file in the same folder, then rename)."""
    _atomic_write(Path(path), lambda fh: torch.save(payload, fh))


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    text = json.dumps(data, indent=2, default=_json_default).encode()
    _atomic_write(Path(path), lambda fh: fh.write(text))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory or a .pt file -> the checkpoint file; clear error when missing."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {p}: pass a run directory that contains {CHECKPOINT_NAME} "
            "(written by `dt-attn train`) or the path of a checkpoint file"
        )
    return p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint``; a damaged file gives a clear error."""
    p = resolve_checkpoint(path)
    try:
        payload = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ValueError(f"checkpoint {p} could not be read ({type(exc).__name__}: {exc}); it may be truncated") from exc
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise ValueError(f"{p} is not a dt-attn checkpoint (missing 'model'/'config' entries)")
    return payload
