"""Shared pieces of the command-line entry points: ``Command`` (one `dt-attn` subcommand) and ``run_cli``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agents.atomic import WriteError
from agents.runlock import RunLockedError
from experiments.config import add_config_arguments, config_from_args

# Errors that mean "the user asked for something wrong" (or the disk is full): printed as one line, not a
# traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, RunLockedError, WriteError)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it stops as cleanly as on Ctrl-C."""


def run_cli(fn: Callable[[], Any]) -> int:
    """Run ``fn``: an int it returns is the exit code, anything else (None, a benchmark's figures) means 0.
    Turn user errors into a one-line message and exit code 2, Ctrl-C and SIGTERM into a note that the last
    checkpoint is kept (exit codes 130 and 143), warnings into 'warning: ...' lines."""
    try:
        with sigterm_raises(), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code = fn()
            return code if isinstance(code, int) else 0
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted: the last checkpoint is kept; rerun with --resume to continue", file=sys.stderr)
        return interrupted_exit_code(exc)


def interrupted_exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's exit code of a process stopped by a signal: 143 (128 + 15) for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(exc, Terminated) else 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=file or sys.stderr)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated, a KeyboardInterrupt (``kill PID`` stops a run or a sweep
    as Ctrl-C does); a no-op outside the main thread, where no signal handler can be set."""
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


@dataclass(frozen=True)
class Command:
    """A `dt-attn` subcommand: its name and help line, its typed config (one flag per field, see
    experiments.config) and the function that runs a config. An entry module declares one as ``COMMAND``;
    experiments.cli adds it to `dt-attn`, and ``COMMAND.main()`` runs it alone (``python -m MODULE``)."""

    name: str
    help: str
    config: type
    run: Callable[[Any], Any]  # config -> exit code (None: 0), see run_cli
    doc: str | None = None  # the long description: the module's docstring
    aliases: tuple[str, ...] = ()

    def add_to(self, subparsers: Any) -> None:
        """Add this subcommand to the `dt-attn` parser's subparsers."""
        parser = subparsers.add_parser(self.name, aliases=list(self.aliases), help=self.help,
                                       description=self.doc,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
        self._arguments(parser)

    def _arguments(self, parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser, self.config)
        parser.set_defaults(command=self)

    def __call__(self, args: argparse.Namespace) -> int:
        """Build the config from parsed arguments and run it; user errors become one line (``run_cli``)."""
        return run_cli(lambda: self.run(config_from_args(self.config, args)))

    def main(self, argv: list[str] | None = None) -> int:
        """Parse ``argv`` (default: the command line) and run; returns the exit code."""
        parser = argparse.ArgumentParser(prog=f"dt-attn {self.name}", description=self.doc,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        self._arguments(parser)
        return self(parser.parse_args(argv))
