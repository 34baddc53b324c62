"""`dt-attn bench-attention` (or `dt-attn bench`): speed and memory of each attention mechanism against
PyTorch SDPA.

dt-attn bench-attention             # full grid (minutes to hours on a CPU)
dt-attn bench-attention --quick     # small sizes, a smoke run

For every mechanism and token count it times forward+backward (median of a few repeats after a
warm-up) and measures peak memory; ``sdpa`` (torch's fused scaled_dot_product_attention) is the
speed baseline and ``quadratic`` (softmax(QK^T) with an explicit causal mask) the memory baseline.
Where the quadratic reference cannot fit, its analytic size (three B*H*T*T matrices live during
backward) is reported instead and marked so. Each cell runs in a fresh process (``--isolate``) so
that CPU peak memory is the process's peak RSS above its baseline just before the run (Linux resets
the high-water mark through /proc/self/clear_refs); on CUDA it is torch.cuda.max_memory_allocated.
Beside each time it reports the counted matrix work of the cell (GFLOP of one forward+backward, as
experiments.benchmarks.roofline counts it while the cell runs), the fraction of the machine's fp32 matmul
peak (measured once per run) that this work reaches in the measured time, and the speed-up over SDPA.
It also times one incremental ``step`` per token at several prefix lengths. Every registered mechanism is
measured unless --mechanisms names some. Writes CSV files and a plot into --out-dir.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from agents.atomic import write_json, write_rows_csv
from agents.distributed import resolve_device
from agents.fieldtypes import check_rules
from agents.results import cpu_description
from dt_attn import available_attentions, build_attention, capabilities, reference_attention
from experiments.benchmarks.common import peak_memory, prepare, run_isolated
from experiments.benchmarks.roofline import count_flops, matmul_peak_gflops, peak_fraction
from experiments.common import Command
from experiments.config import config_to_dict, format_config

SDPA = "sdpa"  # baseline: torch.nn.functional.scaled_dot_product_attention(is_causal=True)
QUADRATIC = "quadratic"  # baseline: explicit softmax(QK^T) with a causal mask (dt_attn's reference form)
QUADRATIC_MATRICES = 3  # T x T matrices alive at the quadratic reference's peak (probs + 2 grads)

# Sizes --quick uses for every field left at its default.
QUICK = {
    "tokens": [64, 128, 256],
    "batch": 2,
    "heads": 2,
    "head_dim": 16,
    "repeats": 2,
    "step_prefixes": [10, 30, 100],
    "step_batch": 2,
    "step_samples": 5,
}


@dataclass
class BenchAttentionConfig:
    """Every value of an attention benchmark run."""

    mechanisms: list[str] = field(
        default_factory=available_attentions,
        metadata={"help": "registered attentions to measure (default: every registered one; unregistered "
                          "names are skipped with a note)"},
    )
    tokens: list[int] = field(
        default_factory=lambda: [256, 512, 1024, 2048, 3072, 4096, 8192, 16384],
        metadata={"help": "sequence lengths for forward+backward"},
    )
    batch: int = field(default=8, metadata={"help": "batch size"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    head_dim: int = field(default=32, metadata={"help": "query/key/value dimension per head"})
    warmup: int = field(default=1, metadata={
        "help": "untimed runs per cell (the first also gives peak memory)"})
    repeats: int = field(default=3, metadata={
        "help": "timed forward+backward runs per cell (median reported)"})
    slow_cell_s: float = field(
        default=60.0, metadata={"help": "a cell whose warm-up takes longer reports that one run, no repeats"}
    )
    step_prefixes: list[int] = field(
        default_factory=lambda: [100, 300, 1000, 3000], metadata={"help": "prefix lengths for step latency"}
    )
    step_batch: int = field(default=8, metadata={"help": "batch size of the step-latency runs"})
    step_samples: int = field(default=20, metadata={"help": "steps timed at each prefix (median reported)"})
    attention_options: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"help": "options per mechanism as JSON, e.g. '{\"cosformer\": {\"chunk_size\": 32}}'; "
                          "max_distance defaults to the longest sequence"},
    )
    step_options: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"combiner-fixed": {"span": 64}, "combiner-logsparse": {"span": 64}},
        metadata={"help": "extra options per mechanism for the step runs (Combiner's step needs a span)"},
    )
    quadratic_max_gib: float = field(
        default=0.0,
        metadata={"help": "largest analytic size of the quadratic reference that is run "
                          "(0 = 40%% of the device's memory)"},
    )
    isolate: bool = field(default=True, metadata={
        "help": "run each cell in a fresh process (honest peak memory)"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto (cuda when available)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    seed: int = field(default=0, metadata={"help": "random seed of the inputs"})
    out_dir: str = field(default="bench_results/attention",
                         metadata={"help": "folder for CSV, plot, targets"})
    quick: bool = field(default=False, metadata={
        "help": "small sizes for a smoke run (fields left at defaults)"})

    def __post_init__(self) -> None:
        for name in ("tokens", "step_prefixes", "mechanisms"):
            if not getattr(self, name):
                raise ValueError(f"--{name.replace('_', '-')} is empty; give at least one value")
        check_rules(self, "attention benchmark config", {
            **{name: (getattr(self, name) >= 1, ">= 1")
               for name in ("batch", "heads", "head_dim", "repeats", "step_batch", "step_samples")},
            **{name: (getattr(self, name) >= 0, ">= 0") for name in ("warmup", "threads",
                                                                     "quadratic_max_gib")},
            "tokens": (min(self.tokens) >= 1, ">= 1"),
            "step_prefixes": (min(self.step_prefixes) >= 1, ">= 1"),
            "device": (self.device in ("auto", "cpu", "cuda"), "cpu, cuda or auto"),
        })
        for name in ("attention_options", "step_options"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, json.loads(getattr(self, name)))
            if not all(isinstance(v, dict) for v in getattr(self, name).values()):
                raise ValueError(f'{name} must map mechanism names to option objects, e.g. '
                                 '{"cosformer": {}}')


# ---------------------------------------------------------------------------------------------
# One forward+backward cell (runs in a child process when isolated)


def quadratic_bytes(batch: int, heads: int, tokens: int, elem: int = 4) -> int:
    """Analytic peak of the quadratic reference: QUADRATIC_MATRICES (B, H, T, T) matrices."""
    return QUADRATIC_MATRICES * batch * heads * tokens * tokens * elem


def _attention_fn(name: str, options: dict[str, Any]) -> Callable[..., torch.Tensor]:
    if name == SDPA:
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if name == QUADRATIC:  # the library's explicit form: softmax(QK^T / sqrt(d)) with a (T, T) causal mask
        return lambda q, k, v: reference_attention("softmax", q, k, v)
    return build_attention(name, **options)


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Time forward+backward of one (mechanism, tokens) cell and measure its peak memory."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    fn = _attention_fn(spec["name"], spec["options"])
    g = torch.Generator(device="cpu").manual_seed(spec["seed"])
    shape = (spec["batch"], spec["heads"], spec["tokens"], spec["head_dim"])
    q, k, v = (torch.randn(shape, generator=g).to(device).requires_grad_() for _ in range(3))
    # A dense upstream gradient, as a model's next layer hands back; out.sum().backward() would pass an
    # expanded (stride-0) one, which makes CPU batched matmuls copy it batch by batch.
    upstream = torch.randn(shape, generator=g).to(device)

    def once() -> float:
        q.grad = k.grad = v.grad = None
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        fn(q, k, v).backward(upstream)
        sync()
        return time.perf_counter() - start

    # Load kernels, start thread pools and the counter on a tiny input first, so that the peak is the
    # workload's.
    small = min(16, spec["tokens"])
    tiny = [x.detach()[:, :, :small].clone().requires_grad_() for x in (q, k, v)]
    count_flops(lambda: fn(*tiny).backward(upstream[:, :, :small].contiguous()))
    with peak_memory(device) as mem:
        first, flops = count_flops(once)  # the counter's own cost is negligible beside a cell's products
    times = [first]
    if first <= spec["slow_cell_s"]:
        for _ in range(spec["warmup"] - 1):
            once()
        times = [once() for _ in range(spec["repeats"])]
    note = "" if len(times) > 1 or spec["repeats"] == 1 else "slow: the warm-up run alone"
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "runs": len(times),
        "flops": flops,
        "peak_bytes": max(0, mem["peak"]),
        "memory_method": mem["method"],
        "note": note,
    }


# ---------------------------------------------------------------------------------------------
# The grid


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of the device (physical RAM for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def longest_sequence(cfg: BenchAttentionConfig) -> int:
    """The most tokens any run attends over (forward+backward or the step walk)."""
    return max(max(cfg.tokens), max(cfg.step_prefixes) + cfg.step_samples)


def mechanism_options(cfg: BenchAttentionConfig, name: str, longest: int) -> dict[str, Any]:
    """Configured options of one mechanism; a max_distance option defaults to the longest sequence."""
    opts = dict(cfg.attention_options.get(name, {}))
    distance = capabilities(name).distance
    if distance and distance not in opts:
        opts[distance] = longest
    return opts


def registered_mechanisms(cfg: BenchAttentionConfig, say: Callable[[str], None] = print) -> list[str]:
    """The configured mechanisms that are registered; notes the others."""
    known = available_attentions()
    chosen = []
    for name in cfg.mechanisms:
        if name in known and capabilities(name).kind != "qkv":
            say(f"note: {name} mixes hidden states, not q, k, v; skipped (bench-context times it in a "
                "model)")
        elif name in known:
            chosen.append(name)
        else:
            say(f"note: attention {name!r} is not registered (available: {', '.join(known)}); skipped")
    return chosen


def bench_fwd_bwd(cfg: BenchAttentionConfig, mechanisms: list[str], device: torch.device,
                  say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One row per (mechanism or baseline, tokens): time, peak memory and how it was obtained."""
    longest = longest_sequence(cfg)
    limit = cfg.quadratic_max_gib * 2**30 or 0.4 * device_memory_bytes(device)
    rows = []
    for tokens in sorted(cfg.tokens):
        for name in [SDPA, QUADRATIC, *mechanisms]:
            row: dict[str, Any] = {"mechanism": name, "tokens": tokens, "batch": cfg.batch,
                                   "heads": cfg.heads, "head_dim": cfg.head_dim, "device": str(device)}
            analytic = quadratic_bytes(cfg.batch, cfg.heads, tokens)
            if name == QUADRATIC and analytic > limit:
                row.update(median_s=None, min_s=None, runs=0, flops=None, peak_bytes=analytic,
                           memory_method="analytic (not run)",
                           note=f"would need ~{analytic / 2**30:.1f} GiB > limit {limit / 2**30:.1f} GiB")
                rows.append(row)
                say(f"  {name:>20} T={tokens:<6} not run: {row['note']}")
                continue
            spec = {"name": name, "tokens": tokens, "batch": cfg.batch, "heads": cfg.heads,
                    "head_dim": cfg.head_dim, "device": str(device), "seed": cfg.seed,
                    "threads": cfg.threads, "warmup": max(cfg.warmup, 1), "repeats": cfg.repeats,
                    "slow_cell_s": cfg.slow_cell_s,
                    "options": {} if name in (SDPA, QUADRATIC) else mechanism_options(cfg, name, longest)}
            try:
                if cfg.isolate:
                    result = run_isolated(run_cell, spec)
                else:
                    result = run_cell(spec)
                    result["memory_method"] += " (in-process: approximate)"
            except Exception as exc:  # noqa: BLE001 -- one failed cell (e.g. out of memory) must not end the run
                result = {"median_s": None, "min_s": None, "runs": 0, "flops": None, "peak_bytes": None,
                          "memory_method": "", "note": f"failed: {type(exc).__name__}: {exc}"[:200]}
            row.update(result)
            rows.append(row)
            t = "-" if row["median_s"] is None else f"{row['median_s'] * 1e3:.1f} ms"
            m = "-" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:.1f} MiB"
            w = "-" if row["flops"] is None else f"{row['flops'] / 1e9:.3f} GFLOP"
            say(f"  {name:>20} T={tokens:<6} fwd+bwd {t:>12}  {w:>14}  peak {m:>12}  {row['note']}")
    return rows


