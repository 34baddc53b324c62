"""`dt-attn train`: train a Decision Transformer, then evaluate it (python -m experiments.commands.train).

Under torchrun (`torchrun --nproc-per-node N --no-python dt-attn train ...`) the processes train one model
with DistributedDataParallel: --batch-size is the global batch, split across them; rank 0 alone writes the
run folder and evaluates.
"""

from __future__ import annotations

import sys

from agents import distributed
from agents.checkpoint import CHECKPOINT_NAME
from agents.config import TrainConfig, run_evaluation
from agents.results import EVAL_FILE, evaluation_path
from agents.runlock import run_lock
from agents.trainer import NonFiniteLossError, Trainer, log_eval_to_tensorboard, resolve_run_dir
from experiments.common import USER_ERRORS, Command
from experiments.config import format_config


def train_and_evaluate(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train per ``cfg`` and, when eval_episodes > 0, evaluate with ``cfg.rollout`` (eval.json, or
    eval-streaming.json); returns {'train': ..., 'run_dir': ..., 'eval': ...}. The run folder is locked
    throughout: a second run or evaluation writing there is refused."""
    if not distributed.current().is_main:  # under DDP rank 0 alone holds the folder (and writes in it)
        return _train_and_evaluate(cfg, progress)
    with run_lock(resolve_run_dir(cfg)):
        return _train_and_evaluate(cfg, progress)


def _train_and_evaluate(cfg: TrainConfig, progress: bool) -> dict:
    trainer = Trainer(cfg, progress=progress)
    main = trainer.dist.is_main
    if main:
        print(f"run directory: {trainer.run_dir}")
        print(f"config:\n{format_config(cfg)}")
        print(trainer.data.dataset.summary())
        from agents.model import count_parameters

        ddp = (f", {trainer.dist.world_size} processes (DDP), global batch {cfg.batch_size}"
               if trainer.dist.enabled else "")
        print(f"model: {count_parameters(trainer.model):,} parameters, attention "
              f"{trainer.model.cfg.transformer.attention} {trainer.model.cfg.transformer.attention_options}, "
              f"{trainer.device}{ddp}")
    summary = trainer.train()
    if main:
        print(f"trained {summary['steps']} steps in {summary['train_time_s']:.1f}s "
              f"({summary['steps_per_s']:.1f} steps/s, peak memory {summary['peak_memory_mb']:.0f} MB)")
    out = {"train": summary, "run_dir": str(trainer.run_dir)}
    if cfg.eval_episodes > 0 and main:  # evaluation runs once, on rank 0
        from agents.evaluation import evaluate

        output = evaluation_path(trainer.run_dir / EVAL_FILE, cfg.rollout)
        out["eval"] = evaluate(run_evaluation(cfg, trainer.run_dir / CHECKPOINT_NAME, output),
                               progress=progress)
        log_eval_to_tensorboard(trainer.run_dir, summary["steps"], out["eval"])
    return out


def run(cfg: TrainConfig) -> int:
    """Train and evaluate ``cfg`` (in every process of a torchrun launch); 3 when the loss diverged."""
    with distributed.process_group(cfg.device) as group:
        try:
            train_and_evaluate(cfg)
        except NonFiniteLossError as exc:
            if group.is_main:
                print(f"error: {exc}", file=sys.stderr)
            return 3
        except USER_ERRORS:
            if group.is_main:  # every rank raises the same error; rank 0 reports it
                raise
            return 2
        except RuntimeError as exc:
            if not (group.enabled and distributed.lost_peer(exc)):
                raise
            reason = str(exc).strip().splitlines()[0].split("] ", 1)[-1].split(". ", 1)[0]
            print(f"error: rank {group.rank} of {group.world_size}: another rank of this DDP run stopped "
                  f"({reason}); the last checkpoint is kept: relaunch with --resume", file=sys.stderr)
            return 2
    return 0


COMMAND = Command("train", "train a Decision Transformer and evaluate it", TrainConfig, run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
