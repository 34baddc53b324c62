"""Explicit O(T^2) forms of every attention mechanism: the oracle each fast form is tested against.

Every mechanism here computes ``out_i = sum_j A_ij v_j`` for some (tokens x tokens) matrix ``A`` of
attention weights; the fast forms never build ``A``, these functions build nothing else. Row ``i``
of ``A`` is where query ``i`` looks: non-negative, zero on future keys (``j > i``), on padded keys
and outside a window, and summing to 1 over the keys it sees. Two exceptions, both shared with
the fast forms: rows of padded queries are all zero (the fast forms output zeros there), and a
cosFormer row whose raw weights sum to less than ``eps`` sums to less than 1 (the guarded
denominator).

* ``softmax``: ``A_ij = softmax_j(q_i . k_j / sqrt(d))`` over the visible keys
  (``i - window < j <= i``).
* ``cosformer``: ``w_ij = relu(q_i) . relu(k_j) * cos(pi/2 * (i - j) / M)`` for visible keys,
  ``A_ij = w_ij / max(sum_j w_ij, eps)``, with the fixed horizon ``M = max_distance``.
* ``combiner-fixed`` / ``combiner-logsparse``: query ``i`` in block ``b`` (blocks of ``span``
  tokens) has one logit ``q_i . k_j / sqrt(d)`` per key ``j <= i`` of its own block and one logit
  ``q_i . kbar_r / sqrt(d)`` per region ``r`` it sees, under ONE softmax. A region's weight is
  spread over its own keys by the region's own distribution ``p(j|r) = softmax_j(qbar_r . k_j /
  sqrt(d))`` (``qbar_r``, ``kbar_r``: elementwise max of the region's queries and keys), so
  ``A_ij = softmax weight of the region holding j * p(j|r)``. Fixed: one region per earlier block
  ``r >= b - window // span``. Logsparse: those ``n`` blocks grouped into runs of 1, 2, 4, ...
  blocks going back from block ``b``, one run per set bit of ``n``.

* ``ngram``: softmax over the last ``n`` tokens, ``i - n < j <= i`` (``softmax`` with ``window = n``).
* ``aft-simple`` / ``aft-local``: one matrix per channel c (they are elementwise):
  ``A_ijc = softmax_j(k_jc + w_{i-j})`` over ``j <= i``, with ``w = 0`` (simple) or a learned ``w_l`` for
  lags ``l < L`` and 0 beyond (local); the output is ``sigmoid(q_ic) * sum_j A_ijc v_jc``.
* ``gmlp``'s spatial gating and ``r-transformer``'s local RNN mix hidden states, not q, k, v: their
  explicit forms (``toeplitz_gate``, ``local_rnn``) are at the end.

Shapes: q, k (B, H, T, D), v (B, H, T, Dv), pad_mask (B, T) bool with True = padded;
weights (B, H, T, T). The options are the mechanisms' own (``dt_attn.attention_options``); each
mechanism's ``weights`` and ``reference`` methods call its function here, and ``dt_attn.attention_weights``
and ``dt_attn.reference_attention`` reach them by mechanism name.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from dt_attn.checks import check_positive_int
from dt_attn.ops.combiner import default_span
from dt_attn.ops.cosformer import check_distance


def softmax_weights(q: Tensor, k: Tensor, window: int | None = None,
                    pad_mask: Tensor | None = None) -> Tensor:
    """Causal (windowed) softmax(q k^T / sqrt(d)) probabilities, (B, H, T, T)."""
    _check(q, k, pad_mask, window=window)
    scores = (q @ k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    scores.masked_fill_(~_visible(q, window, pad_mask), float("-inf"))
    return _zero_padded_queries(torch.softmax(scores, dim=-1), pad_mask)


def ngram_weights(q: Tensor, k: Tensor, n: int = 8, pad_mask: Tensor | None = None) -> Tensor:
    """N-gram masked self-attention's probabilities: softmax over the last ``n`` keys, (B, H, T, T)."""
    return softmax_weights(q, k, window=n, pad_mask=pad_mask)


def aft_weights(k: Tensor, bias: Tensor | None = None, pad_mask: Tensor | None = None) -> Tensor:
    """AFT's per-channel weights (B, H, T, T, D): softmax over causal unpadded j of k_j + w_{i-j}, where
    ``bias`` holds w_0 .. w_{L-1} (w = 0 at lags >= L; None: AFT-simple)."""
    _check(k, k, pad_mask)
    T = k.shape[2]
    lag = torch.arange(T, device=k.device)[:, None] - torch.arange(T, device=k.device)[None, :]
    w = torch.zeros(T, T, dtype=k.dtype, device=k.device)
    if bias is not None:
        L = bias.shape[0]
        w = torch.where((lag >= 0) & (lag < L), bias.to(k.dtype)[lag.clamp(0, L - 1)], 0.0)
    logits = k[:, :, None, :, :] + w[None, None, :, :, None]  # (B, H, i, j, D)
    visible = _visible(k, None, pad_mask)[..., None]  # (B|1, 1, i, j, 1)
    a = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=3)
    if pad_mask is None:
        return a
    return torch.where(pad_mask.to(device=k.device, dtype=torch.bool)[:, None, :, None, None], 0.0, a)


