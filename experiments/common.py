"""Shared pieces of the command-line entry points."""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from agents.atomic import WriteError
from agents.runlock import RunLockedError

# Errors that mean "the user asked for something wrong" (or the disk is full): printed as one line, not a
# traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, RunLockedError, WriteError)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it stops as cleanly as on Ctrl-C."""


def run_cli(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; turn user errors into a one-line message and exit code 2, Ctrl-C and SIGTERM into a
    note that the last checkpoint is kept (exit codes 130 and 143), warnings into 'warning: ...' lines."""
    try:
        with _sigterm_raises(), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(fn() or 0)
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted: the last checkpoint is kept; rerun with --resume to continue", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=file or sys.stderr)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated (``kill PID`` stops a run as Ctrl-C does)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
