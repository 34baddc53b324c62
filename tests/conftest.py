"""Shared test helpers: plain O(L^2) attention references and a token-by-token driver."""

from __future__ import annotations

import math

import torch


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


def visibility(tokens: int, window: int | None, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """(B or 1, T, T) bool: query i may see key j (causal, inside the window, key not padded)."""
    i = torch.arange(tokens)[:, None]
    j = torch.arange(tokens)[None, :]
    vis = j <= i
    if window is not None:
        vis = vis & (i - j < window)
    vis = vis[None]
    if pad_mask is not None:
        vis = vis & ~pad_mask[:, None, :]
    return vis


def reference_softmax(q, k, v, window=None, pad_mask=None):
    """softmax(QK^T / sqrt(d)) with an explicit causal (window, padding) mask; empty rows give 0."""
    T = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    vis = visibility(T, window, pad_mask)[:, None]  # (B|1, 1, T, T)
    scores = scores.masked_fill(~vis, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ v


def cosformer_weights(q, k, max_distance, window=None, pad_mask=None):
    """Explicit (B,H,T,T) cosFormer weights relu(q_i).relu(k_j) cos(pi/2 (i-j)/M), masked."""
    T = q.shape[-2]
    i = torch.arange(T, dtype=q.dtype)[:, None]
    j = torch.arange(T, dtype=q.dtype)[None, :]
    cos = torch.cos(math.pi / 2 * (i - j) / max_distance)
    w = torch.relu(q) @ torch.relu(k).transpose(-1, -2) * cos
    vis = visibility(T, window, pad_mask)[:, None]
    return w * vis.to(q.dtype)


def reference_cosformer(q, k, v, max_distance, window=None, pad_mask=None, eps=1e-6):
    """sum_j w_ij v_j / max(sum_j w_ij, eps) with the explicit weight matrix."""
    w = cosformer_weights(q, k, max_distance, window, pad_mask)
    return (w @ v) / w.sum(-1, keepdim=True).clamp_min(eps)


def run_steps(attn, q, k, v):
    """Feed (B,H,T,·) tensors through ``attn.step`` one token at a time; returns (B,H,T,Dv)."""
    B, H, T, D = q.shape
    state = attn.init_state(B, H, D, v.shape[-1], device=q.device, dtype=q.dtype)
    outs = []
    for t in range(T):
        out, state = attn.step(q[:, :, t], k[:, :, t], v[:, :, t], state)
        outs.append(out)
    return torch.stack(outs, dim=2)
