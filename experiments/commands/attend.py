"""`dt-attn attend`: where does the policy look? Attention mass per lag, per layer, during rollouts.

Each run's policy is rolled out exactly (the model re-run on the last K steps every step, batched over
environments). At every step, the q and k each block's attention computed are captured and turned into
that mechanism's attention weights (dt_attn.attention_weights: softmax's probabilities, cosFormer's
normalized re-weighted products, Combiner's implied rows); the row of the newest state token s_t is
summed by lag, the steps back from the newest step: R_t and s_t are lag 0, a_{t-1}, R_{t-1}, s_{t-1}
lag 1, and so on up to K - 1. Per layer and head, the mass per lag is averaged over the steps of live
episodes; with `--windows full` (default) only steps whose window holds K real steps count, with
`--windows all` every step does (early steps put no mass on lags they cannot see, so each averaged
row still sums to 1). Writes RUN/attend.json and RUN/attend.csv per run, and a figure of mass against
lag per layer, one line per run (attend.png, with attend.csv of every run, in --out).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.atomic import atomic_write, check_writable, write_json, write_rows_csv
from agents.checkpoint import load_checkpoint, resolve_checkpoint
from agents.config import TOKENS_PER_STEP
from agents.evaluation import RolloutSettings, check_observation_dim, load_policy, rollout_settings
from agents.fieldtypes import check_field_types, check_rules
from agents.model import DecisionTransformer
from agents.results import now_iso, software_versions
from agents.rollout import SteppedRollout
from dt_attn import attention_weights, capabilities
from envs import make_vector_env
from experiments.common import Command

SCHEMA = "dt-attn/attend/1"
ATTEND_FILE = "attend.json"
CSV_FILE = "attend.csv"
FIGURE_FILE = "attend.png"
WINDOWS = ("full", "all")
CSV_COLUMNS = ["run", "attention", "context", "layer", "head", "lag", "mass"]
LAG_DEFINITION = ("lag L: steps back from the newest step; R_t and s_t are lag 0, "
                  "a_{t-L}, R_{t-L}, s_{t-L} are lag L")


class QKCapture:
    """Forward hooks keeping the q, k that each block's attention module was last called with."""

    def __init__(self, model: DecisionTransformer) -> None:
        self.blocks = list(model.transformer.blocks)
        self.qk: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.blocks)
        self._handles: list[Any] = []

    def _keep(self, layer: int, args: tuple, kwargs: dict) -> None:
        # Attention.forward(q, k, v, pad_mask=None), called positionally or by name
        self.qk[layer] = (args[0] if args else kwargs["q"], args[1] if len(args) > 1 else kwargs["k"])

    def __enter__(self):  # -> QKCapture
        self._handles = [block.attn.register_forward_hook(
            lambda module, args, kwargs, output, i=i: self._keep(i, args, kwargs), with_kwargs=True)
            for i, block in enumerate(self.blocks)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def check_has_weights(attention: str) -> None:
    """A ValueError unless ``attention`` attends over q, k, v with one (tokens x tokens) weights matrix."""
    caps = capabilities(attention)
    if caps.kind != "qkv" or caps.elementwise:
        why = "mixes hidden states" if caps.kind != "qkv" else "weighs every channel on its own"
        raise ValueError(f"{attention} {why}: it has no attention weights per token for `dt-attn attend` "
                         "to read")


def lag_mass(weights: torch.Tensor, window: int, context: int) -> torch.Tensor:
    """Attention weights (B, H, T, T) of a K-step segment whose ``window`` real steps come first (the model
    moves padding to the end) -> (B, H, K): the mass the newest state token puts on each lag."""
    p = TOKENS_PER_STEP * window - 2  # s_t: the state token of the last real step
    row = F.pad(weights[:, :, p, : p + 1], (0, 1))  # a zero in a_t's slot: lag 0 is R_t and s_t
    # oldest step first -> lag order
    per_step = row.reshape(*row.shape[:2], window, TOKENS_PER_STEP).sum(-1).flip(-1)
    return F.pad(per_step, (0, context - window))


def attention_by_lag(
    model: DecisionTransformer,
    settings: RolloutSettings,
    *,
    target: float,
    episodes: int = 4,
    envs: int = 4,
    max_steps: int | None = None,
    seed: int = 1000,
    windows: str = "full",
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Mass per lag of the newest state token's attention, per layer and head, averaged over the steps of
    ``episodes`` exact rollouts conditioned on ``target``; also the rollouts' returns and lengths."""
    if windows not in WINDOWS:
        raise ValueError(f"windows must be one of {', '.join(WINDOWS)}, got {windows!r}")
    if episodes < 1 or envs < 1:
        raise ValueError(f"episodes and envs must be >= 1 (got episodes={episodes}, envs={envs})")
    cfg, net = model.cfg, model.cfg.transformer
    check_has_weights(net.attention)
    K, max_steps = cfg.context, max_steps or settings.max_episode_steps
    options = [block.attn.options() for block in model.transformer.blocks]
    total = torch.zeros(net.n_layers, net.n_heads, K, dtype=torch.float64)
    seen = np.zeros(K, dtype=int)  # readouts whose window reached back to each lag
    returns, lengths = [], []
    for first in range(0, episodes, envs):
        n = min(envs, episodes - first)
        venv = make_vector_env(settings.env_id, n, seed + first, observe=settings.observe)
        try:
            check_observation_dim(model, venv, settings.env_id, settings.observe)
            rollout = SteppedRollout(model, venv, target=target, state_mean=settings.state_mean,
                                     state_std=settings.state_std, rtg_scale=settings.rtg_scale,
                                     seed=seed + first, max_steps=max_steps, device=device)
            with QKCapture(model) as capture, torch.inference_mode():
                for step in rollout:
                    if windows == "full" and step.window < K:
                        continue
                    live = torch.as_tensor(step.live)
                    for layer, ((q, k), opts) in enumerate(zip(capture.qk, options)):
                        keep = live.to(q.device)
                        w = attention_weights(net.attention, q[keep], k[keep], None, **opts)
                        total[layer] += lag_mass(w, step.window, K).sum(0).double().cpu()
                    seen[: step.window] += int(live.sum())
        finally:
            venv.close()
        returns.extend(rollout.returns.tolist())
        lengths.extend(rollout.lengths.tolist())
    readouts = int(seen[0])
    if readouts == 0:
        raise ValueError(
            f"no step had a full {K}-step window (every episode ended before step {K}, or --max-steps "
            f"{max_steps} < K): raise --max-steps or use --windows all"
        )
    mass = total / readouts
    return {
        "target": float(target), "episodes": episodes, "envs": envs, "max_steps": max_steps, "seed": seed,
        "windows": windows, "readouts": readouts, "readouts_per_lag": seen.tolist(),
        "returns": returns, "lengths": lengths,
        "mass": mass.mean(1).tolist(), "mass_per_head": mass.tolist(),
        "mean_lag": (mass.mean(1) * torch.arange(K, dtype=torch.float64)).sum(-1).tolist(),
    }


def attend_run(
    checkpoint: str | Path, *, target: float | None = None, episodes: int = 4, envs: int = 4,
    max_steps: int | None = None, seed: int = 1000, windows: str = "full",
) -> dict[str, Any]:
    """Load a run's checkpoint, read its attention by lag (``attention_by_lag``), write RUN/attend.json and
    RUN/attend.csv; return the record."""
    path = resolve_checkpoint(checkpoint)
    payload = load_checkpoint(path)
    model = load_policy(payload)
    settings = rollout_settings(payload)
    readout = attention_by_lag(model, settings, target=settings.targets[0] if target is None else target,
                               episodes=episodes, envs=envs, max_steps=max_steps, seed=seed, windows=windows)
    net, data = model.cfg.transformer, payload["data"]
    record = {
        "schema": SCHEMA, "checkpoint": str(path), "dataset": data["name"], "dataset_label": data["label"],
        "env_id": settings.env_id, "observe": settings.observe, "attention": net.attention,
        "attention_options": net.attention_options, "context": model.cfg.context, "n_layers": net.n_layers,
        "n_heads": net.n_heads, "train_steps": int(payload["step"]),
        "query": "s_t, the newest state token", "lags": LAG_DEFINITION,
        **readout, "created": now_iso(), "versions": software_versions(),
    }
    write_json(path.parent / ATTEND_FILE, record)
    write_rows_csv(path.parent / CSV_FILE, csv_rows(record, path.parent.name), CSV_COLUMNS)
    return record


def csv_rows(record: dict[str, Any], run: str) -> list[dict[str, Any]]:
    """One row per (layer, head, lag); head "mean" is the average over heads."""
    rows = []
    for layer, (mean, heads) in enumerate(zip(record["mass"], record["mass_per_head"])):
        for head, masses in [("mean", mean), *enumerate(heads)]:
            rows += [{"run": run, "attention": record["attention"], "context": record["context"],
                      "layer": layer, "head": head, "lag": lag, "mass": m} for lag, m in enumerate(masses)]
    return rows


def run_labels(records: list[dict[str, Any]]) -> list[str]:
    """'attention K=K' per record; the run directory is added where two records would share a label."""
    base = [f"{r['attention']} K={r['context']}" for r in records]
    return [f"{b} ({Path(r['checkpoint']).parent.name})" if base.count(b) > 1 else b
            for b, r in zip(base, records)]


def plot_attend(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Mass vs lag, a panel per layer, a line per run (head average)."""
    from matplotlib.figure import Figure  # the object API renders with Agg and touches no global backend

    layers = max(r["n_layers"] for r in records)
    cols = min(layers, 3)
    rows = -(-layers // cols)
    fig = Figure(figsize=(5.0 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    longest = max(r["context"] for r in records)
    for record, label in zip(records, run_labels(records)):
        for layer, mass in enumerate(record["mass"]):
            axes[layer].plot(range(len(mass)), mass, marker="o" if len(mass) <= 30 else None, markersize=3,
                             label=label)
    for layer, ax in enumerate(axes):
        if layer >= layers:
            ax.set_visible(False)
            continue
        if longest > 64:  # long contexts: linear near the newest steps, logarithmic far back
            ax.set_xscale("symlog", linthresh=10)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel("lag (steps back from s_t)")
        ax.set_ylabel("attention mass")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("where the newest state token looks (mean over heads and rollout steps)", fontsize=10)
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    return path


@dataclass
class AttendConfig:
    """Which policies to read, over which rollouts."""

    checkpoint: list[str] = field(default_factory=list, metadata={
        "metavar": "RUN", "help": "run directories (or checkpoint .pt files) written by `dt-attn "
                                  "train` (required)"})
    episodes: int = field(default=4, metadata={"help": "episodes per run"})
    envs: int = field(default=4, metadata={"help": "parallel environments"})
    max_steps: int | None = field(default=None, metadata={
        "help": "cap on steps per episode (default: the environment's limit)"})
    target: float | None = field(default=None, metadata={
        "help": "target return (default: each run's first evaluation target)"})
    seed: int = field(default=1000, metadata={"help": "seed of the first environment (as eval)"})
    windows: str = field(default="full", metadata={
        "help": "full: average over steps whose window holds K real steps; all: every step"})
    out: str | None = field(default=None, metadata={
        "metavar": "DIR", "help": f"where {FIGURE_FILE} and {CSV_FILE} of every run go (default: the run "
                                  "directory, when there is one run)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)"})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_rules(self, "attend config", {
            "episodes": (self.episodes >= 1, ">= 1"),
            "envs": (self.envs >= 1, ">= 1"),
            "max_steps": (self.max_steps is None or self.max_steps >= 1, ">= 1"),
            "windows": (self.windows in WINDOWS, "one of " + ", ".join(WINDOWS)),
            "threads": (self.threads >= 0, ">= 0 (0 = torch's default)"),
        })


def run(cfg: AttendConfig) -> int:
    """Read every run's attention by lag; write each run's files and the comparison figure and CSV."""
    if not cfg.checkpoint:
        raise ValueError("--checkpoint RUN [RUN ...] is required")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runs = [resolve_checkpoint(c) for c in cfg.checkpoint]
    if cfg.out is None and len(runs) > 1:
        raise ValueError("several runs: pass --out DIR for the comparison figure and CSV")
    out = Path(cfg.out) if cfg.out is not None else runs[0].parent
    check_writable(out, "--out", folder=True)  # before any rollout, as every run folder's own file
    for path in runs:
        check_writable(path.parent / ATTEND_FILE, "--checkpoint")
    records = []
    for path in runs:
        record = attend_run(path, target=cfg.target, episodes=cfg.episodes, envs=cfg.envs,
                            max_steps=cfg.max_steps, seed=cfg.seed, windows=cfg.windows)
        records.append(record)
        print(f"{path.parent}: {record['attention']} K={record['context']}, {record['readouts']} readouts, "
              f"mean lag per layer " + ", ".join(f"{x:.2f}" for x in record["mean_lag"])
              + f" (mean return {np.mean(record['returns']):.1f}); wrote {path.parent / ATTEND_FILE}",
              flush=True)
    rows = [row for record, path in zip(records, runs) for row in csv_rows(record, path.parent.name)]
    write_rows_csv(out / CSV_FILE, rows, CSV_COLUMNS)
    print(f"figure written to {plot_attend(records, out / FIGURE_FILE)}, table to {out / CSV_FILE}")
    return 0


COMMAND = Command("attend", "attention mass per lag of trained policies during rollouts", AttendConfig, run,
                  __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
