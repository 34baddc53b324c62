"""What the benchmarks share: the machine they ran on, a fresh process per cell, peak memory, ``--quick``, and
the agent workload (a HalfCheetah-sized Decision Transformer trained on random trajectories)."""

from __future__ import annotations

import multiprocessing
import re
import resource
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from agents.model import DecisionTransformer, DTConfig, attention_options_for
from agents.results import cpu_description
from agents.sampler import Batch, SegmentSampler
from dt_attn import TransformerConfig, available_attentions

C = TypeVar("C")
STATE_DIM, ACT_DIM = 17, 6  # HalfCheetah's sizes


def with_quick(cfg: C, quick: dict[str, Any]) -> C:
    """``cfg`` with the ``quick`` sizes (a smoke run) for every field still at its default."""
    defaults = type(cfg)()
    return replace(cfg, **{k: v for k, v in quick.items() if getattr(cfg, k) == getattr(defaults, k)})


def prepare(cfg: C, quick: dict[str, Any]) -> tuple[C, Path]:
    """What every benchmark does first: ``cfg`` with its ``--quick`` sizes applied when asked, torch's
    threads set from ``cfg.threads`` (0 keeps torch's default), and ``cfg.out_dir`` created."""
    if cfg.quick:
        cfg = with_quick(cfg, quick)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return cfg, out


def machine(device: torch.device) -> dict[str, Any]:
    """What the timings were taken on: CPU, torch threads, device and GPU name."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu_description(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": str(device), "gpu": gpu}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock reading after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh process, so that its peak memory is its own (``fn`` must be picklable)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise RuntimeError("the worker process died (killed for memory?)") from None


def _status_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if not match:
        raise OSError(f"{key} missing from /proc/self/status")
    return int(match.group(1))


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Yields a dict that holds, after the block, its peak memory above the level just before it
    (``peak``: CUDA allocator or process RSS) and how that was measured (``method``)."""
    result: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result.update(peak=torch.cuda.max_memory_allocated(device) - base, method="cuda max_memory_allocated")
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
        base, exact = _status_kib("VmRSS") * 1024, True
    except OSError:  # no /proc: the lifetime high-water mark can only show growth
        base, exact = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False
    yield result
    if exact:
        result.update(peak=_status_kib("VmHWM") * 1024 - base, method="peak RSS above baseline (VmHWM reset)")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        result.update(peak=peak, method="ru_maxrss growth (lower bound)")


# ----------------------------------------------------------------------------- the agent workload
@dataclass
class AgentBenchConfig:
    """The Decision Transformers an agent benchmark builds (its own config adds what it measures)."""

    attentions: list[str] = field(default_factory=available_attentions, metadata={
        "help": "attentions to build (default: every registered one)"})
    embed_dim: int = 128
    n_layers: int = 3
    n_heads: int = 1
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)"})
    seed: int = 0


def dt_config(cfg: AgentBenchConfig, attention: str, context: int, *, state_dim: int = STATE_DIM,
              act_dim: int = ACT_DIM, max_ep_len: int = 1000, dropout: float = 0.1) -> DTConfig:
    """The benchmark's Decision Transformer for ``attention`` at context ``context`` (options as training
    sets them)."""
    stack = TransformerConfig(embed_dim=cfg.embed_dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                              dropout=dropout, attention=attention,
                              attention_options=attention_options_for(attention, {}, context))
    return DTConfig(state_dim=state_dim, act_dim=act_dim, context=context, max_ep_len=max_ep_len,
                    transformer=stack)


def synthetic_sampler(context: int, seed: int) -> SegmentSampler:
    """K-step segments of 40 random HalfCheetah-sized episodes of 200 to 1000 steps."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(200, 1001, size=40)
    obs = [rng.normal(size=(n, STATE_DIM)).astype(np.float32) for n in lengths]
    act = [rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32) for n in lengths]
    rew = [rng.normal(size=n).astype(np.float32) for n in lengths]
    return SegmentSampler(obs, act, rew, context, np.zeros(STATE_DIM), np.ones(STATE_DIM), 1000.0, 1000, seed)


def training_step(model: DecisionTransformer, precision: str = "fp32") -> Callable[[Batch], None]:
    """One training step of ``model`` on a batch, as `dt-attn train` takes it (AdamW, clipped gradients)."""
    from agents.trainer import action_loss, training_autocast

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    autocast = training_autocast(precision, next(model.parameters()).device)

    def step(batch: Batch) -> None:
        with autocast:
            loss = action_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    return step


def steps_per_second(step: Callable[[Batch], None], sampler: SegmentSampler, batch: int, warmup: int,
                     timed: int, device: torch.device) -> tuple[float, int]:
    """Training steps per second of ``step`` over ``timed`` batches after ``warmup`` >= 1 untimed ones, and
    the counted matrix FLOPs of one step (the first warm-up step's, as the roofline module counts them)."""
    from experiments.benchmarks.roofline import count_flops

    batches = [sampler.sample(batch).to(device) for _ in range(max(warmup, 1) + timed)]
    _, flops = count_flops(step, batches[0])
    for b in batches[1:max(warmup, 1)]:
        step(b)
    sync(device)
    t0 = time.perf_counter()
    for b in batches[max(warmup, 1):]:
        step(b)
    sync(device)
    return timed / (time.perf_counter() - t0), flops
