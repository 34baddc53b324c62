"""cosFormer attention (Qin et al. 2022) with a fixed cos horizon M, chunkwise training and O(1) steps."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dt_attn.attention.base import Attention, Capabilities, register
from dt_attn.attention.window import (
    RingLayout,
    check_window,
    ring_capacity,
    ring_distances,
    ring_fits,
    ring_layout,
    step_in_pieces,
)
from dt_attn.checks import check_positive_int
from dt_attn.ops.cosformer import (
    check_distance,
    cos_features,
    cosformer_attention,
    distance_weights,
    rotations_from,
)
from dt_attn.ops.reference import cosformer_weights


@dataclass
class CosformerState:
    """Recurrent state per head at a position: without a window, the cos and sin key-value sums
    stacked (2d x dv) and their key sums (2d); with one, a ring buffer holding (at least) the
    window's ReLU'd keys and values (re-summed each step: exact, no add/subtract drift)."""

    position: int = 0  # position of the next token
    kv: torch.Tensor | None = None  # (batch, heads, 2*head_dim, value_dim)
    k_sum: torch.Tensor | None = None  # (batch, heads, 2*head_dim)
    key_buffer: torch.Tensor | None = None  # (batch, heads, ring_capacity(window), head_dim)
    value_buffer: torch.Tensor | None = None  # (batch, heads, ring_capacity(window), value_dim)


@register("cosformer")
class CosformerAttention(Attention):
    """Linear attention with ReLU features and cos(pi/2 * (i-j)/M) re-weighting of distance i-j."""

    OPTIONS: ClassVar[dict[str, Any]] = {"max_distance": 4096, "chunk_size": 64, "window": None, "eps": 1e-6}
    capabilities = Capabilities(
        kind="qkv", window=True, sizes=("chunk_size",), distance="max_distance",
        training_cost="O(T c d) chunkwise, c = chunk_size",
        state="2 d x d_v matrices and 2 d-vectors per head (a ring of the window's features with a window)",
        step_cost="O(d d_v), O(window d) with a window")

    def __init__(
        self,
        max_distance: int = 4096,
        chunk_size: int = 64,
        window: int | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        check_positive_int("max_distance", max_distance)
        check_positive_int("chunk_size", chunk_size)
        check_window(window)
        if window is not None and window > max_distance + 1:
            raise ValueError(
                f"window={window} spans distances up to {window - 1} > max_distance={max_distance}; "
                f"use window <= max_distance + 1 or raise max_distance"
            )
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive float, got {eps!r}")
        self.max_distance = max_distance
        self.chunk_size = chunk_size
        self.window = window
        self.eps = float(eps)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Chunkwise-parallel causal cosFormer; padded queries output zeros."""
        return cosformer_attention(
            q,
            k,
            v,
            max_distance=self.max_distance,
            chunk_size=self.chunk_size,
            eps=self.eps,
            window=self.window,
            pad_mask=pad_mask,
        )

    def weights(self, q: torch.Tensor, k: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised re-weighted products (``dt_attn.ops.reference.cosformer_weights``)."""
        return cosformer_weights(q, k, max_distance=self.max_distance, chunk_size=self.chunk_size,
                                 window=self.window, eps=self.eps, pad_mask=pad_mask)

    last_query_only = True

    def forward_last(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The last query's weighted average over every key it sees: O(tokens * (d + dv)) per head."""
        T = k.shape[2]
        if self.window is not None and self.window < T:
            k, v = k[:, :, -self.window :], v[:, :, -self.window :]
        check_distance(k.shape[2] - 1, self.max_distance)
        distance = torch.arange(k.shape[2] - 1, -1, -1, device=q.device)
        weights = distance_weights(distance, distance >= 0, self.max_distance, q.dtype)
        w = torch.matmul(torch.relu(q[:, :, -1:]), torch.relu(k).transpose(-1, -2)).mul_(weights)
        return torch.matmul(w, v) / w.sum(-1, keepdim=True).clamp_min(self.eps)

    def init_state(
        self,
        batch: int,
        heads: int,
        head_dim: int,
        value_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> CosformerState:
        """Zero sums at position 0 (an empty ring buffer when windowed)."""
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(batch, heads, *shape, device=device, dtype=dtype)

        if self.window is None:
            return CosformerState(kv=zeros(2 * head_dim, value_dim), k_sum=zeros(2 * head_dim))
        cap = ring_capacity(self.window)
        return CosformerState(key_buffer=zeros(cap, head_dim), value_buffer=zeros(cap, value_dim))

    def step(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: CosformerState
    ) -> tuple[torch.Tensor, CosformerState]:
        """Consume one token: O(d * dv) per head whatever the prefix (O(window * (d + dv)) when windowed).

        Meant for inference: a window's ring buffer is updated in place.
        """
        out, state = self.step_many(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2), state)
        return out.squeeze(2), state

    def step_many(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: CosformerState
    ) -> tuple[torch.Tensor, CosformerState]:
        """n tokens at once: the recurrent sums (or the ring buffer) plus causal attention among
        the n new tokens, in a handful of batched ops."""
        n, pos = q.shape[2], state.position
        if n == 0:
            return super().step_many(q, k, v, state)
        if self.window is not None:
            if not ring_fits(n):
                return step_in_pieces(self.step_many, q, k, v, state)
            return self._step_window(q, k, v, state)
        check_distance(pos + n - 1, self.max_distance)
        assert state.kv is not None and state.k_sum is not None
        rot = rotations_from(pos, n, self.max_distance, q.dtype, q.device)
        qf = cos_features(q, rot)  # (B, H, n, 2d)
        kf = cos_features(k, rot)
        if n == 1:  # a single token sees the whole updated sums: fold it in first, no mixing term
            kv = state.kv + torch.matmul(kf.transpose(-1, -2), v)
            k_sum = state.k_sum + kf.squeeze(2)
            num = torch.matmul(qf, kv)
            den = torch.matmul(qf, k_sum.unsqueeze(-1))
            return num / den.clamp_min(self.eps), CosformerState(pos + 1, kv=kv, k_sum=k_sum)
        w = torch.matmul(qf, kf.transpose(-1, -2)).tril()  # among the new tokens, causal
        num = torch.matmul(qf, state.kv) + torch.matmul(w, v)
        den = torch.matmul(qf, state.k_sum.unsqueeze(-1)).squeeze(-1) + w.sum(-1)
        kv = state.kv + torch.matmul(kf.transpose(-1, -2), v)
        k_sum = state.k_sum + kf.sum(2)
        return num / den.clamp_min(self.eps).unsqueeze(-1), CosformerState(pos + n, kv=kv, k_sum=k_sum)

    def _step_window(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: CosformerState
    ) -> tuple[torch.Tensor, CosformerState]:
        """The windowed step: the new ReLU'd keys and values join the ring, then each new query
        weighs the slots it sees by relu(q).relu(k) * cos(pi/2 * distance / M), as in the
        single-chunk parallel form (half the width of the 2d cos/sin features)."""
        kbuf, vbuf = state.key_buffer, state.value_buffer
        assert kbuf is not None and vbuf is not None and self.window is not None
        n, pos = q.shape[2], state.position
        layout = ring_layout(pos, self.window, n, q.device)
        kbuf.index_copy_(2, layout.slots, torch.relu(k))
        vbuf.index_copy_(2, layout.slots, v)
        # Re-summed over the ring each call: exact, no add/subtract drift.
        weights = _ring_weights(layout, self.max_distance, q.dtype)
        w = torch.matmul(torch.relu(q), kbuf.transpose(-1, -2)).mul_(weights)
        out = torch.matmul(w, vbuf) / w.sum(-1, keepdim=True).clamp_min(self.eps)
        return out, CosformerState(pos + n, key_buffer=kbuf, value_buffer=vbuf)


def _ring_weights(layout: RingLayout, max_distance: int, dtype: torch.dtype) -> torch.Tensor:
    """(n, capacity) distance weighting of a ring layout, zero on the slots a query does not see."""
    return _ring_weights_cached(layout.key, max_distance, dtype)


@functools.lru_cache(maxsize=1024)
def _ring_weights_cached(key: tuple, max_distance: int, dtype: torch.dtype) -> torch.Tensor:
    layout = ring_layout(*key)  # the canonical position is its own canonical form: a cache hit
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for backward later
        return distance_weights(ring_distances(layout), layout.visible, max_distance, dtype)
