"""Worker processes that die with their parent: a killed sweep (even ``kill -9``) leaves no cells training."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 1.0


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit when ``parent_pid`` (its parent) dies: at once through Linux's parent-death
    signal, within POLL_S seconds elsewhere through a thread that watches the parent id. For use as a
    process pool's ``initializer``, with the pool owner's pid."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher thread below still works
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:  # an orphan is adopted by another process
        time.sleep(POLL_S)
    os._exit(1)  # no cleanup: the run folder's lock dies with the process, temp files are removed on rerun
