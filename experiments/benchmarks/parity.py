"""`dt-attn parity`: this project's Decision Transformer against HuggingFace's, trained and read alike.

Each cell (dataset x model x seed) is trained by the same ``Trainer`` (the same segment stream from the
seeded sampler, data, state normalization, AdamW schedule, clipping and budget) and rolled out by the
same exact evaluator (the last K steps re-run every step, batched over the environments, from the same
environment seeds); only the network differs. The models:

* ``dt-attn``: this project's DT with softmax attention and the peers' initialization;
* ``huggingface``: ``transformers.DecisionTransformerModel`` (GPT-2 blocks) of the same size (extra
  ``[bench]``), with its own initialization;
* ``dt-attn-torch-init``: this project's DT with PyTorch's layer defaults (an N(0, 1) timestep
  embedding), the ablation that shows what the initialization is worth.

Both sides drop out the residual branches (``dropout``); HuggingFace's GPT-2 also drops out the attention
probabilities and the embeddings at that rate. ``--attention-dropout`` and ``--embed-dropout`` set those two
on this project's side (0 by default, as its training defaults), for the ablation that asks which of them
closes a gap; a model trained with either is its own cell, labelled e.g. ``dt-attn-adrop0.1-edrop0.1``
(its own run folders), while the ``huggingface`` cells are shared by every ablation in one output folder.

The table gives, per dataset, model and target, the mean, sample standard deviation and a 95% percentile
bootstrap interval over seeds of each seed's mean normalized score, and for every model but
``huggingface`` the difference to ``huggingface`` with its own bootstrap interval. Finished cells are
skipped and interrupted ones resumed, so a killed run continues where it stopped.

python -m experiments.benchmarks.parity --seeds 0 1 2 3 4 --out-dir runs/parity
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.atomic import write_json, write_text
from agents.checkpoint import CHECKPOINT_NAME
from agents.config import TrainConfig
from agents.data import PreparedData
from agents.fieldtypes import check_field_types, check_rules
from agents.model import DTConfig
from agents.progress import progress_bar
from agents.results import cpu_description, now_iso, software_versions
from agents.rollout import rerun_plan, run_episodes
from agents.trainer import Trainer, build_model
from dt_attn import TransformerConfig
from envs import make_vector_env, normalized_score
from envs.errors import optional_import
from envs.spread import format_std, sample_std
from experiments.common import Command
from experiments.config import format_config
from experiments.reporting.stats import bootstrap_diff_ci, bootstrap_mean_ci

MODELS = ("dt-attn", "huggingface", "dt-attn-torch-init")
REFERENCE_MODEL = "huggingface"
#: The small configuration both models train with (DT paper's architecture at embed 64, 2 layers).
SMALL = {"attention": "softmax", "context": 20, "embed_dim": 64, "n_layers": 2, "n_heads": 1, "dropout": 0.1,
         "activation": "relu", "batch_size": 32, "lr": 6e-4, "weight_decay": 1e-4, "warmup_steps": 150,
         "grad_clip": 0.25, "rtg_scale": 1000.0}
#: --quick: a tiny version of everything, for tests and a first look (seconds, not a measurement).
QUICK = {"embed_dim": 16, "n_layers": 1, "batch_size": 8, "warmup_steps": 2}


@dataclass
class ParityConfig:
    """Every value of a parity run (printed at the start, saved beside the table)."""

    datasets: list[str] = field(default_factory=lambda: ["hopper-medium-replay-standin",
                                                         "halfcheetah-medium-replay-standin"],
                                metadata={"help": "dataset specs"})
    models: list[str] = field(default_factory=lambda: list(MODELS),
                              metadata={"help": "models to compare: " + ", ".join(MODELS)})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4], metadata={"help": "training seeds"})
    steps: int = field(default=3000, metadata={"help": "gradient steps per cell"})
    episodes: int = field(default=10, metadata={
        "help": "evaluation episodes per target (one environment each)"})
    eval_seed: int = field(default=1000, metadata={"help": "seed of the first evaluation environment"})
    max_steps: int | None = field(default=None, metadata={
        "help": "cap on steps per episode (default: the env's)"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    bootstrap: int = field(default=10_000, metadata={"help": "bootstrap resamples per interval"})
    out_dir: str = field(default="runs/parity", metadata={"help": "folder of the cells' runs and the table"})
    attention_dropout: float = field(default=0.0, metadata={
        "help": "attention-probability dropout of this project's models (dt-attn, dt-attn-torch-init); "
                "huggingface's is the residual dropout's"})
    embed_dropout: float = field(default=0.0, metadata={
        "help": "embedding dropout of this project's models; huggingface's is the residual dropout's"})
    quick: bool = field(default=False, metadata={
        "help": "tiny models, at most 20 steps, 2 episodes of 20 steps (a smoke test, not a result)"})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
        if not self.seeds or not self.datasets or not self.models:
            raise ValueError("datasets, models and seeds each need at least one value")
        check_field_types(self)
        check_rules(self, "parity config", {
            **{name: (getattr(self, name) >= 1, ">= 1") for name in ("steps", "episodes", "bootstrap")},
            "max_steps": (self.max_steps is None or self.max_steps >= 1, ">= 1"),
            "threads": (self.threads >= 0, ">= 0 (0 = torch's default)"),
            **{name: (0.0 <= getattr(self, name) < 1.0, "in [0, 1)")
               for name in ("attention_dropout", "embed_dropout")},
        })
        if self.quick:
            self.steps, self.episodes = min(self.steps, 20), min(self.episodes, 2)
            self.max_steps = min(self.max_steps or 20, 20)


class HuggingFaceDT(nn.Module):
    """HuggingFace's ``DecisionTransformerModel`` behind this project's forward signature, so that the
    same trainer and evaluator drive it. Left padding becomes HF's ``attention_mask``, as the peers
    feed it; ``cfg`` describes the shape for the trainer and the evaluator."""

    def __init__(self, cfg: TrainConfig, data: PreparedData) -> None:
        super().__init__()
        optional_import("transformers", "bench", "the huggingface model")
        from transformers import DecisionTransformerConfig, DecisionTransformerModel
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()  # GPT-2's text-token ids do not apply to a DT; HF warns about them
        self.cfg = DTConfig(state_dim=data.state_dim, act_dim=data.act_dim, context=cfg.context,
                            max_ep_len=data.max_ep_len, init="huggingface", init_std=cfg.init_std,
                            transformer=TransformerConfig(embed_dim=cfg.embed_dim, n_layers=cfg.n_layers,
                                                          n_heads=cfg.n_heads, dropout=cfg.dropout,
                                                          activation=cfg.activation,
                                                          attention="huggingface-gpt2"))
        self.hf = DecisionTransformerModel(DecisionTransformerConfig(
            state_dim=data.state_dim, act_dim=data.act_dim, hidden_size=cfg.embed_dim,
            max_ep_len=data.max_ep_len, action_tanh=True, n_layer=cfg.n_layers, n_head=cfg.n_heads,
            n_inner=4 * cfg.embed_dim, activation_function=cfg.activation, n_positions=3 * cfg.context,
            resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
            initializer_range=cfg.init_std))

    def forward(self, states: torch.Tensor, actions: torch.Tensor, rtg: torch.Tensor, timesteps: torch.Tensor,
                pad_mask: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Predicted actions (B,K,A), or (B,1,A) for the last step with ``last_only``."""
        mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device) if pad_mask is None \
            else (~pad_mask).long()
        out = self.hf(states=states, actions=actions, rewards=None, returns_to_go=rtg,
                      timesteps=timesteps.clamp(0, self.cfg.max_ep_len - 1), attention_mask=mask,
                      return_dict=True)
        return out.action_preds[:, -1:] if last_only else out.action_preds


