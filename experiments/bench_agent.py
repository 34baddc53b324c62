"""Agent benchmarks: training throughput (vs HuggingFace's DecisionTransformerModel) and long-context
training cost (the rollouts' cost: experiments.bench_rollout).

python -m experiments.bench_agent [--parts throughput context] [--quick] [--device cuda]
Writes CSV/JSON under --out-dir and prints tables. Timings are wall-clock on this machine (CUDA work is
synchronized before every clock reading).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agents.atomic import write_json, write_rows_csv
from agents.model import DecisionTransformer, DTConfig
from agents.results import cpu_description
from agents.sampler import SegmentSampler
from experiments.config import add_config_arguments, config_from_args, config_to_dict, format_config


@dataclass
class BenchAgentConfig:
    """What to benchmark and at which sizes."""

    parts: list[str] = field(default_factory=lambda: ["throughput", "context"])
    attentions: list[str] = field(default_factory=lambda: ["softmax", "cosformer", "combiner-fixed", "combiner-logsparse"])
    compare_hf: bool = field(default=True, metadata={"help": "include transformers.DecisionTransformerModel when installed"})
    precisions: list[str] = field(default_factory=lambda: ["fp32"], metadata={
        "help": "training precisions of the throughput part (fp32, bf16); every model, HF's included, runs in each"})
    throughput_context: int = 20
    throughput_batch: int = 64
    timed_steps: int = field(default=60, metadata={"help": "timed training steps per model (throughput part)"})
    throughput_rounds: int = field(default=10, metadata={
        "help": "the timed steps are split into this many rounds that visit every model in turn (a rotating order), "
                "so that drifts of the machine's speed hit all models alike; figures are medians over rounds, "
                "ratios are medians of the per-round ratios"})
    warmup_steps: int = 5
    contexts: list[int] = field(default_factory=lambda: [20, 100, 300, 1000])
    context_batch: int = 16
    context_steps: int = 5
    embed_dim: int = 128
    n_layers: int = 3
    n_heads: int = 1
    threads: int = 0
    seed: int = 0
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto: where the models train and roll out"})
    out_dir: str = "bench_results/agent"


STATE_DIM, ACT_DIM = 17, 6  # HalfCheetah's sizes
CPU = torch.device("cpu")


def _dt_config(cfg: BenchAgentConfig, attention: str, context: int, dropout: float = 0.1) -> DTConfig:
    opts = {"span": max(1, math.ceil(math.sqrt(3 * context)))} if attention.startswith("combiner") else {}
    return DTConfig(state_dim=STATE_DIM, act_dim=ACT_DIM, context=context, embed_dim=cfg.embed_dim,
                    n_layers=cfg.n_layers, n_heads=cfg.n_heads, dropout=dropout, attention=attention,
                    attention_options=opts)


def _synthetic_sampler(context: int, seed: int) -> SegmentSampler:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(200, 1001, size=40)
    obs = [rng.normal(size=(n, STATE_DIM)).astype(np.float32) for n in lengths]
    act = [rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32) for n in lengths]
    rew = [rng.normal(size=n).astype(np.float32) for n in lengths]
    return SegmentSampler(obs, act, rew, context, np.zeros(STATE_DIM), np.ones(STATE_DIM), 1000.0, 1000, seed)


def _device(cfg: BenchAgentConfig) -> torch.device:
    from experiments.bench_attention import resolve_device

    return resolve_device(cfg.device)


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock reading after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ours_step_fn(model: DecisionTransformer, precision: str = "fp32"):
    from agents.trainer import action_loss, training_autocast

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    autocast = training_autocast(precision, next(model.parameters()).device)

    def step(batch):
        with autocast:
            loss = action_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    return step


def _hf_step_fn(cfg: BenchAgentConfig, context: int, precision: str = "fp32"):
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    from agents.trainer import training_autocast

    hf = DecisionTransformerModel(DecisionTransformerConfig(
        state_dim=STATE_DIM, act_dim=ACT_DIM, hidden_size=cfg.embed_dim, n_layer=cfg.n_layers, n_head=cfg.n_heads,
        max_ep_len=1000, n_positions=max(1024, 3 * context), resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
        n_inner=4 * cfg.embed_dim, activation_function="relu"))
    device = _device(cfg)
    hf.to(device).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, weight_decay=1e-4)
    autocast = training_autocast(precision, device)

    def step(batch):
        mask = (~batch.pad_mask).long()
        with autocast:
            _, pred, _ = hf(states=batch.states, actions=batch.actions, rewards=torch.zeros_like(batch.rtg),
                            returns_to_go=batch.rtg, timesteps=batch.timesteps, attention_mask=mask, return_dict=False)
        keep = mask.unsqueeze(-1).float()
        loss = ((pred.float() - batch.actions) ** 2 * keep).sum() / (keep.sum() * ACT_DIM)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 0.25)
        opt.step()

    return step, sum(p.numel() for p in hf.parameters())


def _time_steps(step, sampler: SegmentSampler, batch: int, warmup: int, timed: int,
                device: torch.device = CPU) -> float:
    batches = [sampler.sample(batch).to(device) for _ in range(warmup + timed)]
    for b in batches[:warmup]:
        step(b)
    _sync(device)
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    _sync(device)
    return timed / (time.perf_counter() - t0)


def matmul_peak_gflops(size: int = 2048, seconds: float = 1.0, dtype: torch.dtype = torch.float32,
                       device: torch.device = CPU) -> float:
    """The device's matrix-multiply rate (GFLOP/s) in ``dtype`` on large square matrices: a practical peak."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b  # warm-up
    _sync(device)
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        runs += 1
        if device.type == "cuda" and runs % 10 == 0:
            _sync(device)  # keep the queue short, so that the clock check sees the work done
    _sync(device)
    return 2 * size**3 * runs / (time.perf_counter() - t0) / 1e9