def aft_reference(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None,
                  pad_mask: Tensor | None = None) -> Tensor:
    """AFT's output explicitly: sigmoid(q_i) * sum_j A_ij v_j per channel, (B, H, T, D)."""
    if v.shape != k.shape or q.shape != k.shape:
        raise ValueError(f"AFT is elementwise: q, k and v must share one shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    return torch.sigmoid(q) * torch.einsum("bhijd,bhjd->bhid", aft_weights(k, bias, pad_mask), v)


def cosformer_weights(
    q: Tensor,
    k: Tensor,
    max_distance: int = 4096,
    chunk_size: int = 64,
    window: int | None = None,
    eps: float = 1e-6,
    pad_mask: Tensor | None = None,
) -> Tensor:
    """cosFormer's normalised re-weighted products, (B, H, T, T). ``chunk_size`` only says how the
    fast form splits its work; it does not change the weights and is accepted for symmetry."""
    _check(q, k, pad_mask, window=window, max_distance=max_distance, chunk_size=chunk_size)
    T = q.shape[2]
    if T:
        check_distance(min(T, window or T) - 1, max_distance)
    i = torch.arange(T, device=q.device)
    distance = (i[:, None] - i[None, :]).to(torch.float64)
    # cos computed in float64 like the fast form, then cast: the oracle should not be the noisier side
    cos = torch.cos(distance * (math.pi / (2 * max_distance))).to(q.dtype)
    w = (torch.relu(q) @ torch.relu(k).transpose(-1, -2)) * cos
    w = torch.where(_visible(q, window, pad_mask), w, 0.0)
    return _zero_padded_queries(w / w.sum(-1, keepdim=True).clamp_min(eps), pad_mask)


def combiner_fixed_weights(
    q: Tensor, k: Tensor, span: int | None = None, window: int | None = None, pad_mask: Tensor | None = None
) -> Tensor:
    """Combiner-Fixed's implied attention rows, (B, H, T, T); ``span`` None means ceil(sqrt(T))."""
    return _combiner_weights(_fixed_regions, q, k, span, window, pad_mask)


def combiner_logsparse_weights(
    q: Tensor, k: Tensor, span: int | None = None, window: int | None = None, pad_mask: Tensor | None = None
) -> Tensor:
    """Combiner-Logsparse's implied attention rows, (B, H, T, T); ``span`` None means ceil(sqrt(T))."""
    return _combiner_weights(_logsparse_regions, q, k, span, window, pad_mask)


def _check(q: Tensor, k: Tensor, pad_mask: Tensor | None, **sizes: int | None) -> None:
    """Shapes of q, k and pad_mask, and that the given sizes (window, span) are None or ints >= 1."""
    for name, value in sizes.items():
        check_positive_int(name, value, optional=True)
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"expected q, k (B, H, T, D) of one shape, got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    if pad_mask is not None and pad_mask.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"pad_mask must be (batch, tokens) = {(q.shape[0], q.shape[2])}, got "
                         f"{tuple(pad_mask.shape)}")


def _visible(q: Tensor, window: int | None, pad_mask: Tensor | None) -> Tensor:
    """(B|1, 1, T, T) bool: key j is causal for query i, inside its window and not padded."""
    vis = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool, device=q.device).tril()  # lag i - j >= 0
    if window is not None:
        vis = vis.triu(1 - window)  # lag < window
    vis = vis[None, None]
    if pad_mask is not None:
        vis = vis & ~pad_mask.to(device=q.device, dtype=torch.bool)[:, None, None, :]
    return vis


def _zero_padded_queries(a: Tensor, pad_mask: Tensor | None) -> Tensor:
    """Rows of padded queries set to zero (torch.where also clears the NaN of an empty softmax row)."""
    if pad_mask is None:
        return a
    return torch.where(pad_mask.to(device=a.device, dtype=torch.bool)[:, None, :, None], 0.0, a)


