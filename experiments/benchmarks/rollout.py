"""`dt-attn bench-rollout` (python -m experiments.benchmarks.rollout): what a rollout costs.

Wall and policy-only time of the exact rollout, the streaming (approximate) one, the exact one without reuse
(the model re-run on the padded K-step window, batched), and a one-environment-at-a-time re-run loop as
HuggingFace's, CORL's and d3rlpy's evaluations run it (each episode alone, the whole model on its last K
steps, zero left padding, every step), per attention and context K.

dt-attn bench-rollout [--contexts 20 200] [--episodes 10] [--max-steps 1000] [--quick]
Untrained weights (costs, not scores) in a HalfCheetah environment, whose episodes never end early.
Prints a table, writes rollout.json and rollout.md under --out-dir. Beside the times: the counted matrix work
of one policy step of every episode (experiments.benchmarks.roofline) and the fraction of the machine's fp32
matmul peak (measured once per run) it reaches in the steady step time. Every registered attention runs
unless --attentions names some. Times are wall-clock on this machine (named in the output); a machine shared
with other work makes them noisy.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agents.atomic import write_text
from agents.fieldtypes import check_field_types, check_rules
from agents.model import DecisionTransformer
from agents.results import rollout_label
from agents.rollout import RolloutPlan, RolloutResult, StepFn, plan_rollout, rerun_plan, run_episodes
from experiments.benchmarks.common import AgentBenchConfig, dt_config, machine, prepare
from experiments.benchmarks.roofline import count_flops, matmul_peak_gflops, peak_fraction
from experiments.common import Command
from experiments.config import config_to_dict, format_config

#: The rollouts timed, by the name the output gives them.
VARIANTS = ("exact", "streaming (approximate)", "exact without reuse", "one environment at a time")
AIM_EXACT_VS_STREAMING = 1.5  # exact wall time at most this multiple of streaming's (at K = 20)
AIM_ONE_ENV_VS_EXACT = 5.0  # the one-environment loop at least this many times slower than exact
# --quick: tiny sizes (of the attentions asked for); one thread, as a tiny model gains nothing from threads,
# and loses much on a busy machine.
QUICK = {"contexts": [3], "episodes": 2, "max_steps": 8, "one_env_episodes": 1, "embed_dim": 16,
         "n_layers": 2, "threads": 1}


@dataclass
class BenchRolloutConfig(AgentBenchConfig):
    """What to time and at which sizes."""

    contexts: list[int] = field(default_factory=lambda: [20, 200], metadata={"help": "context lengths K"})
    env: str = field(default="HalfCheetah-v4", metadata={
        "help": "gymnasium id (one whose episodes run to the limit)"})
    episodes: int = field(default=10, metadata={
        "help": "episodes, run in parallel environments by the batched rollouts"})
    max_steps: int = field(default=1000, metadata={"help": "steps per episode"})
    one_env_episodes: int | None = field(default=None, metadata={
        "help": "episodes the one-environment loop runs (default: all); its times are scaled to --episodes"})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={
        "help": "rollouts to time: " + ", ".join(repr(v) for v in VARIANTS)})
    out_dir: str = "bench_results/rollout"
    profile: bool = field(default=False, metadata={
        "help": "also write torch.profiler's table of 20 exact steps per attention and K"})
    quick: bool = field(default=False, metadata={
        "help": "tiny sizes for a smoke run (fields left at defaults)"})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_rules(self, "rollout benchmark config", {
            "variants": (bool(self.variants) and set(self.variants) <= set(VARIANTS),
                         "some of " + ", ".join(repr(v) for v in VARIANTS)),
            "episodes": (self.episodes >= 1, ">= 1"),
            "max_steps": (self.max_steps >= 1, ">= 1"),
            "one_env_episodes": (self.one_env_episodes is None or self.one_env_episodes >= 1, ">= 1"),
            "contexts": (all(k >= 1 for k in self.contexts), ">= 1"),
        })


def build_model(cfg: BenchRolloutConfig, attention: str, context: int, state_dim: int,
                act_dim: int) -> DecisionTransformer:
    """An untrained evaluation-mode Decision Transformer of the benchmark's size."""
    torch.manual_seed(cfg.seed)
    return DecisionTransformer(dt_config(cfg, attention, context, state_dim=state_dim, act_dim=act_dim,
                                         max_ep_len=max(1000, cfg.max_steps), dropout=0.0)).eval()