def counted_gflop(step, batch) -> float:
    """Matrix-multiply GFLOP of one training step, as torch's FlopCounterMode counts them (it does not see
    inside CPU fused attention kernels, so for SDPA models this is a lower bound)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(batch)
    return counter.get_total_flops() / 1e9


HF_NAME = "transformers DecisionTransformerModel"
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def contender_name(model: str, precision: str) -> str:
    """A throughput row's model name: the model alone in fp32 (as in every earlier run), else with its precision."""
    return model if precision == "fp32" else f"{model} [{precision}]"


def bench_throughput(cfg: BenchAgentConfig) -> list[dict]:
    """Training steps/s at K=throughput_context for each attention and HF's DT in each precision, measured in
    interleaved rounds: each round times timed_steps / rounds steps of every model in turn; a model's figure is
    its median round."""
    if cfg.throughput_rounds < 1 or cfg.timed_steps < cfg.throughput_rounds:
        raise ValueError(f"need 1 <= throughput_rounds <= timed_steps, got {cfg.throughput_rounds} rounds of "
                         f"{cfg.timed_steps} steps")
    unknown = [p for p in cfg.precisions if p not in PRECISION_DTYPES]
    if unknown or not cfg.precisions:
        raise ValueError(f"precisions must list some of {sorted(PRECISION_DTYPES)}, got {cfg.precisions}")
    k = cfg.throughput_context
    device = _device(cfg)
    contenders = []  # (name, precision, step function, parameters)
    for precision in cfg.precisions:
        for att in cfg.attentions:
            torch.manual_seed(cfg.seed)
            model = DecisionTransformer(_dt_config(cfg, att, k)).to(device).train()
            contenders.append((contender_name(f"dt-attn {att}", precision), precision,
                               _ours_step_fn(model, precision), sum(p.numel() for p in model.parameters())))
        if cfg.compare_hf:
            try:
                torch.manual_seed(cfg.seed)
                step, n_params = _hf_step_fn(cfg, k, precision)
            except ImportError:
                print("  transformers not installed: skipping the HuggingFace comparison (pip install -e '.[bench]')")
            else:
                contenders.append((contender_name(HF_NAME, precision), precision, step, n_params))
    per_round = cfg.timed_steps // cfg.throughput_rounds
    sampler = _synthetic_sampler(k, cfg.seed)
    batches = [sampler.sample(cfg.throughput_batch).to(device) for _ in range(cfg.warmup_steps + per_round)]
    gflop = {}
    for name, _, step, _ in contenders:
        for b in batches[: cfg.warmup_steps]:
            step(b)
        gflop[name] = counted_gflop(step, batches[0])
    peak = {p: matmul_peak_gflops(dtype=PRECISION_DTYPES[p], device=device) for p in cfg.precisions}
    for p, rate in peak.items():
        print(f"  {p} matmul peak of this machine: {rate:.1f} GFLOP/s (2048^3 products)", flush=True)
    rates: dict[str, list[float]] = {name: [] for name, *_ in contenders}
    for r in range(cfg.throughput_rounds):
        shift = r % len(contenders)
        for name, _, step, _ in contenders[shift:] + contenders[:shift]:
            _sync(device)
            t0 = time.perf_counter()
            for b in batches[cfg.warmup_steps:]:
                step(b)
            _sync(device)
            rates[name].append(per_round / (time.perf_counter() - t0))
    rows = []
    for name, precision, _, n_params in contenders:
        sps = sorted(rates[name])
        rows.append({"model": name, "precision": precision, "context": k, "batch": cfg.throughput_batch,
                     "steps_per_s": float(np.median(sps)),
                     "steps_per_s_min": sps[0], "steps_per_s_max": sps[-1], "rounds": len(sps),
                     "steps_per_round": per_round, "parameters": n_params,
                     "round_steps_per_s": " ".join(f"{x:.4f}" for x in rates[name]),
                     "counted_gflop_per_step": gflop[name], "matmul_peak_gflops": peak[precision],
                     "steps_per_s_ceiling": peak[precision] / gflop[name] if gflop[name] else float("inf")})
        print(f"  {name:<45} {np.median(sps):8.2f} steps/s (rounds {sps[0]:.2f}-{sps[-1]:.2f}); "
              f"{gflop[name]:.2f} counted GFLOP/step, so at most {rows[-1]['steps_per_s_ceiling']:.2f} steps/s "
              f"at the {precision} matmul peak", flush=True)
    return rows


