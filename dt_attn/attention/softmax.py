"""Standard causal softmax attention: fused SDPA for training, a KV cache for rollouts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dt_attn.attention.base import Attention, Capabilities, register
from dt_attn.attention.window import check_window, ring_capacity, ring_fits, ring_layout, step_in_pieces
from dt_attn.ops.reference import softmax_weights

# The KV cache grows by this many slots at a time (when there is no window).
_CACHE_GROWTH = 256


@dataclass
class KVCache:
    """Incremental state of softmax attention: cached keys/values and the tokens seen so far."""

    keys: torch.Tensor  # (batch, heads, capacity, head_dim)
    values: torch.Tensor  # (batch, heads, capacity, value_dim)
    length: int = 0  # tokens consumed so far


@register("softmax")
class SoftmaxAttention(Attention):
    """Causal scaled dot-product attention, optionally restricted to a sliding window."""

    OPTIONS: ClassVar[dict[str, Any]] = {"window": None}
    capabilities = Capabilities(
        kind="qkv", window=True, drops_probabilities=True, training_cost="O(T^2 d), fused kernel",
        state="KV cache (a ring of window + 7 slots with a window)",
        step_cost="O(t d), O(window d) with a window")

    def __init__(self, window: int | None = None) -> None:
        super().__init__()
        check_window(window)
        self.window = window

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Parallel causal attention; padded queries output zeros. In training, each attention probability
        is dropped with probability ``attention_dropout`` and the rest scaled by 1 / (1 - p) (SDPA's
        dropout_p, as GPT-2's attn_pdrop); the rollout's forms never drop."""
        T = q.shape[-2]
        p = self.attention_dropout if self.training else 0.0
        if pad_mask is None and (self.window is None or self.window >= T):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)

        idx = torch.arange(T, device=q.device)
        dist = idx[:, None] - idx[None, :]  # query i - key j
        allowed = dist >= 0
        if self.window is not None:
            allowed = allowed & (dist < self.window)
        if pad_mask is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)

        pad = pad_mask.to(device=q.device, dtype=torch.bool)
        pad_tok = pad[:, None, :, None]  # (B, 1, T, 1)
        # Padded slots may hold garbage (even inf/nan): zero them so they cannot leak through 0 * x.
        k = torch.where(pad_tok, 0.0, k)
        v = torch.where(pad_tok, 0.0, v)
        mask = allowed[None] & ~pad[:, None, :]  # (B, T, T)
        # A padded query may see no unpadded key at all; let it see itself (a zeroed key) so that
        # the softmax stays finite, then zero its output below.
        eye = torch.eye(T, dtype=torch.bool, device=q.device)
        mask = (mask | (eye[None] & pad[:, :, None]))[:, None]  # (B, 1, T, T)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return torch.where(pad_tok, 0.0, out)

    def weights(self, q: torch.Tensor, k: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) over the visible keys (``dt_attn.ops.reference.softmax_weights``)."""
        return softmax_weights(q, k, window=self.window, pad_mask=pad_mask)

    last_query_only = True

    def forward_last(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The last query against every key (all of them within its causal window)."""
        if self.window is not None and self.window < k.shape[2]:
            k, v = k[:, :, -self.window :], v[:, :, -self.window :]
        return F.scaled_dot_product_attention(q[:, :, -1:], k, v)

    def init_state(
        self,
        batch: int,
        heads: int,
        head_dim: int,
        value_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> KVCache:
        """An empty KV cache (a ring buffer of ``ring_capacity(window)`` slots when windowed)."""
        cap = ring_capacity(self.window) if self.window is not None else _CACHE_GROWTH
        return KVCache(
            keys=torch.zeros(batch, heads, cap, head_dim, device=device, dtype=dtype),
            values=torch.zeros(batch, heads, cap, value_dim, device=device, dtype=dtype),
        )

    def step(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: KVCache
    ) -> tuple[torch.Tensor, KVCache]:
        """Append one token to the cache and attend over the cached (windowed) prefix.

        Meant for inference: the cache is updated in place.
        """
        out, state = self.step_many(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2), state)
        return out.squeeze(2), state

    def step_many(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: KVCache
    ) -> tuple[torch.Tensor, KVCache]:
        """n tokens at once: the new keys join the cache (in place), then one attention over the
        cache under a causal (windowed) mask."""
        n, pos = q.shape[2], state.length
        if n == 0:
            return super().step_many(q, k, v, state)
        if self.window is not None:
            if not ring_fits(n):
                return step_in_pieces(self.step_many, q, k, v, state)
            layout = ring_layout(pos, self.window, n, q.device)
            state.keys.index_copy_(2, layout.slots, k)
            state.values.index_copy_(2, layout.slots, v)
            out = F.scaled_dot_product_attention(q, state.keys, state.values, attn_mask=layout.visible)
            return out, KVCache(keys=state.keys, values=state.values, length=pos + n)
        keys, values = state.keys, state.values
        if pos + n > keys.shape[2]:
            grow = max(_CACHE_GROWTH, keys.shape[2], n)  # doubling keeps total copying linear
            keys = torch.cat([keys, keys.new_zeros(*keys.shape[:2], grow, keys.shape[3])], 2)
            values = torch.cat([values, values.new_zeros(*values.shape[:2], grow, values.shape[3])], 2)
        keys[:, :, pos : pos + n] = k
        values[:, :, pos : pos + n] = v
        keys_at = torch.arange(pos + n, device=q.device)
        visible = keys_at[None, :] <= pos + torch.arange(n, device=q.device)[:, None]
        out = F.scaled_dot_product_attention(q, keys[:, :, : pos + n], values[:, :, : pos + n],
                                             attn_mask=visible)
        return out, KVCache(keys=keys, values=values, length=pos + n)