def _timed(plan: RolloutPlan, times: list[float]) -> RolloutPlan:
    """``plan`` whose steps append their own duration (seconds) to ``times``."""
    def start(n: int, device: torch.device | str) -> StepFn:
        inner = plan.start(n, device)

        def step(t: int, s: torch.Tensor, rtg: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            out = inner(t, s, rtg)
            times.append(time.perf_counter() - t0)
            return out

        return step

    return RolloutPlan(plan.rollout, plan.method, start)


def variant_plan(model: DecisionTransformer, cfg: BenchRolloutConfig, variant: str) -> RolloutPlan:
    """How ``variant`` rolls ``model`` out."""
    if variant == "exact":
        return plan_rollout(model, "exact", cfg.max_steps)
    if variant == "streaming (approximate)":
        return plan_rollout(model, "streaming", cfg.max_steps)
    return rerun_plan(model, last_only=variant == "exact without reuse")


def _episodes(model: DecisionTransformer, cfg: BenchRolloutConfig, plan: RolloutPlan, n: int,
              seed: int) -> tuple[RolloutResult, list[float]]:
    """n episodes at once from ``seed`` on, and the seconds of each policy step."""
    from envs import make_vector_env

    times: list[float] = []
    envs = make_vector_env(cfg.env, n, seed)
    try:
        res = run_episodes(model, envs, target=6000.0, state_mean=np.zeros(model.cfg.state_dim),
                           state_std=np.ones(model.cfg.state_dim), rtg_scale=1000.0, seed=seed,
                           max_steps=cfg.max_steps, plan=_timed(plan, times))
    finally:
        envs.close()
    return res, times


def time_variant(model: DecisionTransformer, cfg: BenchRolloutConfig, variant: str) -> dict:
    """One variant's figures: wall and policy seconds (the one-environment loop's scaled to ``cfg.episodes``),
    the steady policy milliseconds per step of all episodes once the window is full, and the returns."""
    plan = variant_plan(model, cfg, variant)
    alone = variant == "one environment at a time"
    runs = min(cfg.one_env_episodes or cfg.episodes, cfg.episodes) if alone else 1
    done = [_episodes(model, cfg, plan, 1 if alone else cfg.episodes, cfg.seed + i) for i in range(runs)]
    scale = cfg.episodes / runs if alone else 1.0
    full = [t for _, times in done for t in times[model.cfg.context:]]  # steps whose window is full
    steady = 1e3 * float(np.mean(full)) * (cfg.episodes if alone else 1) if full else math.nan
    wall = scale * sum(r.wall_time_s for r, _ in done)
    policy = scale * sum(r.policy_time_s for r, _ in done)
    returns = np.concatenate([r.returns for r, _ in done])
    return {"variant": variant, "rollout": plan.rollout, "method": plan.method, "episodes": cfg.episodes,
            "episodes_run": runs if alone else cfg.episodes, "envs_at_once": 1 if alone else cfg.episodes,
            "steps": int(max(r.lengths.max() for r, _ in done)), "wall_s": wall, "policy_s": policy,
            "env_s": wall - policy, "steady_policy_ms_per_step": steady,
            "return_mean": float(np.mean(returns)), "returns": [float(r) for r in returns]}


@torch.inference_mode()
def counted_mflop_per_step(model: DecisionTransformer, plan: RolloutPlan, envs: int,
                           after_steps: int) -> float:
    """Counted matrix MFLOP (experiments.benchmarks.roofline's count) of one step of ``envs`` episodes after
    ``after_steps`` steps, random inputs."""
    step = plan.start(envs, "cpu")
    g = torch.Generator().manual_seed(0)
    rtg = torch.ones(envs, 1)
    for t in range(after_steps):
        step(t, torch.randn(envs, model.cfg.state_dim, generator=g), rtg)
    s = torch.randn(envs, model.cfg.state_dim, generator=g)
    return count_flops(step, after_steps, s, rtg)[1] / 1e6


def profile_exact(model: DecisionTransformer, envs: int, steps: int, path: Path) -> str:
    """torch.profiler's table (operators by self CPU time) of the exact rollout's policy steps ``steps``
    steps after the window filled; written to ``path`` and returned."""
    from torch.profiler import ProfilerActivity, profile

    plan = plan_rollout(model, "exact", model.cfg.context + steps + 1)
    step = plan.start(envs, "cpu")
    g = torch.Generator().manual_seed(0)
    rtg = torch.ones(envs, 1)
    with torch.inference_mode():
        for t in range(model.cfg.context):
            step(t, torch.randn(envs, model.cfg.state_dim, generator=g), rtg)
        inputs = [torch.randn(envs, model.cfg.state_dim, generator=g) for _ in range(steps)]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i, s in enumerate(inputs):
                step(model.cfg.context + i, s, rtg)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    write_text(path, table + "\n")
    return table


def ratios(rows: list[dict]) -> list[dict]:
    """Per (attention, K): exact vs streaming and one-environment loop vs exact, in wall and policy time,
    and the steady per-step policy times, with the aims (exact <= 1.5x streaming's wall at K = 20; the
    one-environment loop >= 5x exact's wall)."""
    out = []
    for key in dict.fromkeys((r["attention"], r["context"]) for r in rows):
        by = {r["variant"]: r for r in rows if (r["attention"], r["context"]) == key}
        entry: dict = {"attention": key[0], "context": key[1]}
        pairs = {"exact_over_streaming": ("exact", "streaming (approximate)"),
                 "one_env_over_exact": ("one environment at a time", "exact"),
                 "no_reuse_over_exact": ("exact without reuse", "exact")}
        for name, (a, b) in pairs.items():
            if a in by and b in by:
                entry[f"{name}_wall"] = by[a]["wall_s"] / by[b]["wall_s"]
                entry[f"{name}_policy"] = by[a]["policy_s"] / by[b]["policy_s"]
                steady = "steady_policy_ms_per_step"
                entry[f"{name}_steady_policy"] = by[a][steady] / by[b][steady]
        if "exact_over_streaming_wall" in entry and key[1] == 20:
            entry["aim_exact_vs_streaming"] = entry["exact_over_streaming_wall"] <= AIM_EXACT_VS_STREAMING
        if "one_env_over_exact_wall" in entry:
            entry["aim_one_env_vs_exact"] = entry["one_env_over_exact_wall"] >= AIM_ONE_ENV_VS_EXACT
        out.append(entry)
    return out


def format_markdown(figures: dict) -> str:
    """The results as Markdown: the machine and sizes, a table of the variants, a table of the ratios."""
    cfg = figures["config"]
    one = cfg["one_env_episodes"] or cfg["episodes"]
    lines = ["# Rollout benchmark", "",
             (f"{figures['cpu']}; torch {figures['torch']}, {figures['torch_threads']} thread(s). "
              f"{cfg['env']}, {cfg['episodes']} episodes x {cfg['max_steps']} steps (the one-environment "
              f"loop ran {one} episode(s), its times scaled to {cfg['episodes']}); model "
              f"{cfg['embed_dim']} wide, {cfg['n_layers']} layers, {cfg['n_heads']} head(s), untrained. "
              "Wall = the whole rollout, policy = the model alone; steady = policy ms per step (all "
              "episodes) once the window is full."), "",
             ("| attention | K | rollout | wall s | policy s | env s | steady policy ms/step | MFLOP/step "
              "| of peak |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in figures["rows"]:
        lines.append(f"| {r['attention']} | {r['context']} | {r['variant']} | {r['wall_s']:.2f} | "
                     f"{r['policy_s']:.2f} | {r['env_s']:.2f} | {r['steady_policy_ms_per_step']:.2f} | "
                     f"{r['counted_mflop_per_step']:.1f} | {r['peak_fraction']:.2%} |")
    lines += ["", ("| attention | K | exact / streaming wall (aim <= 1.5 at K=20) | exact / streaming policy "
              "| one env / exact wall (aim >= 5) | one env / exact policy | no reuse / exact policy |"),
              "|---|---:|---:|---:|---:|---:|---:|"]

    def cell(entry: dict, name: str, aim: str | None = None) -> str:
        if name not in entry:
            return "–"
        mark = "" if aim is None or aim not in entry else (" (met)" if entry[aim] else " (missed)")
        return f"{entry[name]:.2f}x{mark}"

    for e in figures["ratios"]:
        lines.append(f"| {e['attention']} | {e['context']} | "
                     f"{cell(e, 'exact_over_streaming_wall', 'aim_exact_vs_streaming')} | "
                     f"{cell(e, 'exact_over_streaming_policy')} | "
                     f"{cell(e, 'one_env_over_exact_wall', 'aim_one_env_vs_exact')} | "
                     f"{cell(e, 'one_env_over_exact_policy')} | {cell(e, 'no_reuse_over_exact_policy')} |")
    return "\n".join(lines) + "\n"


def run(cfg: BenchRolloutConfig, say: Callable[[str], None] = print) -> dict:
    """Time every (attention, K, variant); write rollout.json and rollout.md (and profile-*.txt with
    ``cfg.profile``); return the figures."""
    from envs import make_vector_env

    cfg, out = prepare(cfg, QUICK)
    probe = make_vector_env(cfg.env, 1, cfg.seed)
    state_dim, act_dim = probe.single_observation_space.shape[0], probe.single_action_space.shape[0]
    probe.close()
    figures: dict = {"config": config_to_dict(cfg), **machine(torch.device("cpu")), "rows": []}
    say(f"rollout benchmark ({figures['cpu']}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads)\n{format_config(cfg)}")
    figures["matmul_peak_gflops"] = peak = matmul_peak_gflops()
    say(f"  fp32 matmul peak of this machine: {peak:.1f} GFLOP/s (2048^3 products)")
    for attention in cfg.attentions:
        for k in cfg.contexts:
            model = build_model(cfg, attention, k, state_dim, act_dim)
            for variant in cfg.variants:
                row = {"attention": attention, "context": k, **time_variant(model, cfg, variant)}
                envs = row["envs_at_once"]  # counted for one, as the work grows linearly with the batch
                one = counted_mflop_per_step(model, variant_plan(model, cfg, variant), 1,
                                             min(k, cfg.max_steps) - 1)
                row["counted_mflop_per_step"] = envs * one
                # the steady time is one step of every episode, whether run at once or one at a time
                row["peak_fraction"] = peak_fraction(cfg.episodes * one * 1e6,
                                                     row["steady_policy_ms_per_step"] / 1e3, peak)
                figures["rows"].append(row)
                say(f"  {attention:<18} K={k:<4} {variant:<26} wall {row['wall_s']:7.2f}s  policy "
                    f"{row['policy_s']:7.2f}s  steady {row['steady_policy_ms_per_step']:7.2f} ms/step  "
                    f"{row['counted_mflop_per_step']:8.1f} MFLOP/step x {envs} env(s) at once, "
                    f"{row['peak_fraction']:.2%} of peak")
            if cfg.profile and "exact" in cfg.variants and k < cfg.max_steps:
                profile_exact(model, cfg.episodes, 20, out / f"profile-{attention}-K{k}.txt")
            _save(figures, out)  # after every (attention, K): an interrupted run keeps what it measured
            e = figures["ratios"][-1]
            parts = [f"{name.replace('_', ' ')} {e[name]:.2f}x" for name in
                     ("exact_over_streaming_wall", "one_env_over_exact_wall",
                      "no_reuse_over_exact_policy") if name in e]
            say(f"  {attention:<18} K={k:<4} " + ", ".join(parts))
    say(f"written to {out}/rollout.json and rollout.md ({rollout_label('streaming')}: the streaming rollout)")
    return figures


def _save(figures: dict, out: Path) -> None:
    """Add the ratios to ``figures``; write rollout.json and rollout.md."""
    figures["ratios"] = ratios(figures["rows"])
    write_text(out / "rollout.json", json.dumps(figures, indent=2) + "\n")
    write_text(out / "rollout.md", format_markdown(figures))


COMMAND = Command("bench-rollout", "time the exact, streaming and re-run rollouts per attention and K",
                  BenchRolloutConfig, run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