def bench_step(cfg: BenchAttentionConfig, mechanisms: list[str], device: torch.device,
               say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Median latency of one incremental step at each prefix length, per mechanism."""
    prefixes = sorted(cfg.step_prefixes)
    total = prefixes[-1] + cfg.step_samples
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    shape = (cfg.step_batch, cfg.heads, total, cfg.head_dim)
    q, k, v = (torch.randn(shape, generator=g).to(device) for _ in range(3))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    longest = longest_sequence(cfg)
    rows = []
    for name in mechanisms:
        opts = {**mechanism_options(cfg, name, longest), **cfg.step_options.get(name, {})}
        try:
            attn = build_attention(name, **opts).to(device)
            with torch.no_grad():
                state = attn.init_state(cfg.step_batch, cfg.heads, cfg.head_dim, cfg.head_dim,
                                        device=device, dtype=q.dtype)
                warm = attn.init_state(cfg.step_batch, cfg.heads, cfg.head_dim, cfg.head_dim,
                                       device=device, dtype=q.dtype)
                for t in range(min(cfg.step_samples, total)):  # warm-up on a throwaway state
                    _, warm = attn.step(q[:, :, t], k[:, :, t], v[:, :, t], warm)
                t = 0
                for prefix in prefixes:
                    while t < prefix:
                        _, state = attn.step(q[:, :, t], k[:, :, t], v[:, :, t], state)
                        t += 1
                    times = []
                    for _ in range(cfg.step_samples):
                        sync()
                        start = time.perf_counter()
                        _, state = attn.step(q[:, :, t], k[:, :, t], v[:, :, t], state)
                        sync()
                        times.append(time.perf_counter() - start)
                        t += 1
                    rows.append({"mechanism": name, "prefix": prefix, "batch": cfg.step_batch,
                                 "median_s": statistics.median(times), "samples": len(times), "note": ""})
                    say(f"  {name:>20} prefix={prefix:<6} step {rows[-1]['median_s'] * 1e6:10.1f} us")
        except Exception as exc:  # noqa: BLE001 -- report it and go on with the next mechanism
            rows.append({"mechanism": name, "prefix": None, "batch": cfg.step_batch, "median_s": None,
                         "samples": 0, "note": f"failed: {type(exc).__name__}: {exc}"[:200]})
            say(f"  {name:>20} step failed: {rows[-1]['note']}")
    return rows


# ---------------------------------------------------------------------------------------------
# Targets, tables, files


def _lookup(rows: list[dict[str, Any]], name: str, key: str, size_key: str, size: int) -> float | None:
    for r in rows:
        if r["mechanism"] == name and r.get(size_key) == size and r.get(key) is not None:
            return r[key]
    return None


def add_roofline(fwd: list[dict[str, Any]], peak_gflops: float) -> None:
    """Add to every forward+backward row its counted GFLOP, the fraction of the matmul peak it reaches in
    its median time, and its speed-up over SDPA at the same tokens (None where unmeasured)."""
    for row in fwd:
        row["gflop"] = None if row["flops"] is None else row["flops"] / 1e9
        row["peak_fraction"] = peak_fraction(row["flops"], row["median_s"], peak_gflops)
        base = _lookup(fwd, SDPA, "median_s", "tokens", row["tokens"])
        row["speedup_vs_sdpa"] = base / row["median_s"] if base and row["median_s"] else None


def format_tables(fwd: list[dict[str, Any]], step: list[dict[str, Any]]) -> str:
    """Plain-text tables: fwd+bwd time, counted GFLOP, fraction of the matmul peak, speed-up over SDPA,
    peak memory, step latency."""
    lines = []
    names = list(dict.fromkeys(r["mechanism"] for r in fwd))
    sizes = sorted({r["tokens"] for r in fwd})

    def table(title: str, cell: Callable[[dict[str, Any]], str], cols: list[int], key: str,
              rows: list[dict[str, Any]], order: list[str]) -> None:
        lines.append(title)
        lines.append(f"{'':>20}" + "".join(f"{c:>14}" for c in cols))
        for name in order:
            by = {r[key]: r for r in rows if r["mechanism"] == name}
            lines.append(f"{name:>20}" + "".join(f"{cell(by[c]) if c in by else '-':>14}" for c in cols))
        lines.append("")

    def t_cell(r: dict[str, Any]) -> str:
        return "not run" if r["median_s"] is None else f"{r['median_s'] * 1e3:.1f}"

    def m_cell(r: dict[str, Any]) -> str:
        if r["peak_bytes"] is None:
            return "-"
        mark = "*" if r["memory_method"].startswith("analytic") else ""
        return f"{r['peak_bytes'] / 2**20:.1f}{mark}"

    def number(key: str, fmt: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: "-" if r.get(key) is None else format(r[key], fmt)

    if fwd:
        table("forward+backward median time (ms) by tokens", t_cell, sizes, "tokens", fwd, names)
        table("counted matrix work of one forward+backward (GFLOP) by tokens", number("gflop", ".3f"),
              sizes, "tokens", fwd, names)
        table("roofline: fraction of the fp32 matmul peak reached by tokens", number("peak_fraction", ".1%"),
              sizes, "tokens", fwd, names)
        table("speed-up over SDPA (its time / this time) by tokens", number("speedup_vs_sdpa", ".2f"),
              sizes, "tokens", fwd, names)
        table("peak memory (MiB) by tokens; * = analytic size, too large to run", m_cell, sizes,
              "tokens", fwd, names)
    if step:
        prefixes = sorted({r["prefix"] for r in step if r["prefix"] is not None})
        table("incremental step latency (us per token) by prefix length",
              lambda r: "-" if r["median_s"] is None else f"{r['median_s'] * 1e6:.1f}", prefixes, "prefix",
              step, list(dict.fromkeys(r["mechanism"] for r in step)))
    return "\n".join(lines)


def plot(path: Path, fwd: list[dict[str, Any]], step: list[dict[str, Any]]) -> None:
    """Time, memory and step latency on log axes, one line per mechanism."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    names = list(dict.fromkeys([r["mechanism"] for r in fwd] + [r["mechanism"] for r in step]))
    color = {name: f"C{i}" for i, name in enumerate(names)}  # one colour per mechanism in every panel
    for name in dict.fromkeys(r["mechanism"] for r in fwd):
        rs = [r for r in fwd if r["mechanism"] == name]
        timed = [r for r in rs if r["median_s"] is not None]
        axes[0].plot([r["tokens"] for r in timed], [r["median_s"] * 1e3 for r in timed], "o-", label=name,
                     color=color[name])
        measured = [r for r in rs
                    if r["peak_bytes"] is not None and not r["memory_method"].startswith("analytic")]
        axes[1].plot([r["tokens"] for r in measured], [r["peak_bytes"] / 2**20 for r in measured],
                     "o-", label=name, color=color[name])
        analytic = [r for r in rs if r["memory_method"].startswith("analytic")]
        if analytic:
            axes[1].plot([r["tokens"] for r in analytic], [r["peak_bytes"] / 2**20 for r in analytic], "x--",
                         color=color[name], label=f"{name} (analytic)")
    for name in dict.fromkeys(r["mechanism"] for r in step):
        rs = [r for r in step if r["mechanism"] == name and r["median_s"] is not None]
        axes[2].plot([r["prefix"] for r in rs], [r["median_s"] * 1e6 for r in rs], "o-", label=name,
                     color=color[name])
    titles = [("tokens", "forward+backward (ms)"), ("tokens", "peak memory (MiB)"),
              ("prefix length", "step latency (us/token)")]
    for ax, (x, y) in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: BenchAttentionConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark, write its files, print its tables; returns the rows and the matmul peak."""
    cfg, out_dir = prepare(cfg, QUICK)
    device = resolve_device(cfg.device)
    cpu = cpu_description()
    say(f"attention benchmark on {device} ({cpu}; {torch.get_num_threads()} threads), config:")
    say(format_config(cfg))
    mechanisms = registered_mechanisms(cfg, say)
    peak = matmul_peak_gflops(device=device)
    say(f"fp32 matmul peak of this machine: {peak:.1f} GFLOP/s (2048^3 products)")
    say("forward+backward:")
    fwd = bench_fwd_bwd(cfg, mechanisms, device, say)
    say("incremental step:")
    step = bench_step(cfg, mechanisms, device, say)
    add_roofline(fwd, peak)

    write_rows_csv(out_dir / "fwd_bwd.csv", fwd)
    write_rows_csv(out_dir / "step.csv", step)
    plot(out_dir / "attention_bench.png", fwd, step)
    meta = {"config": config_to_dict(cfg), "device": str(device), "cpu": cpu, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "matmul_peak_gflops": peak}
    write_json(out_dir / "bench.json", meta)
    say("")
    say(format_tables(fwd, step))
    say(f"wrote {out_dir}/fwd_bwd.csv, step.csv, attention_bench.png, bench.json")
    return {"fwd_bwd": fwd, "step": step, "matmul_peak_gflops": peak}


COMMAND = Command("bench-attention", "time and measure attention mechanisms against SDPA",
                  BenchAttentionConfig, run, __doc__, aliases=("bench",))

if __name__ == "__main__":
    sys.exit(COMMAND.main())
