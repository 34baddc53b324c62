"""`dt-attn bench-training`: training throughput of every attention against HuggingFace's
DecisionTransformerModel of the same size (python -m experiments.benchmarks.training).

Every model trains on the same random HalfCheetah-sized segments at K = --context. The timed steps are split
into --rounds rounds that visit every model in turn (a rotating order), so that drifts of the machine's speed
hit all models alike; a model's figure is its median round, and ratios are medians of the per-round ratios.
Beside the speed: the matrix-multiply GFLOP one step counts (experiments.benchmarks.roofline), the machine's
matmul peak, the ceiling on steps/s they set, and the fraction of that ceiling each model reaches. Writes
throughput.csv and summary.json under --out-dir and prints each model's speed and counted work against
dt-attn softmax's and HF's (ratios, no pass/fail: a model with more counted work cannot be held to a speed
ratio its FLOPs rule out). Every registered attention runs unless --attentions names some. Timings are
wall-clock on this machine (CUDA work is synchronized before every clock reading).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from agents.atomic import write_json, write_rows_csv
from agents.distributed import resolve_device
from agents.fieldtypes import check_field_types, check_rules
from agents.model import DecisionTransformer
from experiments.benchmarks.common import (
    ACT_DIM,
    STATE_DIM,
    AgentBenchConfig,
    dt_config,
    machine,
    prepare,
    sync,
    synthetic_sampler,
    training_step,
)
from experiments.benchmarks.roofline import count_flops, matmul_peak_gflops
from experiments.common import Command
from experiments.config import config_to_dict, format_config

HF_NAME = "transformers DecisionTransformerModel"
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
QUICK = {"timed_steps": 4, "rounds": 2, "warmup_steps": 1, "embed_dim": 16, "n_layers": 1, "batch": 4}


@dataclass
class BenchTrainingConfig(AgentBenchConfig):
    """What the training benchmark times, at which sizes."""

    compare_hf: bool = field(default=True, metadata={
        "help": "include transformers.DecisionTransformerModel when installed"})
    precisions: list[str] = field(default_factory=lambda: ["fp32"], metadata={
        "help": "training precisions (fp32, bf16); every model, HF's included, runs in each"})
    context: int = field(default=20, metadata={"help": "context length K of every model"})
    batch: int = 64
    timed_steps: int = field(default=60, metadata={"help": "timed training steps per model"})
    rounds: int = field(default=10, metadata={
        "help": "rounds the timed steps are split into, each visiting every model in turn"})
    warmup_steps: int = 5
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto: where the models train"})
    out_dir: str = "bench_results/training"
    quick: bool = field(default=False, metadata={
        "help": "tiny sizes for a smoke run (fields left at defaults)"})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_rules(self, "training benchmark config", {
            **{name: (getattr(self, name) >= 1, ">= 1") for name in ("context", "batch", "timed_steps",
                                                                     "rounds")},
            **{name: (getattr(self, name) >= 0, ">= 0") for name in ("warmup_steps", "threads")},
        })


def hf_training_step(cfg: BenchTrainingConfig, device: torch.device, precision: str = "fp32"):
    """One training step of HuggingFace's DecisionTransformerModel of the same size, and its parameter
    count."""
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    from agents.trainer import training_autocast

    hf = DecisionTransformerModel(DecisionTransformerConfig(
        state_dim=STATE_DIM, act_dim=ACT_DIM, hidden_size=cfg.embed_dim, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, max_ep_len=1000, n_positions=max(1024, 3 * cfg.context), resid_pdrop=0.1,
        embd_pdrop=0.1, attn_pdrop=0.1, n_inner=4 * cfg.embed_dim, activation_function="relu"))
    hf.to(device).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, weight_decay=1e-4)
    autocast = training_autocast(precision, device)

    def step(batch):
        mask = (~batch.pad_mask).long()
        with autocast:
            _, pred, _ = hf(states=batch.states, actions=batch.actions, rewards=torch.zeros_like(batch.rtg),
                            returns_to_go=batch.rtg, timesteps=batch.timesteps, attention_mask=mask,
                            return_dict=False)
        keep = mask.unsqueeze(-1).float()
        loss = ((pred.float() - batch.actions) ** 2 * keep).sum() / (keep.sum() * ACT_DIM)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 0.25)
        opt.step()

    return step, sum(p.numel() for p in hf.parameters())


def contender_name(model: str, precision: str) -> str:
    """A throughput row's model name: the model alone in fp32, else with its precision."""
    return model if precision == "fp32" else f"{model} [{precision}]"


