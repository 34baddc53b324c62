"""Combiner attention math (Ren et al. 2021): causal Combiner-Fixed and Combiner-Logsparse.

Every query ``i`` in block ``b`` (blocks of ``span`` consecutive tokens) spreads its attention over
* its own block, directly: logits ``q_i . k_j / sqrt(d)`` for ``j <= i``, and
* summaries of regions lying wholly before block ``b``: logit ``q_i . kbar_r / sqrt(d)``, value
  ``vbar_r = sum_{j in r} p(j|r) v_j``,
with ONE softmax over the direct and region logits together. A region's key ``kbar_r`` is the
elementwise max of its keys and ``p(j|r) = softmax_j(qbar_r . k_j / sqrt(d))`` with ``qbar_r`` the
elementwise max of its queries (the reference code's choice), so a summary depends only on the
region's own tokens. Fixed: one region per earlier block. Logsparse: the blocks ``[0, b)`` are
split into aligned dyadic groups (the binary digits of ``b``, largest first), one region each.
With a ``window`` both see only the blocks ``[b - window // span, b)`` before their own; Logsparse
groups them as it groups ``[0, n)``, n the number of those blocks, shifted to start at the window.

Shapes: q, k (B, H, T, D); v (B, H, T, Dv); pad_mask (B, T) bool, True = padded. Padded tokens
take no part in any logit or summary; padded queries return zeros.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def default_span(length: int) -> int:
    """The default block size for a sequence of ``length`` tokens: ceil(sqrt(length))."""
    return max(1, math.ceil(math.sqrt(length)))


def summarize(qbar: Tensor, k: Tensor, v: Tensor, valid: Tensor | None = None) -> Tensor:
    """Region values ``sum_j softmax_j(qbar . k_j / sqrt(d)) v_j`` over each region's valid tokens.

    qbar (..., D); k (..., n, D); v (..., n, Dv); valid (..., n) bool or None (all valid).
    A region without a valid token gets an arbitrary finite value (callers mask it out).
    """
    return _Summary.apply(qbar, k, v, valid)


class _Summary(torch.autograd.Function):
    """:func:`summarize` with a hand-written backward.

    The logits are elementwise products and sums, not matmuls: as thousands of tiny
    matrix-vector products they measured about twice as slow on CPU. The backward makes fewer
    region-sized temporaries than autograd's; with the token max's float mask below, Combiner-Fixed's
    attention at 60 tokens (batch 64, d 128) went from 11.4 to 9.5 ms forward + backward
    (bench_results/combiner_ab).
    """

    @staticmethod
    def forward(ctx, qbar, k, v, valid):  # type: ignore[override]
        qs = qbar * qbar.shape[-1] ** -0.5
        logits = (k * qs.unsqueeze(-2)).sum(-1)
        some_valid = None
        if valid is not None:
            some_valid = valid.any(-1, keepdim=True)
            # A region without a valid token gets uniform weights (finite, and masked by the caller).
            logits = torch.where(some_valid, logits.masked_fill(~valid, float("-inf")), 0.0)
        p = torch.softmax(logits, dim=-1)
        out = (p.unsqueeze(-2) @ v).squeeze(-2)
        ctx.save_for_backward(qs, k, v, p, out, some_valid)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):  # type: ignore[override]
        qs, k, v, p, out, some_valid = ctx.saved_tensors
        d_out = d_out.contiguous()
        d_rows = d_out.unsqueeze(-2)
        dv = p.unsqueeze(-1) * d_rows
        # softmax backward: dl_j = p_j (dp_j - sum_i p_i dp_i), and sum_i p_i dp_i = d_out . out
        dl = (v * d_rows).sum(-1).sub_((d_out * out).sum(-1, keepdim=True)).mul_(p)
        if some_valid is not None:
            dl = torch.where(some_valid, dl, 0.0)  # those logits were constants
        dk = dl.unsqueeze(-1) * qs.unsqueeze(-2)
        dq = (dl.unsqueeze(-2) @ k).squeeze(-2).mul_(qs.shape[-1] ** -0.5)
        return dq, dk, dv, None


class _TokenMax(torch.autograd.Function):
    """``x.amax(-2)`` whose gradient goes to every entry equal to its column's maximum.

    On CPU, ``max(-2)`` (values and indices) measured 2.0 ms forward for a (64, 1, 8, 8, 128) block
    tensor against 0.07 ms for ``amax``, and amax's own backward splits ties at twice this one's
    cost. Exact ties between distinct tokens' projections do not occur in practice, except among
    identical padded tokens, whose summaries no loss-bearing query sees.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        values = x.amax(-2)
        ctx.save_for_backward(x, values)
        return values

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, values = ctx.saved_tensors
        # A float 0/1 mask written by eq(out=): torch's bool-valued eq and where measured 0.23 + 0.51 ms
        # on CPU at (64, 1, 8, 8, 128), this float eq and multiply 0.08 ms (bench_results/combiner_ab).
        hit = torch.eq(x, values.unsqueeze(-2), out=torch.empty_like(x))
        return hit.mul_(grad.unsqueeze(-2))