def dropout_suffix(pcfg: ParityConfig) -> str:
    """-adrop<p> and -edrop<p> for the attention and embedding dropout of this project's models, where set."""
    return "".join(f"-{tag}{p:g}" for tag, p in (("adrop", pcfg.attention_dropout),
                                                 ("edrop", pcfg.embed_dropout)) if p > 0)


def model_label(pcfg: ParityConfig, model: str) -> str:
    """How a model's cells are named in folders and the table: the model, plus ``dropout_suffix`` for this
    project's models."""
    return model if model == REFERENCE_MODEL else model + dropout_suffix(pcfg)


def cell_config(pcfg: ParityConfig, dataset: str, model: str, seed: int) -> TrainConfig:
    """The training run of one cell: the small configuration, the model's initialization and (this
    project's models) dropouts, no evaluation by the trainer (the cell evaluates in process, the same way
    for every model)."""
    values = {**SMALL, **(QUICK if pcfg.quick else {})}
    if model != REFERENCE_MODEL:
        values.update(attention_dropout=pcfg.attention_dropout, embed_dropout=pcfg.embed_dropout)
    return TrainConfig(dataset=dataset, seed=seed, steps=pcfg.steps, threads=pcfg.threads, eval_episodes=0,
                       checkpoint_every=max(1, pcfg.steps // 3),
                       init="torch-default" if model == "dt-attn-torch-init"
                       else "normal", run_dir=str(cell_dir(pcfg, dataset, model, seed)), **values)


def cell_dir(pcfg: ParityConfig, dataset: str, model: str, seed: int) -> Path:
    """runs/<dataset>/<model label>/s<seed> under the output folder."""
    return (Path(pcfg.out_dir) / "runs" / Path(dataset.replace("/", "_")).stem / model_label(pcfg, model)
            / f"s{seed}")


def run_cell(pcfg: ParityConfig, dataset: str, model: str, seed: int) -> dict[str, Any]:
    """Train (or resume) one cell, evaluate it exactly, write and return its result.json."""
    cfg = cell_config(pcfg, dataset, model, seed)
    run_dir = Path(cfg.run_dir)
    cfg.resume = (run_dir / CHECKPOINT_NAME).exists()
    trainer = Trainer(cfg, progress=False, build=HuggingFaceDT if model == REFERENCE_MODEL else build_model)
    summary = trainer.train()
    data = trainer.data
    policy = trainer.model.eval()
    max_steps = pcfg.max_steps or data.max_ep_len
    plan = rerun_plan(policy)  # the plain re-run, the same code path for both architectures
    targets = []
    for target in data.default_targets:
        envs = make_vector_env(data.env_id, pcfg.episodes, pcfg.eval_seed, observe=data.observe)
        try:
            res = run_episodes(policy, envs, target=target, state_mean=data.state_mean,
                               state_std=data.state_std, rtg_scale=cfg.rtg_scale, seed=pcfg.eval_seed,
                               max_steps=max_steps, plan=plan)
        finally:
            envs.close()
        scores, _ = normalized_score(data.env_name, res.returns,
                                     ref=getattr(data.dataset, "ref_scores", None))
        targets.append({"target": target, "returns": res.returns.tolist(), "normalized": scores.tolist(),
                        "normalized_mean": float(scores.mean()), "rollout": res.method})
    result = {"dataset": dataset, "dataset_label": data.dataset.label, "env_id": data.env_id, "model": model,
              "label": model_label(pcfg, model),
              "seed": seed, "steps": summary["steps"], "train_time_s": summary["train_time_s"],
              "parameters": summary["parameters"], "eval_seed": pcfg.eval_seed, "episodes": pcfg.episodes,
              "max_steps": max_steps, "targets": targets, "train_config": dataclasses.asdict(cfg),
              "created": now_iso()}
    write_json(run_dir / "result.json", result)
    return result


def summarize(results: list[dict[str, Any]], resamples: int) -> list[dict[str, Any]]:
    """One row per dataset, model (its label: with its dropouts) and target: seeds, mean, sample std (NaN
    for one seed, ``envs.spread``), bootstrap interval, difference to HF."""
    by_cell: dict[tuple, list[float]] = {}
    meta: dict[tuple, dict[str, Any]] = {}
    for r in results:
        for t in r["targets"]:
            key = (r["dataset"], r.get("label", r["model"]), t["target"])
            by_cell.setdefault(key, []).append(t["normalized_mean"])
            meta[key] = {"dataset_label": r["dataset_label"], "env_id": r["env_id"],
                         "episodes": r["episodes"], "steps": r["steps"], "parameters": r["parameters"],
                         "base": r["model"]}
    rows = []
    order = sorted(by_cell.items(), key=lambda kv: (kv[0][0], kv[0][2], MODELS.index(meta[kv[0]]["base"]),
                                                    kv[0][1]))
    for (dataset, model, target), scores in order:
        values = np.asarray(scores)
        lo, hi = bootstrap_mean_ci(values, resamples)
        info = {k: v for k, v in meta[(dataset, model, target)].items() if k != "base"}
        row = {"dataset": dataset, "model": model, "target": target, "seeds": len(values), **info,
               "mean": float(values.mean()), "std": sample_std(values), "ci_low": lo, "ci_high": hi,
               "diff_to_hf": None, "diff_ci_low": None, "diff_ci_high": None}
        ref = by_cell.get((dataset, REFERENCE_MODEL, target))
        if model != REFERENCE_MODEL and ref:
            row["diff_to_hf"] = float(values.mean() - np.mean(ref))
            row["diff_ci_low"], row["diff_ci_high"] = bootstrap_diff_ci(values, np.asarray(ref), resamples)
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], pcfg: ParityConfig) -> str:
    """Markdown table of ``summarize``'s rows, headed by what produced them."""
    lines = [f"Model parity: {pcfg.steps} training steps, {len(pcfg.seeds)} seeds "
             f"({', '.join(map(str, pcfg.seeds))}), {pcfg.episodes} episodes per target and seed (env seeds "
             f"{pcfg.eval_seed}-{pcfg.eval_seed + pcfg.episodes - 1}), exact rollout, D4RL-normalized "
             "scores, mean ± sample std (ddof = 1) over seeds"
             + (" (quick mode: tiny models, not a result)" if pcfg.quick else ""), "",
             ("| dataset | env | model | target | seeds | normalized mean ± std | 95% CI "
              "| diff to huggingface [95% CI] |"),
             "|---|---|---|---:|---:|---|---|---|"]
    for r in rows:
        diff = "" if r["diff_to_hf"] is None else \
            f"{r['diff_to_hf']:+.1f} [{r['diff_ci_low']:+.1f}, {r['diff_ci_high']:+.1f}]"
        lines.append(f"| {r['dataset_label']} | {r['env_id']} | {r['model']} | {r['target']:g} | "
                     f"{r['seeds']} | {r['mean']:.1f} ± {format_std(r['std'])} | [{r['ci_low']:.1f}, "
                     f"{r['ci_high']:.1f}] | {diff} |")
    return "\n".join(lines)