def bench_throughput(cfg: BenchTrainingConfig) -> list[dict]:
    """Training steps/s at K=context for each attention and HF's DT in each precision, measured in
    interleaved rounds: each round times timed_steps / rounds steps of every model in turn; a model's figure
    is its median round."""
    if cfg.rounds < 1 or cfg.timed_steps < cfg.rounds:
        raise ValueError(f"need 1 <= rounds <= timed_steps, got {cfg.rounds} rounds of "
                         f"{cfg.timed_steps} steps")
    unknown = [p for p in cfg.precisions if p not in PRECISION_DTYPES]
    if unknown or not cfg.precisions:
        raise ValueError(f"precisions must list some of {sorted(PRECISION_DTYPES)}, got {cfg.precisions}")
    k = cfg.context
    device = resolve_device(cfg.device)
    contenders = []  # (name, precision, step function, parameters)
    for precision in cfg.precisions:
        for att in cfg.attentions:
            torch.manual_seed(cfg.seed)
            model = DecisionTransformer(dt_config(cfg, att, k)).to(device).train()
            contenders.append((contender_name(f"dt-attn {att}", precision), precision,
                               training_step(model, precision), sum(p.numel() for p in model.parameters())))
        if cfg.compare_hf:
            try:
                torch.manual_seed(cfg.seed)
                step, n_params = hf_training_step(cfg, device, precision)
            except ImportError:
                print("  transformers not installed: skipping the HuggingFace comparison (pip "
                      "install -e '.[bench]')")
            else:
                contenders.append((contender_name(HF_NAME, precision), precision, step, n_params))
    per_round = cfg.timed_steps // cfg.rounds
    sampler = synthetic_sampler(k, cfg.seed)
    batches = [sampler.sample(cfg.batch).to(device) for _ in range(cfg.warmup_steps + per_round)]
    gflop = {}
    for name, _, step, _ in contenders:
        for b in batches[: cfg.warmup_steps]:
            step(b)
        gflop[name] = count_flops(step, batches[0])[1] / 1e9
    peak = {p: matmul_peak_gflops(dtype=PRECISION_DTYPES[p], device=device) for p in cfg.precisions}
    for p, rate in peak.items():
        print(f"  {p} matmul peak of this machine: {rate:.1f} GFLOP/s (2048^3 products)", flush=True)
    rates: dict[str, list[float]] = {name: [] for name, *_ in contenders}
    for r in range(cfg.rounds):
        shift = r % len(contenders)
        for name, _, step, _ in contenders[shift:] + contenders[:shift]:
            sync(device)
            t0 = time.perf_counter()
            for b in batches[cfg.warmup_steps:]:
                step(b)
            sync(device)
            rates[name].append(per_round / (time.perf_counter() - t0))
    rows = []
    for name, precision, _, n_params in contenders:
        sps = sorted(rates[name])
        rows.append({"model": name, "precision": precision, "context": k, "batch": cfg.batch,
                     "steps_per_s": float(np.median(sps)),
                     "steps_per_s_min": sps[0], "steps_per_s_max": sps[-1], "rounds": len(sps),
                     "steps_per_round": per_round, "parameters": n_params,
                     "round_steps_per_s": " ".join(f"{x:.4f}" for x in rates[name]),
                     "counted_gflop_per_step": gflop[name], "matmul_peak_gflops": peak[precision],
                     "steps_per_s_ceiling": peak[precision] / gflop[name] if gflop[name] else float("inf"),
                     "peak_fraction": float(np.median(sps)) * gflop[name] / peak[precision]})
        print(f"  {name:<45} {np.median(sps):8.2f} steps/s (rounds {sps[0]:.2f}-{sps[-1]:.2f}); "
              f"{gflop[name]:.2f} counted GFLOP/step, so at most {rows[-1]['steps_per_s_ceiling']:.2f} "
              f"steps/s at the {precision} matmul peak", flush=True)
    return rows


