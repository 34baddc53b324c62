"""Attention Free Transformer (Zhai et al. 2021), causal: ``aft-simple`` and ``aft-local``.

    y_t = sigmoid(q_t) * sum_{s<=t} exp(k_s + w_{t-s}) v_s / sum_{s<=t} exp(k_s + w_{t-s})

elementwise over channels (so value_dim = head_dim). ``aft-simple``: w = 0, a running weighted average whose
rollout state is one triple (max logit, two sums) per channel. ``aft-local``: learned biases w_l for the lags
l < ``local_window`` (one per lag, shared by heads and channels, initialised at 0 so that it starts as
aft-simple), w = 0 beyond: distant tokens still count through exp(k_s), as the paper's AFT-local. Only
relative positions enter, so the weights mean the same at every episode position. The paper's AFT-full has
T x T biases tied to absolute positions and is left out: a rollout that slides could not use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dt_attn.attention.base import Attention, Capabilities, register
from dt_attn.checks import check_positive_int
from dt_attn.ops.aft import Prefix, aft_causal, combine, empty_logit
from dt_attn.ops.reference import aft_reference


@dataclass
class AftState:
    """Incremental AFT state: the prefix triple of every token older than the local window (all tokens for
    aft-simple), the last ``local_window - 1`` keys and values, and the position of the next token."""

    prefix: Prefix  # each (B, H, D)
    keys: Tensor  # (B, H, local_window - 1, D); empty for aft-simple
    values: Tensor
    position: int = 0


class _Aft(Attention):
    """What both variants share: the elementwise running average and its one-token step."""

    last_query_only = True

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("bias", None)  # AFT-local's w_0 .. w_{L-1}; none for AFT-simple

    def forward(self, q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Parallel causal AFT (a prefix scan); padded queries output zeros."""
        return aft_causal(q, k, v, self.bias, pad_mask)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """The explicit per-channel weights times v (``dt_attn.ops.reference.aft_reference``)."""
        return aft_reference(q, k, v, self.bias, pad_mask)

    def forward_last(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The last query's output, from the explicit weights of one row: O(T d)."""
        T = k.shape[2]
        lag = torch.arange(T - 1, -1, -1, device=k.device)
        logits = k if self.bias is None else k + self._lag_bias(lag, k.dtype)[:, None]
        w = torch.softmax(logits, dim=2)  # over the keys, per channel
        return torch.sigmoid(q[:, :, -1:]) * (w * v).sum(2, keepdim=True)

    def _lag_bias(self, lag: Tensor, dtype: torch.dtype) -> Tensor:
        """w at each lag (0 at and beyond local_window)."""
        assert self.bias is not None
        L = self.bias.shape[0]
        return torch.where(lag < L, self.bias.to(dtype)[lag.clamp_max(L - 1)], 0.0)

    def init_state(self, batch: int, heads: int, head_dim: int, value_dim: int,
                   device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> AftState:
        """An empty prefix and an empty local window."""
        if value_dim != head_dim:
            raise ValueError(f"AFT is elementwise: value_dim ({value_dim}) must equal head_dim ({head_dim})")
        zeros = torch.zeros(batch, heads, head_dim, device=device, dtype=dtype)
        keep = 0 if self.bias is None else self.bias.shape[0] - 1
        ring = torch.zeros(batch, heads, keep, head_dim, device=device, dtype=dtype)
        return AftState(Prefix(torch.full_like(zeros, empty_logit(dtype)), zeros, zeros), ring, ring)

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: AftState) -> tuple[Tensor, AftState]:
        """One token: O(d) for aft-simple, O(local_window d) for aft-local."""
        if self.bias is None:
            prefix = combine(state.prefix, Prefix(k, v, torch.ones_like(k)))
            return torch.sigmoid(q) * prefix.n / prefix.d, AftState(prefix, state.keys, state.values,
                                                                    state.position + 1)
        keys = torch.cat((state.keys, k[:, :, None]), dim=2)  # the last L tokens (fewer at the start)
        values = torch.cat((state.values, v[:, :, None]), dim=2)
        L, pos = self.bias.shape[0], state.position
        seen = min(pos + 1, L)
        window = Prefix(keys[:, :, L - seen :] + self.bias[:seen].flip(0).to(k.dtype)[:, None],
                        values[:, :, L - seen :], torch.ones_like(keys[:, :, L - seen :]))
        total = combine(state.prefix, _fold(window))
        out = torch.sigmoid(q) * total.n / total.d
        prefix = state.prefix
        if pos + 1 >= L:  # the oldest of the window leaves it: it now counts without a bias
            prefix = combine(prefix, Prefix(keys[:, :, 0], values[:, :, 0], torch.ones_like(k)))
        return out, AftState(prefix, keys[:, :, 1:], values[:, :, 1:], pos + 1)


def _fold(tokens: Prefix) -> Prefix:
    """The prefix triple of tokens (B, H, n, D) on dim 2, at once."""
    m = tokens.m.amax(2)
    w = torch.exp(tokens.m - m[:, :, None]) * tokens.d
    return Prefix(m, (w * tokens.n).sum(2), w.sum(2))


@register("aft-simple")
class AftSimple(_Aft):
    """Causal AFT-simple: sigmoid(q_t) times the exp(k)-weighted average of the values so far."""

    OPTIONS: ClassVar[dict[str, Any]] = {}
    capabilities = Capabilities(
        kind="qkv", elementwise=True, training_cost="O(T d log T), a prefix scan",
        state="one (max logit, weighted sum, weight sum) triple per channel", step_cost="O(d)")


@register("aft-local")
class AftLocal(_Aft):
    """Causal AFT-local: learned relative biases w_l for the last ``local_window`` lags, 0 beyond."""

    OPTIONS: ClassVar[dict[str, Any]] = {"local_window": 8}
    capabilities = Capabilities(
        kind="qkv", elementwise=True, sizes=("local_window",),
        training_cost="O(T d (log T + local_window))",
        state="the triple of the tokens older than the local window; the last local_window - 1 keys, "
              "values",
        step_cost="O(local_window d)")

    def __init__(self, local_window: int = 8) -> None:
        super().__init__()
        check_positive_int("local_window", local_window,
                           meaning="the lags with a learned bias, lag 0 included")
        self.bias = nn.Parameter(torch.zeros(local_window))
