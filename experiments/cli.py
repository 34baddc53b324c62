"""The ``dt-attn`` console script: one subcommand per entry module, each declaring a ``COMMAND``."""

from __future__ import annotations

import argparse
import importlib
import sys

#: The modules whose ``COMMAND`` (experiments.common.Command) is a `dt-attn` subcommand, in help order.
COMMAND_MODULES = (
    "experiments.commands.train",
    "experiments.commands.eval",
    "experiments.commands.data",
    "experiments.commands.sweep",
    "experiments.reporting.report",
    "experiments.commands.attend",
    "experiments.commands.video",
    "experiments.benchmarks.attention",
    "experiments.benchmarks.training",
    "experiments.benchmarks.context",
    "experiments.benchmarks.rollout",
    "experiments.benchmarks.parity",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="dt-attn",
        description="Decision Transformers with swappable token mixers (softmax, cosFormer, Combiner, AFT, "
                    "N-gram, gMLP, R-Transformer).",
    )
    sub = parser.add_subparsers(metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).COMMAND.add_to(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return args.command(args)


if __name__ == "__main__":
    sys.exit(main())
