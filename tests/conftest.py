"""Shared test helpers: random inputs, a token-by-token driver, and the shape grid the attention
property tests run every mechanism over; an untrained Hopper rollout's settings and a one-thread fixture.
The O(T^2) reference forms live in dt_attn.ops.reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.evaluation import RolloutSettings
from dt_attn import capabilities

# Block sizes: Combiner's span, cosFormer's chunk size (softmax has neither; its windows still vary).
SIZES = [1, 2, 3, 5]
# window // size runs over 0..MAX_RATIO (a window shorter than one block up to MAX_RATIO blocks back).
MAX_RATIO = 8


def random_qkv(
    batch: int = 2,
    heads: int = 2,
    tokens: int = 10,
    dim: int = 4,
    value_dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random q, k (B,H,T,D) and v (B,H,T,Dv) from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    dv = dim if value_dim is None else value_dim
    q = torch.randn(batch, heads, tokens, dim, generator=g, dtype=dtype)
    k = torch.randn(batch, heads, tokens, dim, generator=g, dtype=dtype)
    v = torch.randn(batch, heads, tokens, dv, generator=g, dtype=dtype)
    return q, k, v


def run_steps(attn, q, k, v):
    """Feed (B,H,T,·) tensors through ``attn.step`` one token at a time; returns (B,H,T,Dv)."""
    B, H, T, D = q.shape
    state = attn.init_state(B, H, D, v.shape[-1], device=q.device, dtype=q.dtype)
    outs = []
    for t in range(T):
        out, state = attn.step(q[:, :, t], k[:, :, t], v[:, :, t], state)
        outs.append(out)
    return torch.stack(outs, dim=2)


def mechanism_options(name: str, size: int, window: int | None, length: int) -> dict:
    """Options of ``name`` with its structural lengths (the options its capabilities name ``sizes``) set to
    ``size`` and its sliding window, if it has one, to ``window``."""
    caps = capabilities(name)
    opts = {key: size for key in caps.sizes}
    if caps.distance:  # long enough for the whole sequence, short enough to weigh distance
        opts[caps.distance] = max(length, window or 0)
    if window is not None and caps.window:
        opts["window"] = window
    return opts


def value_dim(name: str, wanted: int, head_dim: int) -> int:
    """``wanted``, or ``head_dim`` for a mechanism that is elementwise over channels (AFT)."""
    return head_dim if capabilities(name).elementwise else wanted


def window_grid(size: int) -> list[tuple[int | None, int]]:
    """(window, length) pairs: no window, window // size = 0..MAX_RATIO with varying remainders,
    and a window longer than the sequence. Lengths run a few blocks past the window and are mostly
    not multiples of ``size``."""
    grid = [(None, 4 * size + 3)]
    for ratio in range(MAX_RATIO + 1):
        window = ratio * size + ratio % size
        if window >= 1:
            grid.append((window, window + 2 * size + 1 + ratio % 3))
    grid.append((3 * size + 4, 2 * size + 1))
    return grid


def mechanism_grid(name: str, size: int) -> list[tuple[int | None, int]]:
    """``window_grid(size)`` for a mechanism with a sliding window; without one, only lengths shorter than,
    equal to a multiple of and past several of its sizes (the windows would repeat the same cell)."""
    if capabilities(name).window:
        return window_grid(size)
    return [(None, length) for length in (2 * size + 1, 3 * size, 4 * size + 3, 9 * size + 2)]


#: A rollout of an untrained Hopper policy: identity normalization, the environment's own limits.
HOPPER = RolloutSettings(env_id="Hopper-v4", env_name="hopper", observe="full",
                         state_mean=np.zeros(11, np.float32), state_std=np.ones(11, np.float32),
                         rtg_scale=1000.0, targets=[1800.0], max_episode_steps=1000)


@pytest.fixture
def one_thread():
    """One torch thread for the test: on tiny tensors more threads only contend on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