def _context_cell(cfg: BenchAgentConfig, attention: str, context: int) -> dict:
    """One long-context cell, run in this (fresh) process: steps/s and peak memory of training."""
    from experiments.bench_attention import peak_memory

    sampler = _synthetic_sampler(context, cfg.seed)
    device = _device(cfg)
    with peak_memory(device) as mem:
        torch.manual_seed(cfg.seed)
        model = DecisionTransformer(_dt_config(cfg, attention, context)).to(device).train()
        sps = _time_steps(_ours_step_fn(model), sampler, cfg.context_batch, 1, cfg.context_steps, device)
    return {"attention": attention, "context": context, "tokens": 3 * context, "batch": cfg.context_batch,
            "steps_per_s": sps, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_above_start_mb": mem["peak"] / 2**20, "memory_method": mem["method"]}


def bench_context(cfg: BenchAgentConfig) -> list[dict]:
    """Training cost vs context length, each cell in a fresh subprocess so peak memory is its own."""
    rows = []
    for att in cfg.attentions:
        for k in cfg.contexts:
            cmd = [sys.executable, "-m", "experiments.bench_agent", "--child-cell", att, str(k),
                   "--child-config", json.dumps(config_to_dict(cfg))]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"  {att:<20} K={k:<5} failed: {err}", flush=True)
                rows.append({"attention": att, "context": k, "tokens": 3 * k, "batch": cfg.context_batch,
                             "steps_per_s": float("nan"), "peak_rss_mb": float("nan"),
                             "peak_above_start_mb": float("nan"), "error": err})
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  {att:<20} K={k:<5} {row['steps_per_s']:8.2f} steps/s  training peak {row['peak_above_start_mb']:8.0f} MB "
                  f"(process peak RSS {row['peak_rss_mb']:.0f} MB)", flush=True)
    return rows


