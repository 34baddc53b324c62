"""Combiner attention modules (Ren et al. 2021): ``combiner-fixed`` and ``combiner-logsparse``.

Combiner treats attention as a conditional expectation and factorises the distribution of a
query ``i`` over earlier tokens ``j``: tokens of the query's own block (``span`` tokens) are
attended directly, every earlier region ``r`` through its summary, and one softmax partition
function covers both kinds of logit:

    out_i = (sum_{j in own block, j <= i} e^{q_i.k_j/s} v_j + sum_r e^{q_i.kbar_r/s} vbar_r) / Z_i

with ``s = sqrt(head_dim)``. The implied attention on token ``j`` of region ``r`` is
``softmax_weight(r) * p(j|r)``, so every row is a full causal distribution over all earlier tokens.

Region summaries (the choice and why): ``kbar_r`` is the elementwise max of the region's keys and
``vbar_r = sum_j p(j|r) v_j`` with ``p(j|r) = softmax_j(qbar_r . k_j / s)``, ``qbar_r`` being the
elementwise max of the region's *queries*. This is what the authors' reference code does for its
Fixed ("sqrtn") and Logsparse ("logn") layers. It needs no extra parameters (the interface passes
projected q, k, v only), it is independent of the attending query (summaries are computed once
and cached), and, unlike pooling the keys twice, it lets the region "ask" a query-like question
of its own tokens. The price: a merged logsparse group has a new ``qbar``, so its summary cannot
be assembled from its halves' summaries; the incremental logsparse form keeps the keys/values of
completed blocks (like a softmax KV cache) and summarises a group once, when its last block
closes. Without a window each block is summarised once per level, so the amortised cost stays
O(span + log(blocks)) per step, although the step that completes a group of 2**l blocks does
O(2**l * span) work.

* ``combiner-fixed`` (options ``span``, ``window``): one region per earlier block.
  O(T * span + T^2 / span) = O(T sqrt T) with the default span ceil(sqrt(T)). With ``window``,
  a block's summary is seen only from blocks starting at most ``window`` tokens after it; the
  incremental form then keeps only the last ``window // span`` summaries (constant cost per step).
* ``combiner-logsparse`` (options ``span``, ``window``): the earlier blocks ``[0, b)`` are covered by
  aligned dyadic groups of blocks following the binary digits of ``b`` (largest first, like a
  Fenwick tree), one region per group: at most log2(blocks) regions per query. With ``window``,
  the n = min(b, window // span) blocks before b (those Fixed would show) are grouped the same way
  from the window's start: groups of the sizes of n's binary digits, largest first. A block of a
  training segment (which starts at position 0) sees its n earlier blocks grouped the same way, so
  the regions keep the shapes training saw. The groups move with the window, so the incremental
  form re-summarises them (O(window) work) each time a block closes, keeping only the keys/values
  of those n blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from dt_attn.attention.base import Attention, Capabilities, register
from dt_attn.attention.window import check_window
from dt_attn.checks import check_positive_int
from dt_attn.ops.combiner import (
    attend_step,
    combiner_fixed,
    combiner_logsparse,
    default_span,
    summarize,
    window_groups,
)
from dt_attn.ops.reference import combiner_fixed_weights, combiner_logsparse_weights


def _require_span(span: int | None, name: str) -> int:
    if span is None:
        raise ValueError(
            f"{name}: the incremental form needs a concrete 'span' (the parallel form derives it from "
            "the sequence length); build the attention with span=<int>, e.g. ceil(sqrt(max_tokens))"
        )
    return span


@dataclass
class CombinerFixedState:
    """Incremental state of ``combiner-fixed``: the open block plus one summary per closed block."""

    span: int
    window: int | None
    q_max: Tensor  # (B, H, D) running max of the open block's queries
    k_blk: Tensor  # (B, H, n, D) keys of the open block, n < span
    v_blk: Tensor  # (B, H, n, Dv)
    k_reg: Tensor  # (B, H, R, D) max-pooled keys of the visible closed blocks
    v_reg: Tensor  # (B, H, R, Dv) their summarised values
    tokens: int = 0

    @property
    def num_summaries(self) -> int:
        """How many region summaries are cached."""
        return self.k_reg.shape[2]


@dataclass
class _ClosedBlock:
    """A completed block of ``span`` tokens, kept while a logsparse group may still need it."""

    q_max: Tensor  # (B, H, D) elementwise max of its queries
    k_max: Tensor  # (B, H, D) and of its keys
    k: Tensor  # (B, H, span, D)
    v: Tensor  # (B, H, span, Dv)


@dataclass
class CombinerLogsparseState:
    """Incremental state of ``combiner-logsparse``: the open block, the closed blocks a later group
    may still need, and the summaries of the regions the open block attends to."""

    span: int
    window: int | None
    q_max: Tensor
    k_blk: Tensor
    v_blk: Tensor
    blocks: dict[int, _ClosedBlock] = field(default_factory=dict)  # by block index
    # (first block, number of blocks) -> (k_bar, v_bar), one entry per region of the open block
    regions: dict[tuple[int, int], tuple[Tensor, Tensor]] = field(default_factory=dict)
    k_reg: Tensor | None = None  # (B, H, R, D) the same summaries, stacked
    v_reg: Tensor | None = None
    tokens: int = 0

    @property
    def num_summaries(self) -> int:
        """How many region summaries the open block attends to."""
        return self.k_reg.shape[2]


def _open_block(batch: int, heads: int, head_dim: int, value_dim: int, device, dtype):
    q_max = torch.full((batch, heads, head_dim), float("-inf"), device=device, dtype=dtype)
    k = torch.zeros(batch, heads, 0, head_dim, device=device, dtype=dtype)
    v = torch.zeros(batch, heads, 0, value_dim, device=device, dtype=dtype)
    return q_max, k, v


def _check_step(q: Tensor, k: Tensor, v: Tensor, state_k: Tensor) -> None:
    if q.dim() != 3 or k.shape != q.shape or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"step expects q, k (B, H, D) and v (B, H, Dv); got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    if q.shape[:2] != state_k.shape[:2] or q.shape[-1] != state_k.shape[-1]:
        raise ValueError(
            f"step got (B, H, D) = {tuple(q.shape)} but the state was made for "
            f"{(state_k.shape[0], state_k.shape[1], state_k.shape[-1])}"
        )


class _Combiner(Attention):
    """What both Combiner variants share: the ``span`` and ``window`` options."""

    OPTIONS: ClassVar[dict[str, Any]] = {"span": None, "window": None}

    @classmethod
    def context_options(cls, tokens: int) -> dict:
        """The span of a segment of ``tokens`` tokens, ceil(sqrt(tokens)): fixed, because the incremental
        form needs a span and must compute the trained function."""
        return {"span": default_span(tokens)}

    def __init__(self, span: int | None = None, window: int | None = None) -> None:
        super().__init__()
        check_positive_int("span", span, optional=True,
                           meaning="tokens per block; None: derived from the length")
        check_window(window)
        self.span = span
        self.window = window

    def forward(self, q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Parallel causal Combiner attention of this variant (``dt_attn.ops.combiner``); (B, H, T, Dv)."""
        return self._parallel(q, k, v, span=self.span, window=self.window, pad_mask=pad_mask)

    def weights(self, q: Tensor, k: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """The implied attention rows (``dt_attn.ops.reference``)."""
        return self._weights(q, k, span=self.span, window=self.window, pad_mask=pad_mask)

    def init_state(
        self,
        batch: int,
        heads: int,
        head_dim: int,
        value_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> CombinerFixedState | CombinerLogsparseState:
        """The variant's empty state (an empty open block)."""
        span = _require_span(self.span, self.name)
        q_max, k, v = _open_block(batch, heads, head_dim, value_dim, device, dtype)
        return self._empty_state(span, q_max, k, v)


def _attend_open_block(q: Tensor, k: Tensor, v: Tensor, state) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Add one token to the state's open block and attend it to that block and the cached summaries;
    returns the output and the open block's new query max, keys and values."""
    _check_step(q, k, v, state.k_blk)
    k_blk = torch.cat([state.k_blk, k.unsqueeze(2)], dim=2)
    v_blk = torch.cat([state.v_blk, v.unsqueeze(2)], dim=2)
    return attend_step(q, k_blk, v_blk, state.k_reg, state.v_reg), torch.maximum(state.q_max, q), k_blk, v_blk


@register("combiner-fixed")
class CombinerFixed(_Combiner):
    """Causal Combiner-Fixed: direct attention in the own block, one summary per earlier block."""

    capabilities = Capabilities(
        kind="qkv", window=True, sizes=("span",), absolute_position=True,
        training_cost="O(T (span + T / span) d)",
        state="the open block's keys and values, one summary per closed block (window // span of them with "
              "a window)",
        step_cost="O((span + t / span) d)")
    _parallel = staticmethod(combiner_fixed)
    _weights = staticmethod(combiner_fixed_weights)

    def _empty_state(self, span: int, q_max: Tensor, k: Tensor, v: Tensor) -> CombinerFixedState:
        """No open-block tokens, no summaries."""
        return CombinerFixedState(span, self.window, q_max, k, v, k[:, :, :0], v[:, :, :0])

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: CombinerFixedState
    ) -> tuple[Tensor, CombinerFixedState]:
        """Attend one token to its open block and the visible block summaries."""
        out, q_max, k_blk, v_blk = _attend_open_block(q, k, v, state)
        k_reg, v_reg = state.k_reg, state.v_reg
        if k_blk.shape[2] == state.span:  # the block is complete: summarise it, open a new one
            k_reg = torch.cat([k_reg, k_blk.amax(2, keepdim=True)], dim=2)
            v_reg = torch.cat([v_reg, summarize(q_max, k_blk, v_blk).unsqueeze(2)], dim=2)
            if state.window is not None:
                # Later queries see block r iff r >= b - window // span (b = their block): keep the
                # newest window // span summaries, all of them while there are fewer. (A plain
                # negative start would count from the end and drop the oldest ones.)
                first = max(0, k_reg.shape[2] - state.window // state.span)
                k_reg, v_reg = k_reg[:, :, first:], v_reg[:, :, first:]
            q_max = torch.full_like(q_max, float("-inf"))
            k_blk, v_blk = k_blk[:, :, :0], v_blk[:, :, :0]
        new = CombinerFixedState(
            state.span, state.window, q_max, k_blk, v_blk, k_reg, v_reg, state.tokens + 1
        )
        return out, new


@register("combiner-logsparse")
class CombinerLogsparse(_Combiner):
    """Causal Combiner-Logsparse: direct attention in the own block, dyadic group summaries before."""

    capabilities = Capabilities(
        kind="qkv", window=True, sizes=("span",), absolute_position=True,
        training_cost="O(T (span + log(T / span)) d)",
        state="the open block, the closed blocks' keys and values, one summary per dyadic group",
        step_cost="O((span + log(t / span)) d) amortised")
    _parallel = staticmethod(combiner_logsparse)
    _weights = staticmethod(combiner_logsparse_weights)

    def _empty_state(self, span: int, q_max: Tensor, k: Tensor, v: Tensor) -> CombinerLogsparseState:
        """No open-block tokens, no closed blocks, no regions."""
        return CombinerLogsparseState(span, self.window, q_max, k, v, {}, {}, k[:, :, :0], v[:, :, :0])

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: CombinerLogsparseState
    ) -> tuple[Tensor, CombinerLogsparseState]:
        """Attend one token to its open block and the dyadic group summaries."""
        out, q_max, k_blk, v_blk = _attend_open_block(q, k, v, state)
        blocks, regions, k_reg, v_reg = state.blocks, state.regions, state.k_reg, state.v_reg
        if k_blk.shape[2] == state.span:
            closed = _ClosedBlock(q_max, k_blk.amax(2), k_blk, v_blk)
            blocks, regions, k_reg, v_reg = _close_block(state, closed)
            q_max = torch.full_like(q_max, float("-inf"))
            k_blk, v_blk = k_blk[:, :, :0], v_blk[:, :, :0]
        new = CombinerLogsparseState(
            state.span, state.window, q_max, k_blk, v_blk, blocks, regions, k_reg, v_reg, state.tokens + 1
        )
        return out, new


def _close_block(state: CombinerLogsparseState, closed: _ClosedBlock) -> tuple:
    """Blocks, regions and stacked region summaries (k_reg, v_reg) once the open block closes.

    The next block b sees the blocks ``[lo, b)``; only those stay, and its regions
    (``window_groups``) are summarised unless the previous block had the same one (always the
    case without a window, except for the group the closing block completes).
    """
    b = state.tokens // state.span + 1  # the closing block is b - 1
    lo = 0 if state.window is None else max(0, b - state.window // state.span)
    blocks = {i: blk for i, blk in {**state.blocks, b - 1: closed}.items() if i >= lo}
    regions = {}
    for first, size in window_groups(lo, b):
        key = (first, size)
        regions[key] = state.regions[key] if key in state.regions else _summarize_blocks(
            [blocks[i] for i in range(first, first + size)]
        )
    if not regions:  # a window shorter than a block: the own block only
        return blocks, regions, closed.k[:, :, :0], closed.v[:, :, :0]
    k_reg = torch.stack([k_bar for k_bar, _ in regions.values()], dim=2)
    return blocks, regions, k_reg, torch.stack([v_bar for _, v_bar in regions.values()], dim=2)


def _summarize_blocks(members: list[_ClosedBlock]) -> tuple[Tensor, Tensor]:
    """(k_bar, v_bar) of the region made of these closed blocks."""
    q_bar = torch.stack([m.q_max for m in members]).amax(0)
    k_bar = torch.stack([m.k_max for m in members]).amax(0)
    k = torch.cat([m.k for m in members], dim=2)
    v = torch.cat([m.v for m in members], dim=2)
    return k_bar, summarize(q_bar, k, v)
