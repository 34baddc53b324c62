"""Counted matrix work and the roofline every benchmark reports beside its times.

A step's *counted work* is the FLOPs of its matrix products (2 per multiply-add) as torch's FlopCounterMode
sees them when the step runs: every ``mm``/``bmm``/``matmul``, forward and backward; elementwise work
(softmax, feature maps, cumulative sums) is not counted. CPU SDPA's fused kernel, which FlopCounterMode
does not know, is counted here as the products it needs (and the in-place ``addmm_``/``baddbmm_`` as their
out-of-place forms): with ``is_causal`` only the visible (query, key)
pairs, so causal softmax attention over T tokens counts T(T+1)/2 pairs (4 FLOPs per pair and dimension
forward, QK^T and PV; twice that backward: dV, dP, dQ, dK; the kernel's recomputed scores are not counted).

The *roofline fraction* of a timed step is counted FLOPs / seconds / the machine's matmul peak, measured
once per run on large square fp32 products: how close the implementation comes to the rate at which this
machine multiplies matrices at all. A mechanism with little counted work and a low fraction is slow for
its elementwise work or its many small products, not for its arithmetic."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from dt_attn import build_attention
from experiments.benchmarks.common import sync

aten = torch.ops.aten


def visible_pairs(queries: int, keys: int, causal: bool) -> int:
    """(query, key) pairs attention computes: all of them, or with a causal mask (query i sees keys j <= i,
    torch's top-left alignment) sum_i min(i + 1, keys)."""
    if not causal:
        return queries * keys
    full = min(queries, keys)  # queries 0 .. full-1 see i + 1 keys, the rest every key
    return full * (full + 1) // 2 + (queries - full) * keys


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, dropout_p=0.0, is_causal=False, *args,
                    out_shape=None, **kwargs) -> int:
    """QK^T and PV over the visible pairs: 2 products x 2 FLOPs per pair and dimension."""
    b, h, s_q, d = query_shape
    pairs = visible_pairs(s_q, key_shape[-2], bool(is_causal))
    return 2 * b * h * pairs * (d + value_shape[-1])


def _cpu_sdpa_backward_flops(grad_shape, query_shape, key_shape, value_shape, out_shape_, lse_shape,
                             dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs) -> int:
    """dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q over the visible pairs: twice the forward."""
    return 2 * _cpu_sdpa_flops(query_shape, key_shape, value_shape, dropout_p, is_causal)


def _addmm_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """input + A @ B, in place: 2 m k n (the addition is not counted)."""
    return 2 * a_shape[-2] * a_shape[-1] * b_shape[-1]


def _baddbmm_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """input + A @ B batched, in place: 2 b m k n."""
    return a_shape[0] * _addmm_flops(self_shape, a_shape, b_shape)


# What FlopCounterMode does not count by itself: CPU SDPA, and the in-place forms of addmm and baddbmm.
_UNCOUNTED = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
              aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
              aten.addmm_: _addmm_flops, aten.baddbmm_: _baddbmm_flops}


def count_flops(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    """``fn(*args)`` run once under the counter: its result and the counted matrix FLOPs it did (forward
    and, if ``fn`` calls it, backward)."""
    counter = FlopCounterMode(display=False, custom_mapping=_UNCOUNTED)
    with counter:
        result = fn(*args)
    return result, counter.get_total_flops()


def attention_flops(name: str, options: dict[str, Any], batch: int, heads: int, tokens: int, head_dim: int,
                    value_dim: int | None = None) -> int:
    """Counted FLOPs of one forward+backward of attention ``name`` (built with ``options``) over random
    (batch, heads, tokens, head_dim) queries, keys and values, the gradient reaching all three: the one
    count of a mechanism at a shape (the benchmarks count their own timed calls the same way)."""
    g = torch.Generator().manual_seed(0)
    dims = (head_dim, head_dim, value_dim or head_dim)
    q, k, v = (torch.randn(batch, heads, tokens, d, generator=g).requires_grad_() for d in dims)
    attn = build_attention(name, **options)
    return count_flops(lambda: attn(q, k, v).sum().backward())[1]


def matmul_peak_gflops(size: int = 2048, seconds: float = 1.0, dtype: torch.dtype = torch.float32,
                       device: torch.device | str = "cpu") -> float:
    """The device's matrix-multiply rate (GFLOP/s) in ``dtype`` on (size x size) square products: the
    practical peak the roofline fraction divides by."""
    device = torch.device(device)
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b  # warm-up
    sync(device)
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        runs += 1
        if device.type == "cuda" and runs % 10 == 0:
            sync(device)  # keep the queue short, so that the clock check sees the work done
    sync(device)
    return 2 * size**3 * runs / (time.perf_counter() - t0) / 1e9


def peak_fraction(flops: float | None, seconds: float | None, peak_gflops: float) -> float | None:
    """Achieved matrix rate over the peak: flops / seconds / peak (None when either is unknown)."""
    if flops is None or not seconds or math.isnan(seconds):
        return None
    return flops / seconds / (peak_gflops * 1e9)