def run(cfg: BenchAgentConfig) -> dict:
    """Run the selected parts; write CSVs and a JSON summary; return the figures."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cpu = cpu_description()
    device = _device(cfg)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"agent benchmark on {gpu or 'the CPU'} ({cpu}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads)\n{format_config(cfg)}", flush=True)
    figures: dict = {"config": config_to_dict(cfg), "cpu": cpu, "torch_threads": torch.get_num_threads(),
                     "device": str(device), "gpu": gpu}
    parts = {"throughput": bench_throughput, "context": bench_context}
    for name in cfg.parts:
        if name not in parts:
            raise ValueError(f"unknown part {name!r}; choose from {sorted(parts)}")
        print(f"\n== {name}", flush=True)
        figures[name] = parts[name](cfg)
        if figures[name]:
            write_rows_csv(out / f"{name}.csv", figures[name])
    if figures.get("throughput"):
        print_throughput_targets(figures["throughput"], cfg)
    write_json(out / "summary.json", figures)
    print(f"\nwritten to {out}/")
    return figures


def paired_ratio(a: dict, b: dict, field: str = "round_steps_per_s") -> tuple[float, float, float]:
    """Median, min and max over rounds of a's ``field`` divided by b's in the same round (for times
    a's over b's is b's speed-up over a)."""
    ratios = sorted(x / y for x, y in zip(*(map(float, r[field].split()) for r in (a, b))))
    return float(np.median(ratios)), ratios[0], ratios[-1]


def print_throughput_targets(rows: list[dict], cfg: BenchAgentConfig) -> None:
    """The throughput targets in each precision (every model in the same precision), judged on the median of
    the per-round ratios; then, for the record, our bf16 softmax against HF in fp32 (not like for like)."""
    by = {r["model"]: r for r in rows}
    print("\n(median of the per-round ratios, with their range)")
    for precision in cfg.precisions:
        ours = by.get(contender_name("dt-attn softmax", precision))
        if ours is None:
            continue
        hf = by.get(contender_name(HF_NAME, precision))
        if hf:
            r, lo, hi = paired_ratio(ours, hf)
            print(f"target ({precision}, both models): dt-attn softmax >= 2x HF steps/s: {r:.2f}x ({lo:.2f}-{hi:.2f}) "
                  f"-> {'PASS' if r >= 2 else 'FAIL'}")
        for att in cfg.attentions:
            other = by.get(contender_name(f"dt-attn {att}", precision))
            if att != "softmax" and other:
                r, lo, hi = paired_ratio(other, ours)
                print(f"target ({precision}): {att} no slower than softmax at K={cfg.throughput_context}: "
                      f"{r:.2f}x ({lo:.2f}-{hi:.2f}) -> {'PASS' if r >= 1.0 else 'FAIL'}")
    ours_bf16, hf_fp32 = by.get(contender_name("dt-attn softmax", "bf16")), by.get(HF_NAME)
    if ours_bf16 and hf_fp32:
        r, lo, hi = paired_ratio(ours_bf16, hf_fp32)
        print(f"for the record (mixed precisions, not a target): dt-attn softmax in bf16 / HF in fp32: "
              f"{r:.2f}x ({lo:.2f}-{hi:.2f})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_agent", description=__doc__)
    add_config_arguments(p, BenchAgentConfig)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--child-cell", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--child-config", help=argparse.SUPPRESS)
    return p


def quick(cfg: BenchAgentConfig) -> BenchAgentConfig:
    """Tiny sizes for a smoke run."""
    cfg.timed_steps, cfg.throughput_rounds, cfg.warmup_steps, cfg.contexts, cfg.context_steps = 4, 2, 1, [5, 10], 1
    cfg.embed_dim, cfg.n_layers, cfg.throughput_batch, cfg.context_batch = 16, 1, 4, 2
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    if args.child_cell:
        cfg = BenchAgentConfig(**json.loads(args.child_config))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        print(json.dumps(_context_cell(cfg, args.child_cell[0], int(args.child_cell[1]))))
        return 0
    cfg = config_from_args(BenchAgentConfig, args)
    run(quick(cfg) if args.quick else cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