def masked_max(x: Tensor, valid: Tensor | None, empty_to_zero: bool = True) -> Tensor:
    """Elementwise max over dim -2 of ``x`` (..., n, D) restricted to ``valid`` (..., n).

    A row without valid entries gives 0, or -inf with ``empty_to_zero=False`` (so that maxima
    can still be merged with other rows' maxima).
    """
    if valid is None:
        return _TokenMax.apply(x)
    m = _TokenMax.apply(x.masked_fill(~valid.unsqueeze(-1), float("-inf")))
    return torch.where(valid.any(-1, keepdim=True), m, torch.zeros_like(m)) if empty_to_zero else m


def attend_step(q: Tensor, k_local: Tensor, v_local: Tensor, k_reg: Tensor, v_reg: Tensor) -> Tensor:
    """One query against local keys and region summaries under one shared softmax.

    q (B, H, D); k_local (B, H, n, D) with n >= 1; v_local (B, H, n, Dv);
    k_reg (B, H, R, D) and v_reg (B, H, R, Dv), R >= 0. Returns (B, H, Dv).
    """
    qs = (q * q.shape[-1] ** -0.5).unsqueeze(-1)
    logits = torch.cat([k_local @ qs, k_reg @ qs], dim=-2).squeeze(-1)
    p = torch.softmax(logits, dim=-1).unsqueeze(-2)
    n = k_local.shape[-2]
    return (p[..., :n] @ v_local + p[..., n:] @ v_reg).squeeze(-2)


