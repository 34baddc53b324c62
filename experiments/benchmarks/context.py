"""`dt-attn bench-context`: what training costs as the context K grows, per attention
(python -m experiments.benchmarks.context).

Each (attention, K) cell trains the benchmark's Decision Transformer on random HalfCheetah-sized segments of
K steps (3K tokens) for a few timed steps, in a fresh process, so that its peak memory is its own: the peak
above the level just before the model was built (CUDA's allocator peak on a GPU, the process's RSS high-water
mark on a CPU) and the process's peak RSS. Beside the speed: the counted matrix work of one step (GFLOP, as
experiments.benchmarks.roofline counts it) and the fraction of the machine's fp32 matmul peak (measured once
per run) it reaches at the measured speed. Every registered attention runs unless --attentions names some;
--n-heads splits the width into heads. A cell that fails (out of memory) is reported and the others run.
Writes context.csv and summary.json under --out-dir. Timings are wall-clock on this machine (CUDA work is
synchronized before every clock reading); the rollouts' cost is `dt-attn bench-rollout`'s.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field

import torch

from agents.atomic import write_json, write_rows_csv
from agents.distributed import resolve_device
from agents.fieldtypes import check_field_types, check_rules
from agents.model import DecisionTransformer
from experiments.benchmarks.common import (
    AgentBenchConfig,
    dt_config,
    machine,
    peak_memory,
    prepare,
    run_isolated,
    steps_per_second,
    synthetic_sampler,
    training_step,
)
from experiments.benchmarks.roofline import matmul_peak_gflops, peak_fraction
from experiments.common import Command
from experiments.config import config_to_dict, format_config

QUICK = {"contexts": [5, 10], "steps": 1, "embed_dim": 16, "n_layers": 1, "batch": 2}


@dataclass
class BenchContextConfig(AgentBenchConfig):
    """What the context benchmark trains, at which sizes."""

    contexts: list[int] = field(default_factory=lambda: [20, 100, 300, 1000], metadata={
        "help": "context lengths K"})
    batch: int = 16
    steps: int = field(default=5, metadata={"help": "timed training steps per cell (after one warm-up step)"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto: where the models train"})
    out_dir: str = "bench_results/context"
    quick: bool = field(default=False, metadata={
        "help": "tiny sizes for a smoke run (fields left at defaults)"})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_rules(self, "context benchmark config", {
            "contexts": (bool(self.contexts) and min(self.contexts) >= 1, "K >= 1, at least one"),
            "batch": (self.batch >= 1, ">= 1"),
            "steps": (self.steps >= 1, ">= 1"),
            "threads": (self.threads >= 0, ">= 0 (0 = torch's default)"),
        })


def context_cell(cfg: BenchContextConfig, attention: str, context: int) -> dict:
    """One cell, in the calling (fresh) process: training steps/s and peak memory."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sampler = synthetic_sampler(context, cfg.seed)
    device = resolve_device(cfg.device)
    with peak_memory(device) as mem:
        torch.manual_seed(cfg.seed)
        model = DecisionTransformer(dt_config(cfg, attention, context)).to(device).train()
        sps, flops = steps_per_second(training_step(model), sampler, cfg.batch, 1, cfg.steps, device)
    return {"attention": attention, "context": context, "tokens": 3 * context, "batch": cfg.batch,
            "heads": cfg.n_heads, "steps_per_s": sps, "gflop_per_step": flops / 1e9,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_above_start_mb": mem["peak"] / 2**20, "memory_method": mem["method"]}


def bench_context(cfg: BenchContextConfig, peak_gflops: float) -> list[dict]:
    """Training cost against context length, each cell in a fresh process, with its fraction of the
    matmul peak ``peak_gflops``."""
    rows = []
    for att in cfg.attentions:
        for k in cfg.contexts:
            try:
                row = run_isolated(context_cell, cfg, att, k)
            except Exception as exc:  # noqa: BLE001 - one failed cell (out of memory) must not end the run
                err = f"{type(exc).__name__}: {exc}"[:200]
                print(f"  {att:<20} K={k:<5} failed: {err}", flush=True)
                rows.append({"attention": att, "context": k, "tokens": 3 * k, "batch": cfg.batch,
                             "heads": cfg.n_heads, "steps_per_s": float("nan"),
                             "gflop_per_step": float("nan"),
                             "peak_fraction": float("nan"), "peak_rss_mb": float("nan"),
                             "peak_above_start_mb": float("nan"), "error": err})
                continue
            row["peak_fraction"] = peak_fraction(row["gflop_per_step"] * 1e9, 1 / row["steps_per_s"],
                                                 peak_gflops)
            rows.append(row)
            print(f"  {att:<20} K={k:<5} {row['steps_per_s']:8.3f} steps/s  {row['gflop_per_step']:8.2f} "
                  f"GFLOP/step  {row['peak_fraction']:6.1%} of peak  training peak "
                  f"{row['peak_above_start_mb']:8.0f} MB (process peak RSS {row['peak_rss_mb']:.0f} MB)",
                  flush=True)
    return rows


def run(cfg: BenchContextConfig) -> dict:
    """Run every cell; write context.csv and summary.json; return the figures."""
    cfg, out = prepare(cfg, QUICK)
    figures: dict = {"config": config_to_dict(cfg), **machine(resolve_device(cfg.device))}
    print(f"context benchmark on {figures['gpu'] or 'the CPU'} ({figures['cpu']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)\n{format_config(cfg)}", flush=True)
    device = resolve_device(cfg.device)
    figures["matmul_peak_gflops"] = peak = matmul_peak_gflops(device=device)
    print(f"  fp32 matmul peak of this machine: {peak:.1f} GFLOP/s (2048^3 products)", flush=True)
    figures["context"] = bench_context(cfg, peak)
    write_rows_csv(out / "context.csv", figures["context"])
    write_json(out / "summary.json", figures)
    print(f"\nwritten to {out}/context.csv and summary.json")
    return figures


COMMAND = Command("bench-context", "training cost of each attention as the context K grows",
                  BenchContextConfig, run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
