"""An exclusive, cross-process lock on a run folder, held for the whole of a run or an evaluation.

The lock is an ``fcntl.flock`` on RUN_DIR/run.lock, a file that names the holder ("PID HOST") and is
removed on release. The kernel drops a flock when its process dies, so a lock file left by a killed
process is stale: the next process simply takes it over. Within one process the lock is re-entrant (a
training run that evaluates into its own folder takes it twice).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agents.atomic import WriteError, make_folder

LOCK_NAME = "run.lock"

try:
    import fcntl
except ImportError:  # not POSIX: runs are not protected from each other
    fcntl = None  # type: ignore[assignment]

# resolved run folder -> [fd, depth, created] of the locks this process holds
_held: dict[Path, list[int]] = {}
_guard = threading.Lock()


class RunLockedError(RuntimeError):
    """The run folder is in use by another live process."""


def _holder_text(fd: int) -> str:
    """'process PID on HOST' from a lock file's contents ('another process' when it is empty)."""
    os.lseek(fd, 0, os.SEEK_SET)
    words = os.read(fd, 256).decode(errors="replace").split()
    if not words:
        return "another process"
    return f"process {words[0]}" + (f" on {words[1]}" if len(words) > 1 else "")


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a releasing holder removes it)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def lock_owner(run_dir: str | Path) -> str | None:
    """'process PID on HOST' when another live process holds ``run_dir``'s lock, else None (also for
    a stale lock file left by a killed process, and for a folder this process holds)."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    if fcntl is None or not path.is_file() or run_dir.resolve() in _held:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # released meanwhile
        return None
    try:
        return None if _try_flock(fd, fcntl.LOCK_SH, tries=1) else _holder_text(fd)
    finally:
        os.close(fd)  # also drops the probe's shared lock


def _try_flock(fd: int, kind: int, tries: int = 5) -> bool:
    """Whether a non-blocking flock of ``kind`` succeeded; a few short retries let another process's
    ``lock_owner`` probe (which holds a shared lock for microseconds) pass."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        if attempt + 1 < tries:
            time.sleep(0.01)
    return False


def acquire(run_dir: str | Path, flag: str = "--run-dir") -> None:
    """Take ``run_dir``'s lock (creating the folder) or raise RunLockedError naming the holder; a folder or
    lock file that cannot be created raises WriteError. Both tell the user to choose another ``flag`` (the
    option through which the command writes elsewhere)."""
    key = Path(run_dir).resolve()
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return
        created = not key.exists()
        if fcntl is None:
            _held[key] = [-1, 1, created]
            return
        make_folder(key, flag)
        while True:
            try:
                fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
            except OSError as exc:  # a read-only filesystem, no permission
                reason = exc.strerror or str(exc)
                raise WriteError(key / LOCK_NAME, reason, f"choose another {flag}") from None
            if not _try_flock(fd, fcntl.LOCK_EX):
                holder = _holder_text(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{run_dir} is in use by {holder} (it holds {Path(run_dir) / LOCK_NAME}); wait for it to "
                    f"finish or stop it, or choose another {flag}"
                ) from None
            if _same_file(fd, key / LOCK_NAME):
                break
            os.close(fd)  # locked a file its holder removed while we opened it: try the current one
        os.ftruncate(fd, 0)  # a stale holder's name is replaced by ours
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        _held[key] = [fd, 1, created]


def release(run_dir: str | Path) -> None:
    """Give back one acquisition of ``run_dir``'s lock; the last one removes the lock file (and the folder,
    when the lock created it and nothing else was written there) and unlocks."""
    key = Path(run_dir).resolve()
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        fd, _, created = entry
        if fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(key / LOCK_NAME)  # while still locked: see _same_file
            os.close(fd)  # closing drops the flock
        if created:
            with contextlib.suppress(OSError):
                key.rmdir()  # only when empty: a run that failed to start leaves no folder behind


@contextmanager
def run_lock(run_dir: str | Path, flag: str = "--run-dir") -> Iterator[None]:
    """Hold ``run_dir``'s lock inside the block (see ``acquire``)."""
    acquire(run_dir, flag)
    try:
        yield
    finally:
        release(run_dir)
