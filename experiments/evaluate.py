"""`dt-attn eval`: roll out a trained checkpoint (python -m experiments.evaluate)."""

from __future__ import annotations

import argparse
import sys

from agents.config import EvalConfig
from experiments.common import run_cli
from experiments.config import add_config_arguments, config_from_args


def _main(args: argparse.Namespace) -> int:
    def body() -> int:
        from agents.evaluation import evaluate

        cfg = config_from_args(EvalConfig, args)
        if not cfg.checkpoint:
            raise ValueError("--checkpoint RUN_DIR is required (a directory written by `dt-attn train`)")
        evaluate(cfg)
        return 0

    return run_cli(body)


def register(subparsers) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser("eval", help="evaluate a trained checkpoint", description=__doc__)
    add_config_arguments(p, EvalConfig)
    p.set_defaults(func=_main)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__)
    add_config_arguments(parser, EvalConfig)
    sys.exit(_main(parser.parse_args()))
