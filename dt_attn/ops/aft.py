"""Attention Free Transformer math (Zhai et al. 2021), causal: AFT-simple and AFT-local.

Elementwise over the channels c of q, k, v (B, H, T, D):

    y_t = sigmoid(q_t) * sum_{s<=t} exp(k_s + w_{t-s}) v_s / sum_{s<=t} exp(k_s + w_{t-s})

AFT-simple has w = 0; AFT-local learns w_l for the lags l < L and has w_l = 0 beyond, so that distant tokens
still count through exp(k_s). Both are computed from the running triple (m, n, d) of a prefix: its largest
logit m, and the sums n = sum exp(logit - m) v, d = sum exp(logit - m). Two triples combine as

    (m1, n1, d1) + (m2, n2, d2) = (m, n1 e^{m1-m} + n2 e^{m2-m}, d1 e^{m1-m} + d2 e^{m2-m}), m = max(m1, m2),

which never exponentiates a positive number (the running maximum that keeps exp(k) finite). The operation
is associative, so the parallel form is a prefix scan of log2(T) doubling passes; a step folds one token in.

Padded tokens (pad_mask True) and the positions before the sequence get the logit ``empty_logit`` (the
dtype's most negative finite number, not -inf, so that no pass computes -inf - (-inf)) and weight 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Prefix(NamedTuple):
    """Running max logit ``m``, and the sums ``n`` (weighted values) and ``d`` (weights) relative to it."""

    m: Tensor
    n: Tensor
    d: Tensor


def empty_logit(dtype: torch.dtype) -> float:
    """The logit of a token that is not there: exp(it - any real logit) is exactly 0."""
    return torch.finfo(dtype).min


def combine(a: Prefix, b: Prefix) -> Prefix:
    """The prefix of a followed by b (the associative operation of the module docstring)."""
    m = torch.maximum(a.m, b.m)
    sa, sb = torch.exp(a.m - m), torch.exp(b.m - m)
    return Prefix(m, a.n * sa + b.n * sb, a.d * sa + b.d * sb)


def tokens(k: Tensor, v: Tensor, pad_mask: Tensor | None) -> Prefix:
    """Each token as a prefix of its own: (k, v, 1), padded tokens (empty_logit, 0, 0)."""
    if pad_mask is None:
        return Prefix(k, v, torch.ones_like(k))
    pad = pad_mask.to(device=k.device, dtype=torch.bool)[:, None, :, None]
    return Prefix(torch.where(pad, empty_logit(k.dtype), k), torch.where(pad, 0.0, v),
                  (~pad).to(k.dtype).expand_as(k))


def prefix_scan(x: Prefix) -> Prefix:
    """Inclusive prefix ``combine`` along the token axis (dim 2), by doubling: log2(T) passes."""
    T = x.m.shape[2]
    shift = 1
    while shift < T:
        earlier = Prefix(*(_shift(t, shift, fill) for t, fill in zip(x, (empty_logit(x.m.dtype), 0.0, 0.0))))
        x = combine(earlier, x)
        shift *= 2
    return x


def aft_causal(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None,
               pad_mask: Tensor | None = None) -> Tensor:
    """Causal AFT (B, H, T, D): ``bias`` None for AFT-simple, else AFT-local's w_0 .. w_{L-1} (L,).
    Padded queries output zeros."""
    if q.shape != k.shape or v.shape != k.shape:
        raise ValueError(f"AFT is elementwise: q, k and v must share one shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[2] == 0:
        return torch.sigmoid(q) * v * k  # no tokens: an empty output, connected to every input
    scanned = prefix_scan(tokens(k, v, pad_mask))
    if bias is None:
        out = scanned.n / scanned.d.clamp_min(torch.finfo(q.dtype).tiny)
    else:
        out = _local(k, v, bias, scanned, pad_mask)
    out = torch.sigmoid(q) * out
    if pad_mask is not None:
        out = torch.where(pad_mask.to(device=q.device, dtype=torch.bool)[:, None, :, None], 0.0, out)
    return out


def _local(k: Tensor, v: Tensor, bias: Tensor, scanned: Prefix, pad_mask: Tensor | None) -> Tensor:
    """AFT-local's weighted average: the tokens L or more back from the scan's prefix at t - L, the last L
    with their biases."""
    L = bias.shape[0]
    low = empty_logit(k.dtype)
    far = Prefix(*(_shift(t, L, fill) for t, fill in zip(scanned, (low, 0.0, 0.0))))
    own = tokens(k, v, pad_mask)
    # (B, H, T, D, L): token t - L + 1 + j in slot j, so slot j has lag L - 1 - j
    logits = F.pad(own.m, (0, 0, L - 1, 0), value=low).unfold(2, L, 1) + bias.flip(0).to(k.dtype)
    values = F.pad(own.n, (0, 0, L - 1, 0)).unfold(2, L, 1)
    present = F.pad(own.d, (0, 0, L - 1, 0)).unfold(2, L, 1)
    m = torch.maximum(far.m, logits.amax(-1))
    w = torch.exp(logits - m[..., None]) * present
    scale = torch.exp(far.m - m)
    num = far.n * scale + (w * values).sum(-1)
    den = far.d * scale + w.sum(-1)
    return num / den.clamp_min(torch.finfo(k.dtype).tiny)


def _shift(x: Tensor, by: int, fill: float) -> Tensor:
    """x moved ``by`` positions later along dim 2, the first ``by`` positions set to ``fill``."""
    by = min(by, x.shape[2])
    head = x.new_full((*x.shape[:2], by, *x.shape[3:]), fill)
    return torch.cat((head, x[:, :, : x.shape[2] - by]), dim=2)
