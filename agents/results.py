"""Evaluation result records: file names, per-target statistics and the printed table."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from envs.spread import format_std, sample_std

EVAL_FILE = "eval.json"  # a run's final evaluation with the exact rollout
STREAMING_SUFFIX = "-streaming"  # eval-streaming.json, evals/step-N-streaming.json: the streaming rollout's
#: The rollouts an evaluation offers; "exact" is the default everywhere (see agents.rollout).
ROLLOUTS = ("exact", "streaming")
_LABELS = {"exact": "exact", "streaming": "streaming (approximate)"}


def rollout_label(rollout: str) -> str:
    """How tables and reports name a rollout: "exact" or "streaming (approximate)"."""
    return _LABELS[rollout]


def evaluation_path(path: Path, rollout: str) -> Path:
    """Where an evaluation with ``rollout`` goes, ``path`` naming the exact one: eval.json ->
    eval-streaming.json, evals/step-N.json -> evals/step-N-streaming.json."""
    return path if rollout == "exact" else path.with_name(f"{path.stem}{STREAMING_SUFFIX}{path.suffix}")


def target_record(target: float, returns: np.ndarray, lengths: np.ndarray, normalized: np.ndarray,
                  wall_time_s: float, env_steps: int) -> dict[str, Any]:
    """Statistics of one target's episodes (stds are sample stds over the episodes, ``envs.spread``)."""
    return {
        "target": float(target),
        "episodes": len(returns),
        "return_mean": float(np.mean(returns)),
        "return_std": sample_std(returns),
        "return_min": float(np.min(returns)),
        "return_max": float(np.max(returns)),
        "normalized_mean": float(np.mean(normalized)),
        "normalized_std": sample_std(normalized),
        "length_mean": float(np.mean(lengths)),
        "wall_time_s": float(wall_time_s),
        "env_steps_per_s": float(env_steps / wall_time_s) if wall_time_s > 0 else float("nan"),
        "returns": [float(r) for r in returns],
        "lengths": [int(x) for x in lengths],
    }


def software_versions() -> dict[str, str]:
    """Versions of the packages that produced a result."""
    import gymnasium
    import torch

    try:
        ours = importlib.metadata.version("dt-attn")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        ours = "not installed"
    return {
        "python": platform.python_version(),
        "cpu": cpu_description(),
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "dt_attn": ours,
    }


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, its logical CPU count and its bfloat16 matrix units, e.g.
    'Intel(R) Xeon(R) Processor, 2 CPUs, avx512_bf16 amx_bf16' (timings mean little without it)."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux: the platform module's name is all there is
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    units = [f for f in ("avx512_bf16", "amx_bf16") if f in fields.get("flags", "").split()]
    return ", ".join([name, f"{os.cpu_count()} CPUs", *([" ".join(units)] if units else [])])


def now_iso() -> str:
    """Current UTC time, ISO 8601."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _precision_note(result: dict[str, Any]) -> str:
    """' in bf16' for a policy trained in bf16; nothing for float32 (the default, and every run from
    before the field)."""
    precision = result.get("train_precision", "fp32")
    return "" if precision == "fp32" else f" in {precision}"


def _num(value: Any) -> float:
    """A float, NaN for a missing value (a std of one episode is written as null)."""
    return math.nan if value is None else float(value)


def format_eval_table(result: dict[str, Any]) -> str:
    """A human-readable table of an evaluation result (one row per target; ± the sample std over its
    episodes, "–" for a single episode)."""
    head = (
        f"{result['dataset_label']} | env {result['env_id']} | observe {result['observe']} | "
        f"attention {result['attention']} | K={result['context']} | train seed {result['train_seed']} | "
        f"{result['train_steps']} steps{_precision_note(result)} | eval seed {result['eval_seed']}\n"
        f"normalized with {result['score_reference']}"
    )
    cols = (f"{'target':>8} {'episodes':>8} {'return mean±std':>18} {'min':>9} {'max':>9} {'normalized':>14} "
            f"{'length':>7} {'steps/s':>8}")
    rows = [
        f"{r['target']:>8.0f} {r['episodes']:>8d} {r['return_mean']:>10.1f} ± "
        f"{format_std(_num(r['return_std'])):<6}{r['return_min']:>9.1f} {r['return_max']:>9.1f} "
        f"{r['normalized_mean']:>7.1f} ± {format_std(_num(r['normalized_std'])):<5}{r['length_mean']:>7.0f} "
        f"{r['env_steps_per_s']:>8.0f}"
        for r in result["results"]
    ]
    return "\n".join([head, cols, *rows, f"rollout: {result['method']}"])
