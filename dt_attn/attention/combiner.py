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
closes. Each block is summarised once per level, so the amortised cost stays
O(span + log(blocks)) per step, although the step that completes a group of 2**l blocks does
O(2**l * span) work.

* ``combiner-fixed`` (options ``span``, ``window``): one region per earlier block.
  O(T * span + T^2 / span) = O(T sqrt T) with the default span ceil(sqrt(T)). With ``window``,
  a block's summary is seen only from blocks starting at most ``window`` tokens after it; the
  incremental form then keeps only the last ``window // span`` summaries (constant cost per step).
* ``combiner-logsparse`` (options ``span``, ``window``): the earlier blocks ``[0, b)`` are covered by
  aligned dyadic groups of blocks following the binary digits of ``b`` (largest first, like a
  Fenwick tree), one region per group: at most log2(blocks) regions per query. With ``window``,
  the blocks ``[b - window // span, b)`` (those Fixed would show) are covered by the fewest aligned
  dyadic groups, at most 2 log2(window / span) regions; the incremental form then keeps only the
  keys/values of those blocks and the summaries that can still be used (constant cost per step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dt_attn.attention.base import Attention, register
from dt_attn.ops.combiner import attend_step, combiner_fixed, combiner_logsparse, dyadic_cover, summarize


def _check_positive_int(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"combiner option {name!r} must be a positive integer or None, got {value!r}")


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
    """Incremental state of ``combiner-logsparse``: the open block, the closed blocks and group
    summaries that later queries can still use, and the regions the open block attends to."""

    span: int
    window: int | None
    q_max: Tensor
    k_blk: Tensor
    v_blk: Tensor
    blocks: dict[int, _ClosedBlock] = field(default_factory=dict)  # by block index
    # (level, g) -> (k_bar, v_bar) of the group of blocks [g * 2**level, (g + 1) * 2**level)
    summaries: dict[tuple[int, int], tuple[Tensor, Tensor]] = field(default_factory=dict)
    k_reg: Tensor | None = None  # (B, H, R, D) summaries of the regions the open block sees
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


@register("combiner-fixed")
class CombinerFixed(Attention):
    """Causal Combiner-Fixed: direct attention in the own block, one summary per earlier block."""

    def __init__(self, span: int | None = None, window: int | None = None) -> None:
        super().__init__()
        _check_positive_int("span", span)
        _check_positive_int("window", window)
        self.span = span
        self.window = window

    def forward(self, q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Parallel causal Combiner-Fixed attention; returns (B, H, T, Dv)."""
        return combiner_fixed(q, k, v, span=self.span, window=self.window, pad_mask=pad_mask)

    def init_state(
        self,
        batch: int,
        heads: int,
        head_dim: int,
        value_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> CombinerFixedState:
        """Empty state: no open-block tokens, no summaries."""
        span = _require_span(self.span, "combiner-fixed")
        q_max, k, v = _open_block(batch, heads, head_dim, value_dim, device, dtype)
        return CombinerFixedState(span, self.window, q_max, k, v, k[:, :, :0], v[:, :, :0])

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: CombinerFixedState
    ) -> tuple[Tensor, CombinerFixedState]:
        """Attend one token to its open block and the visible block summaries."""
        _check_step(q, k, v, state.k_blk)
        q_max = torch.maximum(state.q_max, q)
        k_blk = torch.cat([state.k_blk, k.unsqueeze(2)], dim=2)
        v_blk = torch.cat([state.v_blk, v.unsqueeze(2)], dim=2)
        out = attend_step(q, k_blk, v_blk, state.k_reg, state.v_reg)
        k_reg, v_reg = state.k_reg, state.v_reg
        if k_blk.shape[2] == state.span:  # the block is complete: summarise it, open a new one
            k_reg = torch.cat([k_reg, k_blk.amax(2, keepdim=True)], dim=2)
            v_reg = torch.cat([v_reg, summarize(q_max, k_blk, v_blk).unsqueeze(2)], dim=2)
            if state.window is not None:
                # Later queries see block r iff r >= b - window // span (b = their block).
                keep = state.window // state.span
                k_reg, v_reg = k_reg[:, :, k_reg.shape[2] - keep :], v_reg[:, :, v_reg.shape[2] - keep :]
            q_max = torch.full_like(q_max, float("-inf"))
            k_blk, v_blk = k_blk[:, :, :0], v_blk[:, :, :0]
        new = CombinerFixedState(
            state.span, state.window, q_max, k_blk, v_blk, k_reg, v_reg, state.tokens + 1
        )
        return out, new


@register("combiner-logsparse")
class CombinerLogsparse(Attention):
    """Causal Combiner-Logsparse: direct attention in the own block, dyadic group summaries before."""

    def __init__(self, span: int | None = None, window: int | None = None) -> None:
        super().__init__()
        _check_positive_int("span", span)
        _check_positive_int("window", window)
        self.span = span
        self.window = window

    def forward(self, q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Parallel causal Combiner-Logsparse attention; returns (B, H, T, Dv)."""
        return combiner_logsparse(q, k, v, span=self.span, window=self.window, pad_mask=pad_mask)

    def init_state(
        self,
        batch: int,
        heads: int,
        head_dim: int,
        value_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> CombinerLogsparseState:
        """Empty state: no open-block tokens, no closed blocks, no summaries."""
        span = _require_span(self.span, "combiner-logsparse")
        q_max, k, v = _open_block(batch, heads, head_dim, value_dim, device, dtype)
        return CombinerLogsparseState(span, self.window, q_max, k, v, {}, {}, k[:, :, :0], v[:, :, :0])

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: CombinerLogsparseState
    ) -> tuple[Tensor, CombinerLogsparseState]:
        """Attend one token to its open block and the dyadic group summaries."""
        _check_step(q, k, v, state.k_blk)
        q_max = torch.maximum(state.q_max, q)
        k_blk = torch.cat([state.k_blk, k.unsqueeze(2)], dim=2)
        v_blk = torch.cat([state.v_blk, v.unsqueeze(2)], dim=2)
        out = attend_step(q, k_blk, v_blk, state.k_reg, state.v_reg)
        blocks, summaries, k_reg, v_reg = state.blocks, state.summaries, state.k_reg, state.v_reg
        if k_blk.shape[2] == state.span:
            closed = _ClosedBlock(q_max, k_blk.amax(2), k_blk, v_blk)
            blocks, summaries, k_reg, v_reg = _close_block(state, closed)
            q_max = torch.full_like(q_max, float("-inf"))
            k_blk, v_blk = k_blk[:, :, :0], v_blk[:, :, :0]
        new = CombinerLogsparseState(
            state.span, state.window, q_max, k_blk, v_blk, blocks, summaries, k_reg, v_reg, state.tokens + 1
        )
        return out, new


def _close_block(state: CombinerLogsparseState, closed: _ClosedBlock) -> tuple:
    """Blocks, summaries and stacked region summaries (k_reg, v_reg) after block ``c`` closes.

    Summarises every group that block c completes (level l when 2**l divides c + 1 and the group
    fits the window), then keeps only what a later query block b' >= b = c + 1, whose range
    [lo', b') has lo' >= lo, can still use: closed blocks from lo on, and summaries of groups that
    start at lo or later, except those whose parent group is already complete (it covers them for
    good, unless a window can later cut the parent off the left and leave its right half).
    """
    c = state.tokens // state.span  # index of the block that closes
    b = c + 1
    reach = b if state.window is None else state.window // state.span
    lo = max(0, b - reach)
    blocks = {**state.blocks, c: closed}
    summaries = dict(state.summaries)
    level = 0
    while b % (1 << level) == 0 and (1 << level) <= reach:
        members = [blocks[i] for i in range(b - (1 << level), b)]
        q_bar = torch.stack([m.q_max for m in members]).amax(0)
        k_grp = torch.cat([m.k for m in members], dim=2)
        v_grp = torch.cat([m.v for m in members], dim=2)
        k_bar = torch.stack([m.k_max for m in members]).amax(0)
        summaries[(level, (b >> level) - 1)] = (k_bar, summarize(q_bar, k_grp, v_grp))
        level += 1
    if state.window is not None:
        blocks = {i: blk for i, blk in blocks.items() if i >= lo}

    def still_usable(level: int, g: int) -> bool:
        parent_complete = ((g >> 1) + 1) << (level + 1) <= b
        right_half = g & 1 and state.window is not None
        return g << level >= lo and (not parent_complete or right_half)

    summaries = {key: sums for key, sums in summaries.items() if still_usable(*key)}
    cover = [summaries[key] for key in dyadic_cover(lo, b)]
    if not cover:  # a window shorter than a block: the own block only
        return blocks, summaries, closed.k[:, :, :0], closed.v[:, :, :0]
    k_reg = torch.stack([k_bar for k_bar, _ in cover], dim=2)
    return blocks, summaries, k_reg, torch.stack([v_bar for _, v_bar in cover], dim=2)