def _prepare(
    q: Tensor, k: Tensor, v: Tensor, span: int | None, pad_mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, int, int]:
    """Check shapes, zero padded tokens, pad T up to a multiple of span.

    Returns q, k, v of length nb * span, the valid mask (B, nb * span) or None, span and nb.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"expected q, k (B, H, T, D) and v (B, H, T, Dv); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    b, _, t, _ = q.shape
    span = default_span(t) if span is None else span
    nb = max(1, -(-t // span))
    extra = nb * span - t
    if not extra:  # (padding below copies into a fresh contiguous tensor anyway)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # e.g. (B, T, H, D).transpose(1, 2)
    valid = None
    if pad_mask is not None:
        if pad_mask.shape != (b, t):
            raise ValueError(f"pad_mask must be (batch, tokens) = {(b, t)}, got {tuple(pad_mask.shape)}")
        valid = ~pad_mask.to(torch.bool)
        keep = valid[:, None, :, None]
        zero = torch.zeros((), dtype=q.dtype, device=q.device)
        # Zeroing (rather than only masking logits) keeps even inf/nan garbage out of the math.
        q, k, v = torch.where(keep, q, zero), torch.where(keep, k, zero), torch.where(keep, v, zero)
        valid = F.pad(valid, (0, extra), value=False)
    if extra:
        # Internal padding sits after every real token: causality already hides it from them.
        q, k, v = (F.pad(x, (0, 0, 0, extra)) for x in (q, k, v))
    return q, k, v, valid, span, nb


def _local_mask(valid: Tensor | None, span: int, nb: int, device: torch.device) -> Tensor:
    """Direct-attention mask (.., nb, span, span): causal inside the block, valid keys only.

    A padded query keeps its own position so that its row is never empty (its output is
    zeroed afterwards); this keeps the softmax free of NaN without a special case.
    """
    causal = torch.ones(span, span, dtype=torch.bool, device=device).tril()
    if valid is None:
        return causal
    vb = valid.view(valid.shape[0], 1, nb, span)
    eye = torch.eye(span, dtype=torch.bool, device=device)
    return (causal & vb.unsqueeze(-2)) | (eye & ~vb.unsqueeze(-1))


def _region_logits(qb: Tensor, kr: Tensor) -> Tensor:
    """qb (B, H, nb, s, D) x kr (B, H, G, R, D), G in {1, nb} -> (B, H, nb, s, R)."""
    if kr.shape[2] == 1 and qb.shape[2] != 1:  # shared regions: one big matmul over all tokens
        b, h, nb, s, d = qb.shape
        return (qb.reshape(b, h, nb * s, d) @ kr[:, :, 0].transpose(-1, -2)).view(b, h, nb, s, kr.shape[3])
    return qb @ kr.transpose(-1, -2)


def _region_apply(pr: Tensor, vr: Tensor) -> Tensor:
    """pr (B, H, nb, s, R) x vr (B, H, G, R, Dv), G in {1, nb} -> (B, H, nb, s, Dv)."""
    if vr.shape[2] == 1 and pr.shape[2] != 1:
        b, h, nb, s, r = pr.shape
        return (pr.reshape(b, h, nb * s, r) @ vr[:, :, 0]).view(b, h, nb, s, vr.shape[-1])
    return pr @ vr


def _region_grad(ds: Tensor, x: Tensor, groups: int) -> Tensor:
    """Gradient for region keys/values: ds (B, H, nb, s, R)^T x x (B, H, nb, s, E) -> (B, H, G, R, E)."""
    if groups == 1 and ds.shape[2] != 1:
        b, h, nb, s, r = ds.shape
        flat = x.reshape(b, h, nb * s, x.shape[-1])
        return (ds.reshape(b, h, nb * s, r).transpose(-1, -2) @ flat).unsqueeze(2)
    return ds.transpose(-1, -2) @ x


class _JointAttention(torch.autograd.Function):
    """Shared-softmax attention over block-local keys and region summaries.

    Hand-written backward (the flash-attention formulas): it saves only the probabilities and
    never concatenates logits or copies masks, which on CPU is markedly faster and lighter than
    autograd through cat + masked_fill + softmax.
    """

    @staticmethod
    def forward(ctx, qb, kb, vb, kr, vr, local_block, reg_block):  # type: ignore[override]
        # 1/sqrt(d) scales the logits (span + regions per query), not the queries (d per query).
        scale = qb.shape[-1] ** -0.5
        s_loc = (qb @ kb.transpose(-1, -2)).mul_(scale)
        s_reg = _region_logits(qb, kr).mul_(scale)
        s_loc.masked_fill_(local_block, float("-inf"))
        s_reg.masked_fill_(reg_block, float("-inf"))
        m = s_loc.amax(-1, keepdim=True)  # finite: every row keeps at least one local entry
        if s_reg.shape[-1]:
            m = torch.maximum(m, s_reg.amax(-1, keepdim=True))
        p_loc, p_reg = s_loc.sub_(m).exp_(), s_reg.sub_(m).exp_()
        z = p_loc.sum(-1, keepdim=True) + p_reg.sum(-1, keepdim=True)
        p_loc.div_(z)
        p_reg.div_(z)
        out = p_loc @ vb + _region_apply(p_reg, vr)
        ctx.save_for_backward(qb, kb, vb, kr, vr, p_loc, p_reg, out)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):  # type: ignore[override]
        qb, kb, vb, kr, vr, p_loc, p_reg, out = ctx.saved_tensors
        d_out = d_out.contiguous()
        delta = (d_out * out).sum(-1, keepdim=True)
        # Gradients of the unscaled products q.k: the softmax's times the scale.
        ds_loc = (d_out @ vb.transpose(-1, -2)).sub_(delta).mul_(p_loc).mul_(ctx.scale)
        ds_reg = _region_logits(d_out, vr).sub_(delta).mul_(p_reg).mul_(ctx.scale)
        groups = kr.shape[2]
        dq = ds_loc @ kb + _region_apply(ds_reg, kr)
        dk = ds_loc.transpose(-1, -2) @ qb
        dv = p_loc.transpose(-1, -2) @ d_out
        dkr = _region_grad(ds_reg, qb, groups)
        dvr = _region_grad(p_reg, d_out, groups)
        return dq, dk, dv, dkr, dvr, None, None


def _joint_attention(
    q_blocks: Tensor,
    k_blocks: Tensor,
    v_blocks: Tensor,
    local_mask: Tensor,
    reg_keys: Tensor,
    reg_values: Tensor,
    reg_mask: Tensor,
) -> Tensor:
    """Shared softmax over [direct logits | region logits] per query; returns (B, H, nb, span, Dv).

    q/k/v_blocks (B, H, nb, span, D|Dv); local_mask (True = may attend) broadcastable to
    (B, H, nb, span, span); reg_keys (B, H, G, R, D) and reg_values (B, H, G, R, Dv) with G = 1
    (the same regions for every block) or G = nb; reg_mask broadcastable to (B, H, nb, span, R).
    """
    return _JointAttention.apply(q_blocks, k_blocks, v_blocks, reg_keys, reg_values, ~local_mask, ~reg_mask)


def _finish(out: Tensor, t: int, valid: Tensor | None) -> Tensor:
    """Drop internal padding (B, H, T', Dv) -> (B, H, T, Dv) and zero padded queries."""
    out = out[:, :, :t]
    if valid is not None:
        out = out.masked_fill(~valid[:, None, :t, None], 0.0)
    return out


def combiner_fixed(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    span: int | None = None,
    window: int | None = None,
    pad_mask: Tensor | None = None,
) -> Tensor:
    """Causal Combiner-Fixed attention; returns (B, H, T, Dv).

    ``span``: block size (None: ceil(sqrt(T))). ``window``: when set, a block's summary is seen
    only by queries whose block starts at most ``window`` tokens after that block's start.
    """
    bsz, heads, t, d = q.shape
    q, k, v, valid, span, nb = _prepare(q, k, v, span, pad_mask)
    dv = v.shape[-1]
    qb, kb, vb = (
        q.view(bsz, heads, nb, span, d),
        k.view(bsz, heads, nb, span, d),
        v.view(bsz, heads, nb, span, dv),
    )
    vblk = None if valid is None else valid.view(bsz, 1, nb, span)

    # One summary per block: (B, H, nb, D) and (B, H, nb, Dv).
    qbar = masked_max(qb, vblk)
    kbar = masked_max(kb, vblk)
    vbar = summarize(qbar, kb, vb, vblk)

    # Region r is visible from block b when r < b (and inside the window).
    blk = torch.arange(nb, device=q.device)
    visible = blk[None, :] < blk[:, None]
    if window is not None:
        visible &= blk[None, :] * span >= blk[:, None] * span - window
    reg_mask = visible[:, None, :]  # (nb, 1, nb)
    if vblk is not None:
        reg_mask = reg_mask & vblk.any(-1)[:, :, None, None, :]
    out = _joint_attention(
        qb, kb, vb, _local_mask(valid, span, nb, q.device), kbar.unsqueeze(2), vbar.unsqueeze(2), reg_mask
    )
    return _finish(out.reshape(bsz, heads, nb * span, dv), t, valid)


def dyadic_levels(num_blocks: int) -> int:
    """How many dyadic group sizes (1, 2, 4, ... blocks) queries in ``num_blocks`` blocks use."""
    return (num_blocks - 1).bit_length()


def window_groups(lo: int, hi: int) -> list[tuple[int, int]]:
    """Logsparse regions of a query block that sees the earlier blocks ``[lo, hi)``: (first block,
    number of blocks) per region, following the binary digits of ``hi - lo``, largest first.

    With ``lo = 0`` (no window) these are the aligned dyadic groups of the unwindowed form; a
    window keeps the same shape relative to its own start, as a training segment has it.
    """
    groups, start, n = [], lo, hi - lo
    for level in reversed(range(n.bit_length())):
        if (n >> level) & 1:
            groups.append((start, 1 << level))
            start += 1 << level
    return groups


def combiner_logsparse(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    span: int | None = None,
    window: int | None = None,
    pad_mask: Tensor | None = None,
) -> Tensor:
    """Causal Combiner-Logsparse attention; returns (B, H, T, Dv).

    Block b attends to its own tokens directly and to one summary per set bit l of b: the
    aligned group of 2**l blocks ending at block ((b >> l) << l). With ``window``, block b sees
    the n = min(b, window // span) blocks before it, grouped by the set bits of n from the
    window's start (``window_groups``).
    """
    bsz, heads, t, d = q.shape
    q, k, v, valid, span, nb = _prepare(q, k, v, span, pad_mask)
    dv = v.shape[-1]
    qb, kb, vb = (
        q.view(bsz, heads, nb, span, d),
        k.view(bsz, heads, nb, span, d),
        v.view(bsz, heads, nb, span, dv),
    )
    vblk = None if valid is None else valid.view(bsz, 1, nb, span)
    # Per-block maxima; an empty (all-padded) block keeps -inf so that merges with others stay exact.
    qmax, kmax = masked_max(qb, vblk, False), masked_max(kb, vblk, False)
    bvalid = None if vblk is None else vblk.any(-1)  # (B, 1, nb)
    regions = _aligned_regions if window is None else _windowed_regions
    sel_k, sel_v, sel_ok = regions(qmax, kmax, bvalid, k, v, valid, span, nb, window)
    if sel_k:
        k_reg = torch.stack(sel_k, dim=3)  # (B, H, nb, levels, D): block b's region of each level
        v_reg = torch.stack(sel_v, dim=3)
        reg_mask = torch.stack(sel_ok, dim=-1).unsqueeze(-2)  # (B|1, 1, nb, 1, levels)
    else:
        k_reg = kb.new_zeros(bsz, heads, nb, 0, d)
        v_reg = vb.new_zeros(bsz, heads, nb, 0, dv)
        reg_mask = torch.ones(1, 1, nb, 1, 0, dtype=torch.bool, device=q.device)
    out = _joint_attention(qb, kb, vb, _local_mask(valid, span, nb, q.device), k_reg, v_reg, reg_mask)
    return _finish(out.reshape(bsz, heads, nb * span, dv), t, valid)


def _zero_empty(x: Tensor, ok: Tensor | None) -> Tensor:
    """Pooled maxima (B, H, G, D) with the groups that hold no valid token (ok (B, 1, G) False) set to 0."""
    return x if ok is None else torch.where(ok.unsqueeze(-1), x, torch.zeros_like(x))


def _aligned_regions(qmax, kmax, bvalid, k, v, valid, span, nb, window):
    """Unwindowed regions, level by level: every aligned group of 2**l blocks is summarised once,
    then block b takes the one ending at ((b >> l) << l) when bit l of b is set.

    Returns per level the (B, H, nb, D) keys, (B, H, nb, Dv) values and (B|1, 1, nb) use mask."""
    bsz, heads, _, d = kmax.shape
    dv = v.shape[-1]
    blk = torch.arange(nb, device=k.device)
    sel_k, sel_v, sel_ok = [], [], []
    gvalid = bvalid
    for level in range(dyadic_levels(nb)):
        if level:  # a group's pooled keys/queries are the max over its two halves
            n = qmax.shape[2] // 2
            # _TokenMax over the pair, not torch.maximum: the latter's backward runs on bool masks,
            # which are slow on CPU (see _TokenMax.backward)
            qmax = _TokenMax.apply(qmax[:, :, : 2 * n].unflatten(2, (n, 2)))
            kmax = _TokenMax.apply(kmax[:, :, : 2 * n].unflatten(2, (n, 2)))
            if gvalid is not None:
                gvalid = gvalid[:, :, 0 : 2 * n : 2] | gvalid[:, :, 1 : 2 * n : 2]
        qbar, kbar = _zero_empty(qmax, gvalid), _zero_empty(kmax, gvalid)
        groups, size = qbar.shape[2], span << level
        tok_valid = None if valid is None else valid[:, None, : groups * size].view(bsz, 1, groups, size)
        vbar = summarize(
            qbar,
            k[:, :, : groups * size].view(bsz, heads, groups, size, d),
            v[:, :, : groups * size].view(bsz, heads, groups, size, dv),
            tok_valid,
        )
        idx = ((blk >> level) - 1).clamp(min=0)
        sel_k.append(kbar[:, :, idx])
        sel_v.append(vbar[:, :, idx])
        ok = ((blk >> level) & 1).bool().view(1, 1, nb)
        sel_ok.append(ok if gvalid is None else ok & gvalid[:, :, idx])
    return sel_k, sel_v, sel_ok


def _windowed_regions(qmax, kmax, bvalid, k, v, valid, span, nb, window):
    """Windowed regions, level by level: block b, seeing n = min(b, window // span) blocks from
    lo = b - n, takes the group of 2**l blocks starting at lo + ((n >> (l + 1)) << (l + 1)) when bit
    l of n is set. The groups move with the window, so each block's are summarised separately.

    Returns per level the (B, H, nb, D) keys, (B, H, nb, Dv) values and (B|1, 1, nb) use mask."""
    blk = torch.arange(nb, device=k.device)
    n = blk.clamp(max=window // span)
    lo = blk - n
    sel_k, sel_v, sel_ok = [], [], []
    for level in range(int(n.max()).bit_length()):
        first = lo + ((n >> (level + 1)) << (level + 1))
        members = (first[:, None] + torch.arange(1 << level, device=k.device)).clamp(max=nb - 1)  # (nb, 2**l)
        # (nb, 2**l * span)
        tokens = (members[:, :, None] * span + torch.arange(span, device=k.device)).flatten(1)
        gvalid = None if bvalid is None else bvalid[:, :, members].any(-1)  # (B, 1, nb)
        qbar = _zero_empty(_TokenMax.apply(qmax[:, :, members]), gvalid)
        kbar = _zero_empty(_TokenMax.apply(kmax[:, :, members]), gvalid)
        tok_valid = None if valid is None else valid[:, None, tokens]
        sel_k.append(kbar)
        sel_v.append(summarize(qbar, k[:, :, tokens], v[:, :, tokens], tok_valid))
        ok = ((n >> level) & 1).bool().view(1, 1, nb)
        sel_ok.append(ok if gvalid is None else ok & gvalid)
    return sel_k, sel_v, sel_ok
