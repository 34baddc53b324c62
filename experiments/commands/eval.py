"""`dt-attn eval`: roll out a trained checkpoint (python -m experiments.commands.eval)."""

from __future__ import annotations

import sys

from agents.config import EvalConfig
from experiments.common import Command


def run(cfg: EvalConfig) -> int:
    """Evaluate the checkpoint ``cfg`` names and write its result file."""
    from agents.evaluation import evaluate

    if not cfg.checkpoint:
        raise ValueError("--checkpoint RUN_DIR is required (a directory written by `dt-attn train`)")
    evaluate(cfg)
    return 0


COMMAND = Command("eval", "evaluate a trained checkpoint", EvalConfig, run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
