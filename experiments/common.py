"""Shared pieces of the command-line entry points."""

from __future__ import annotations

import sys
from collections.abc import Callable

# Errors that mean "the user asked for something wrong": printed as one line, not a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError)


def run_cli(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; turn user errors into a one-line message and exit code 2."""
    try:
        return int(fn() or 0)
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; rerun with --resume to continue", file=sys.stderr)
        return 130