def run_parity(pcfg: ParityConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Run (or finish) every cell, then write parity.json and parity.md; returns the table's rows."""
    if "huggingface" in pcfg.models:  # before any cell runs, not at the first HuggingFace cell
        optional_import("transformers", "bench", "the huggingface model")
    """Run (or finish) every cell, then write parity.json and parity.md (parity-adrop0.1.md and kin for a
    dropout ablation); returns the table's rows."""
    cells = [(d, m, s) for s in pcfg.seeds for d in pcfg.datasets for m in pcfg.models]  # seeds outermost:
    # a stopped run has every dataset and model at its first seeds
    results = []
    bar = progress_bar(total=len(cells), desc="parity", unit="cell", disable=not progress)
    for dataset, model, seed in cells:
        done = cell_dir(pcfg, dataset, model, seed) / "result.json"
        results.append(json.loads(done.read_text()) if done.exists()
                       else run_cell(pcfg, dataset, model, seed))
        bar.update()
    bar.close()
    rows = summarize(results, pcfg.bootstrap)
    out = Path(pcfg.out_dir)
    name = f"parity{dropout_suffix(pcfg)}"  # each dropout ablation keeps its own table beside the others
    write_json(out / f"{name}.json", {"config": dataclasses.asdict(pcfg), "rows": rows, "created": now_iso(),
                                      "cpu": cpu_description(), "versions": software_versions()})
    table = format_table(rows, pcfg)
    write_text(out / f"{name}.md", table + "\n")
    print(table)
    print(f"table written to {out / name}.md")
    return rows


def run(pcfg: ParityConfig) -> None:
    """Print the config, then ``run_parity``."""
    print(f"config:\n{format_config(pcfg)}")
    run_parity(pcfg)


COMMAND = Command("parity", "this DT against HuggingFace's, same trainer and exact rollout", ParityConfig,
                  run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
