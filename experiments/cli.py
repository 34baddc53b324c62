"""The ``dt-attn`` console script: one subcommand per entry point module."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module in experiments/ that defines ``register(subparsers)``
SUBCOMMANDS = {
    "train": "experiments.train",
    "eval": "experiments.evaluate",
    "data": "experiments.data",
    "bench": "experiments.bench_attention",
    "sweep": "experiments.sweep_context",
    "report": "experiments.report",
    "parity": "experiments.parity",
    "attend": "experiments.attend",
    "video": "experiments.video",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="dt-attn",
        description="Decision Transformers with swappable attention (softmax, cosFormer, Combiner).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # subcommand not built yet
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