def _fixed_regions(block: int, span: int, window: int | None) -> list[range]:
    """Combiner-Fixed: each earlier block r with (block - r) * span <= window is a region."""
    first = 0 if window is None else max(0, block - window // span)
    return [range(r, r + 1) for r in range(first, block)]


def _logsparse_regions(block: int, span: int, window: int | None) -> list[range]:
    """Combiner-Logsparse: the n visible earlier blocks, going back from ``block``, in runs of
    1, 2, 4, ... blocks, one per set bit of n (so the largest run lies farthest back)."""
    n = block if window is None else min(block, window // span)
    runs, end = [], block
    for bit in range(n.bit_length()):
        if n >> bit & 1:
            runs.append(range(end - (1 << bit), end))
            end -= 1 << bit
    return runs[::-1]


def _combiner_weights(
    regions: Callable[[int, int, int | None], list[range]],
    q: Tensor,
    k: Tensor,
    span: int | None,
    window: int | None,
    pad_mask: Tensor | None,
) -> Tensor:
    """Implied rows of a Combiner variant whose query blocks see ``regions(block, span, window)``."""
    _check(q, k, pad_mask, span=span, window=window)
    B, H, T, D = q.shape
    span = default_span(T) if span is None else span
    scale = D**-0.5
    valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if pad_mask is None else ~pad_mask.bool()
    summaries: dict[range, tuple[Tensor, Tensor, Tensor]] = {}

    def summary(blocks: range) -> tuple[Tensor, Tensor, Tensor]:
        """kbar (B, H, D), p(j|r) spread over all T keys (B, H, T) and whether the region has a
        valid token (B, 1); computed once per region, whichever query block asks."""
        if blocks not in summaries:
            t0, t1 = blocks.start * span, blocks.stop * span
            ok = valid[:, None, t0:t1]  # (B, 1, L)
            some = ok.any(-1)  # a region without a valid token takes no part
            qbar = q[:, :, t0:t1].masked_fill(~ok[..., None], float("-inf")).amax(2)
            kbar = k[:, :, t0:t1].masked_fill(~ok[..., None], float("-inf")).amax(2)
            qbar, kbar = (torch.where(some[..., None], x, 0.0) for x in (qbar, kbar))
            logits = (k[:, :, t0:t1] @ qbar[..., None])[..., 0] * scale
            p = torch.where(some[..., None], torch.softmax(logits.masked_fill(~ok, float("-inf")), -1), 0.0)
            spread = q.new_zeros(B, H, T)
            spread[:, :, t0:t1] = p
            summaries[blocks] = kbar, spread, some
        return summaries[blocks]

    a = q.new_zeros(B, H, T, T)
    for b in range(-(-T // span)):
        lo, hi = b * span, min(T, (b + 1) * span)
        qi = q[:, :, lo:hi]  # the block's queries (B, H, n, D)
        causal = torch.ones(hi - lo, hi - lo, dtype=torch.bool, device=q.device).tril()
        own = causal & valid[:, None, None, lo:hi]
        direct = (qi @ k[:, :, lo:hi].transpose(-1, -2) * scale).masked_fill(~own, float("-inf"))
        seen = [summary(blocks) for blocks in regions(b, span, window)]
        if not seen:
            a[:, :, lo:hi, lo:hi] = torch.softmax(direct, dim=-1)
            continue
        kbar, spread, some = (torch.stack(x, dim=2) for x in zip(*seen))  # R regions on dim 2
        region = (qi @ kbar.transpose(-1, -2) * scale).masked_fill(~some[:, :, None], float("-inf"))
        w = torch.softmax(torch.cat([direct, region], dim=-1), dim=-1)  # ONE partition function
        a[:, :, lo:hi, lo:hi] = w[..., : hi - lo]
        a[:, :, lo:hi] += w[..., hi - lo :] @ spread  # each region's weight spread by its p(j|r)
    return _zero_padded_queries(a, pad_mask)


def toeplitz_gate(u: Tensor, z: Tensor, kernel: Tensor, bias: Tensor) -> Tensor:
    """gMLP's causal spatial gating with a shift-invariant W, explicitly: u * (W z + b) with the (T, T)
    lower-triangular Toeplitz W_ij = kernel[i - j] for 0 <= i - j < len(kernel), else 0; u, z (B, T, C)
    (z already normalised), bias (C,)."""
    T, L = z.shape[1], kernel.shape[0]
    lag = torch.arange(T, device=z.device)[:, None] - torch.arange(T, device=z.device)[None, :]
    w = torch.where((lag >= 0) & (lag < L), kernel.to(z.dtype)[lag.clamp(0, L - 1)], 0.0)
    return u * (w @ z + bias.to(z.dtype))


def local_rnn(x: Tensor, rnn: torch.nn.GRU, window: int) -> Tensor:
    """R-Transformer's LocalRNN explicitly, one position at a time: the GRU's last hidden state over
    x_{t-window+1} .. x_t (zeros before the sequence), for every t; x (B, T, E) -> (B, T, H)."""
    B, T, E = x.shape
    padded = torch.cat((x.new_zeros(B, window - 1, E), x), dim=1)
    outs = [rnn(padded[:, t : t + window])[0][:, -1] for t in range(T)]
    return torch.stack(outs, dim=1) if outs else x.new_zeros(B, 0, rnn.hidden_size)
