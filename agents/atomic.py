"""Atomic file writes: a crash mid-write never destroys the previous file (no torch import here).

The rule lives in agents, the lowest layer that writes files of its own: dt_attn writes none, and envs only
downloads datasets, through a .part file renamed when complete (envs.download), its own form of the rule.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

TEMP_SUFFIX = ".tmp"
_umask_guard = threading.Lock()


class WriteError(OSError):
    """A file could not be written (disk full, no permission, ...); the previous file is intact."""

    def __init__(self, path: str | Path, reason: str, note: str = "") -> None:
        self.path, self.reason, self.note = Path(path), reason, note
        super().__init__(f"could not write {path}: {reason}" + (f"; {note}" if note else ""))

    def __reduce__(self) -> tuple[type, tuple[Path, str, str]]:
        # OSError pickles its message alone; DDP's ranks receive rank 0's failed write as a pickle
        return type(self), (self.path, self.reason, self.note)


def _file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (mkstemp's files are 0600)."""
    with _umask_guard:  # the umask can only be read by setting it
        umask = os.umask(0)
        os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """A temp file beside ``path`` for the block to write, with the mode ``open()`` would give ``path``
    (its name ends in ``path``'s suffix with ``keep_suffix``, for writers that pick a format by it); renamed
    over ``path`` when the block completes, removed when it raises. A failed write (disk full, ...) raises
    WriteError naming ``path`` and leaves the previous file as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = TEMP_SUFFIX + (path.suffix if keep_suffix else "")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise WriteError(path, exc.strerror or str(exc)) from exc
    try:
        os.chmod(tmp, _file_mode())
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
            raise WriteError(path, exc.strerror or str(exc), kept) from exc
        raise


def make_folder(path: str | Path, flag: str) -> Path:
    """Create the folder ``path`` (and its parents) for the option ``flag`` names; what stops it (a file in
    the way, no permission, a read-only filesystem) raises WriteError saying so and to choose another."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(path, _folder_problem(path, exc), f"choose another {flag}") from None
    return path


def _folder_problem(path: Path, exc: OSError) -> str:
    """Why ``path`` could not be made a folder: a file where a folder should be, or the system's reason."""
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            return f"{part} is a file, not a folder"
    return exc.strerror or str(exc)


def check_writable(path: str | Path, flag: str, folder: bool = False, example_name: str = "") -> None:
    """Refuse, before any work, an output path (a file, or a ``folder``) that the option ``flag`` names and
    that could not be written: a folder where a file goes (or the reverse), a file among its parents, or a
    nearest existing parent that is not writable (the folders below it are made when the output is
    written). A ValueError: the user can choose another path (a folder given for a file is answered with
    ``example_name`` inside it)."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        example = f" such as {path / example_name}" if example_name and path.is_dir() else ""
        wanted = "a folder" if folder else f"a file path{example}"
        raise ValueError(f"{flag} {path} is {'a folder' if path.is_dir() else 'a file'}; give {wanted}")
    parent = path if folder and path.is_dir() else path.parent  # a file is written through a temp beside it
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: the folder {parent} is not writable")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(binary file)`` on a temp file beside ``path``, then rename it over ``path``
    (``atomic_path``), the data on disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files that ``atomic_path`` left in ``folder`` when its process was killed mid-write
    (only safe while no other process writes there: hold the folder's run lock); returns them."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically; NaN and infinities become null (JSON has no literal
    for them)."""
    text = json.dumps(_finite_json(data), indent=2, allow_nan=False).encode()
    atomic_write(Path(path), lambda fh: fh.write(text))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    data = text.encode()
    atomic_write(path, lambda fh: fh.write(data))


def write_rows_csv(path: str | Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Dict rows as a CSV file, atomically; columns are ``columns`` (missing values empty), or else
    every key in first-seen order."""
    buf = io.StringIO(newline="")
    fieldnames = columns if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fieldnames, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def _finite_json(obj: Any) -> Any:
    """``obj`` with arrays as lists, paths as text and every non-finite float as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _finite_json(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


