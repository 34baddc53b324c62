"""Progress bars that stay readable in a terminal and in a log file."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

# Redirected to a file, a bar that redraws every 0.1 s writes tens of thousands of lines in an hour of
# training; one line every 30 s still shows progress and rate in the log.
LOG_FILE_INTERVAL_S = 30.0


def progress_bar(**kwargs: Any) -> tqdm:
    """A tqdm bar (same arguments) that redraws at most every LOG_FILE_INTERVAL_S seconds when its
    stream (``file``, stderr by default) is not a terminal."""
    stream = kwargs.get("file") or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if not (callable(isatty) and isatty()):
        kwargs.setdefault("mininterval", LOG_FILE_INTERVAL_S)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(**kwargs)