def run(cfg: BenchTrainingConfig) -> dict:
    """Time every model; write throughput.csv and summary.json; print the ratios; return the figures."""
    cfg, out = prepare(cfg, QUICK)
    device = resolve_device(cfg.device)
    figures: dict = {"config": config_to_dict(cfg), **machine(device)}
    print(f"training benchmark on {figures['gpu'] or 'the CPU'} ({figures['cpu']}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads)\n{format_config(cfg)}", flush=True)
    figures["throughput"] = bench_throughput(cfg)
    write_rows_csv(out / "throughput.csv", figures["throughput"])
    print_throughput_ratios(figures["throughput"], cfg)
    write_json(out / "summary.json", figures)
    print(f"\nwritten to {out}/throughput.csv and summary.json")
    return figures


def paired_ratio(a: dict, b: dict, field: str = "round_steps_per_s") -> tuple[float, float, float]:
    """Median, min and max over rounds of a's ``field`` divided by b's in the same round (for times
    a's over b's is b's speed-up over a)."""
    ratios = sorted(x / y for x, y in zip(*(map(float, r[field].split()) for r in (a, b))))
    return float(np.median(ratios)), ratios[0], ratios[-1]


def print_throughput_ratios(rows: list[dict], cfg: BenchTrainingConfig) -> None:
    """Per precision, every model's steps/s, counted GFLOP and fraction of the matmul peak, with its speed
    and work against dt-attn softmax's and HF's in the same precision (speed ratios are medians of the
    per-round ratios, with their range); then, for the record, our bf16 softmax against HF in fp32."""
    by = {r["model"]: r for r in rows}
    print(f"\n(K={cfg.context}; speed ratios: median of the per-round ratios, with their range)")
    for precision in cfg.precisions:
        bases = [b for b in (contender_name("dt-attn softmax", precision), contender_name(HF_NAME, precision))
                 if b in by]
        print(f"{'model':<44} {'steps/s':>8} {'GFLOP':>8} {'of peak':>8}"
              + "".join(f"  {'vs ' + b.split(' [')[0]:>34}" for b in bases))
        for r in rows:
            if r["precision"] != precision:
                continue
            cells = []
            for b in bases:
                ratio, lo, hi = paired_ratio(r, by[b])
                work = r["counted_gflop_per_step"] / by[b]["counted_gflop_per_step"]
                cells.append(f"  {f'{ratio:.2f}x ({lo:.2f}-{hi:.2f}), work {work:.2f}x':>34}")
            print(f"{r['model']:<44} {r['steps_per_s']:8.2f} {r['counted_gflop_per_step']:8.3f} "
                  f"{r['peak_fraction']:8.1%}" + "".join(cells))
    ours_bf16, hf_fp32 = by.get(contender_name("dt-attn softmax", "bf16")), by.get(HF_NAME)
    if ours_bf16 and hf_fp32:
        r, lo, hi = paired_ratio(ours_bf16, hf_fp32)
        print(f"for the record (mixed precisions): dt-attn softmax in bf16 / HF in fp32: "
              f"{r:.2f}x ({lo:.2f}-{hi:.2f})")


COMMAND = Command("bench-training", "training throughput of each attention against HuggingFace's DT",
                  BenchTrainingConfig, run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
