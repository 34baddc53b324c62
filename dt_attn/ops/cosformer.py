"""cosFormer tensor math (Qin et al. 2022): features, chunkwise-parallel causal form.

The weight between query i and key j <= i is ``relu(q_i) . relu(k_j) * cos(pi/2 * (i - j) / M)``.
With ``a_i = pi/2 * i / M`` and ``cos(a_i - a_j) = cos a_i cos a_j + sin a_i sin a_j`` it becomes a
plain dot product of 2d-dimensional features ``[relu(x) cos a, relu(x) sin a]``, i.e. causal linear
attention. The parallel form works chunk by chunk: pairs of nearby chunks directly (ReLU features
times a chunk x chunk distance weighting), distant chunks through key-value states of the 2d features
(one running state carried through the chunks in the causal form, per-chunk states with a window), so
that neither a (tokens, tokens) nor a (tokens, d, d) tensor is ever built."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def rotation(positions: torch.Tensor, max_distance: int, dtype: torch.dtype) -> torch.Tensor:
    """(..., 2) [cos a, sin a] with a = pi/2 * i / M, i reduced mod 4M (the period), in float64."""
    angles = torch.remainder(positions, 4 * max_distance).to(torch.float64) * (math.pi / (2 * max_distance))
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).to(dtype)


def rotations_from(position: int, n: int, max_distance: int, dtype: torch.dtype,
                   device: torch.device) -> torch.Tensor:
    """``rotation`` of the n positions ``position .. position+n-1`` as an (n, 2) tensor, cached: a
    rollout asks for the same few rows at every layer of every step."""
    return _rotations_from(position % (4 * max_distance), n, max_distance, dtype, str(device))


@functools.lru_cache(maxsize=8192)
def _rotations_from(position: int, n: int, max_distance: int, dtype: torch.dtype,
                    device: str) -> torch.Tensor:
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for backward later
        return rotation(torch.arange(position, position + n), max_distance, dtype).to(device)


def cos_features(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """``[relu(x) cos a, relu(x) sin a]`` along the last dim; ``rot`` (..., 2) broadcasts over x[..., 0]."""
    return rotate(torch.relu(x), rot)


def rotate(r: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """``[r cos a, r sin a]`` along the last dim (``cos_features`` of features already ReLU'd)."""
    return (r.unsqueeze(-2) * rot.unsqueeze(-1)).flatten(-2)  # (..., 2, d) in one pass


def check_distance(longest: int, max_distance: int) -> None:
    """Raise ValueError when attention would span a distance the cos weighting cannot represent."""
    if longest > max_distance:
        raise ValueError(
            f"cosFormer would attend a distance of {longest} tokens but max_distance={max_distance}: "
            f"beyond it cos(pi/2 * (i-j)/M) turns negative. Raise max_distance to at least {longest} "
            f"or set a window <= max_distance + 1"
        )


def cosformer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    max_distance: int,
    chunk_size: int,
    eps: float,
    window: int | None = None,
    pad_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal cosFormer attention over (B, H, T, d) q/k and (B, H, T, dv) v; returns (B, H, T, dv).

    ``window`` (if set) restricts query i to keys j with i - window < j <= i. ``pad_mask`` (B, T)
    marks padded tokens (True): their keys contribute nothing and their outputs are zero.
    """
    T = q.shape[-2]
    if window is not None and window >= T:
        window = None  # every pair is inside the window anyway
    if window is None:
        check_distance(T - 1, max_distance)
    else:
        check_distance(window - 1, max_distance)

    # Contiguous (B, H, T, d) inputs: chunks are then views, and what backward keeps is these tensors, not
    # the whole projection that q, k, v are usually strided slices of.
    q, k, v = (x.contiguous() for x in (q, k, v))
    if pad_mask is not None:
        pad = pad_mask.to(device=q.device, dtype=torch.bool)[:, None, :, None]
        # torch.where (not a product) so that inf/nan garbage in padded slots cannot leak; before the ReLU,
        # whose saved output is then the one copy of the features backward keeps (relu(0) = 0).
        q, k, v = (torch.where(pad, 0.0, x) for x in (q, k, v))
    rq, rk = torch.relu(q), _ContiguousGrad.apply(torch.relu(k))
    if T <= chunk_size:  # one chunk: normalise the (T, T) weights, cheaper than a ones column on v
        weights = torch.matmul(rq, rk.transpose(-1, -2))
        weights.mul_(_distance_weighting(T, 0, window, max_distance, rq))
        return torch.matmul(weights / weights.sum(-1, keepdim=True).clamp_min(eps), v)
    if window is None:
        return _causal_chunks(rq, rk, v, chunk_size, max_distance, eps)
    # A ones column appended to v turns the normaliser into one more output column.
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    out = _chunkwise(rq, rk, v1, chunk_size, window, max_distance)
    num, den = out[..., :-1], out[..., -1:]
    return num / den.clamp_min(eps)


def fitting_chunk(tokens: int, chunk: int) -> int:
    """The chunk size the causal chunkwise form uses: the largest divisor of ``tokens`` in
    [chunk/2, chunk] when there is one (no shorter last chunk), else ``chunk``."""
    if tokens <= chunk:
        return tokens
    return next((c for c in range(chunk, (chunk + 1) // 2 - 1, -1) if tokens % c == 0), chunk)


def _causal_chunks(rq: torch.Tensor, rk: torch.Tensor, v: torch.Tensor, chunk: int, max_distance: int,
                   eps: float) -> torch.Tensor:
    """Causal cosFormer (B, H, T, dv) over the ReLU features ``rq``, ``rk``, chunk by chunk
    (``_CausalChunks``)."""
    T = rq.shape[2]
    C = fitting_chunk(T, chunk)
    rot = rotation(torch.arange(T, device=rq.device), max_distance, rq.dtype)
    weights = {n: _distance_weighting(n, 0, None, max_distance, rq) for n in {C, T - T // C * C} if n}
    return _CausalChunks.apply(rq, rk, v, rot, weights, C, eps)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient.

    The keys' gradient comes back transposed from ``q @ k^T``; on CPU, ReLU's backward
    (threshold_backward) over such a strided gradient measured about 8x slower than a copy to
    contiguous plus the contiguous kernel (3.3 ms vs 0.7 ms at batch 64, 60 tokens, d=128).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _chunkwise(
    rq: torch.Tensor, rk: torch.Tensor, v: torch.Tensor, chunk: int, window: int | None, max_distance: int
) -> torch.Tensor:
    """Unnormalised sum_j relu(q_i).relu(k_j) cos(pi/2 (i-j)/M) v_j over visible j, chunk by chunk.

    ``rq``, ``rk`` are the ReLU features. Pairs of nearby chunks are computed directly, with the
    distance weighting as a (chunk x chunk) matrix; pairs far enough apart to be wholly visible go
    through per-chunk states of the 2d-dimensional cos/sin features.
    """
    B, H, T, D = rq.shape
    C = min(chunk, T)
    n = -(-T // C)
    extra = n * C - T  # trailing zero keys come after every real query: they never contribute
    pos = torch.arange(n * C, device=rq.device)
    if extra:
        rq, rk, v = (F.pad(x, (0, 0, 0, extra)) for x in (rq, rk, v))
    rqc = rq.reshape(B, H, n, C, D)
    rkc = rk.reshape(B, H, n, C, D)
    vc = v.reshape(B, H, n, C, v.shape[-1])

    win = window if window is not None else n * C + 1

    # Pairs of chunks `o` apart span distances o*C-(C-1) .. o*C+(C-1). Offsets whose pairs are only
    # partly visible get an explicit weighted product; wholly visible offsets (a contiguous range)
    # go through the summed key-value states of their chunks.
    explicit: list[int] = []
    full: list[int] = []
    for o in range(n):
        nearest, farthest = o * C - (C - 1), o * C + (C - 1)
        if nearest >= win:
            break
        (full if nearest >= 0 and farthest < win else explicit).append(o)
    out = None
    for o in explicit:
        # query chunks o.. against key chunks ..n-o; the first o query chunks get nothing here
        scores = torch.matmul(rqc[:, :, o:], rkc[:, :, : n - o].transpose(-1, -2))
        # in place: matmul's backward needs only its inputs
        scores = scores.mul_(_distance_weighting(C, o, window, max_distance, rq))
        term = torch.matmul(scores, vc[:, :, : n - o])
        if o:
            term = F.pad(term, (0, 0, 0, 0, o, 0))
        out = term if out is None else out + term
    if full:
        lo, hi = full[0], full[-1]  # a contiguous range of offsets
        rot = rotation(pos, max_distance, rq.dtype).view(n, C, 2)
        kc = rotate(rkc[:, :, : n - lo], rot[: n - lo])  # key chunks some query chunk lo.. sees
        qc = rotate(rqc[:, :, lo:], rot[lo:])
        states = torch.matmul(kc.transpose(-1, -2), vc[:, :, : n - lo])  # (B, H, n-lo, 2d, dv)
        summed = _sliding_sum(states, hi - lo + 1)
        term = torch.matmul(qc, summed)
        if out is None:
            out = F.pad(term, (0, 0, 0, 0, lo, 0))
        else:
            out[:, :, lo:] += term  # out is a fresh sum, safe to update in place
    assert out is not None  # offset 0 is always (at least partly) visible
    return out.reshape(B, H, n * C, v.shape[-1])[:, :, :T]


class _CausalChunks(torch.autograd.Function):
    """out_i = num_i / max(den_i, eps), num_i = sum_{j <= i} w(i - j) relu(q_i).relu(k_j) v_j and
    den_i = sum_{j <= i} w(i - j) relu(q_i).relu(k_j), w(d) = cos(pi/2 d / M), for the ReLU features ``rq``,
    ``rk`` (B, H, T, d) and ``v`` (B, H, T, dv), in chunks of C tokens (the last may be shorter).

    Within chunk c: (C x C) scores q_c k_c^T times the chunk's distance weighting (``weights``, by chunk
    size). From every earlier chunk: phi_q[c] @ S_c and phi_q[c] @ z_c, where phi = ``rotate`` with ``rot``
    (T, 2) gives the 2d cos/sin features, S_c = sum_{j < c} phi_k[j]^T v_j is one running (2d x dv) state
    per (batch, head) and z_c the running sum of phi_k. Nothing but the inputs, the output and den is saved
    (the output laid out as (B, T, H, dv), so that the heads' merge after it is a view, not another copy):
    the chunks are views of the inputs, the features are formed a chunk at a time, and backward (through
    the normalisation, a chunk at a time: dnum = dout / den, dden = -(dout . out) / den) recomputes the
    scores and the states
    in a forward pass (dq_c = dnum_c S_c^T + dden_c z_c^T, and the chunk's own score gradients), then sums
    G_j = sum_{c > j} phi_q[c]^T dnum_c and g_j = sum_{c > j} phi_q[c]^T dden_c in a reverse pass
    (dk_j = phi'(v_j G_j^T + g_j), dv_j = phi_k[j] G_j). The normaliser is kept apart from v (no ones
    column): an odd width (dv + 1) halves the CPU matmul rate.
    """

    @staticmethod
    def forward(ctx, rq, rk, v, rot, weights, C, eps):
        B, H, T, D = rq.shape
        state = rq.new_zeros(B * H, 2 * D, v.shape[-1])
        key_sum = rq.new_zeros(B * H, 2 * D, 1)
        num, den = v.new_empty(B, T, H, v.shape[-1]).transpose(1, 2), rq.new_empty(B, H, T)
        chunks = _chunks(T, C)
        for i, c in enumerate(chunks):
            q, k, vc = _rows(rq, c), _rows(rk, c), _rows(v, c)
            scores = torch.bmm(q, k.transpose(1, 2)).mul_(weights[q.shape[1]])
            out, norm = torch.bmm(scores, vc), scores.sum(-1, keepdim=True)
            if i:
                qf = rotate(q, rot[c])
                out.baddbmm_(qf, state)
                norm.baddbmm_(qf, key_sum)
            if i < len(chunks) - 1:
                kf = rotate(k, rot[c])
                state.baddbmm_(kf.transpose(1, 2), vc)
                key_sum += kf.sum(1).unsqueeze(-1)
            num[:, :, c] = out.unflatten(0, (B, H))
            den[:, :, c] = norm.unflatten(0, (B, H)).squeeze(-1)
        out = num.div_(den.clamp_min(eps).unsqueeze(-1))
        ctx.save_for_backward(rq, rk, v, rot, out, den)
        ctx.weights, ctx.C, ctx.eps = weights, C, eps
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        rq, rk, v, rot, out, den = ctx.saved_tensors
        weights = ctx.weights
        B, H, T, D = rq.shape
        chunks = _chunks(T, ctx.C)
        den = den.unsqueeze(-1)

        def upstream(c: slice) -> tuple[torch.Tensor, torch.Tensor]:
            """dnum and dden of the tokens ``c``, through out = num / max(den, eps), a chunk at a time."""
            g, o, d = _rows(dout, c), _rows(out, c), _rows(den, c)
            norm = d.clamp_min(ctx.eps)
            return g / norm, torch.where(d >= ctx.eps, -(g * o).sum(-1, keepdim=True) / norm, 0.0)

        state = rq.new_zeros(B * H, 2 * D, v.shape[-1])
        key_sum = rq.new_zeros(B * H, 1, 2 * D)
        dq, dk, dv = torch.empty_like(rq), torch.empty_like(rk), torch.empty_like(v)
        for i, c in enumerate(chunks):  # the chunk's own scores, and the states of the chunks before it
            (q, k, vc), (dn, dd) = (_rows(x, c) for x in (rq, rk, v)), upstream(c)
            w = weights[q.shape[1]]
            scores = torch.bmm(q, k.transpose(1, 2)).mul_(w)
            dscores = torch.baddbmm(dd, dn, vc.transpose(1, 2)).mul_(w)
            dqc = torch.bmm(dscores, k)
            if i:
                dqf = torch.bmm(dd, key_sum).baddbmm_(dn, state.transpose(1, 2))
                dqc += _unrotate(dqf, rot[c])
            if i < len(chunks) - 1:
                kf = rotate(k, rot[c])
                state.baddbmm_(kf.transpose(1, 2), vc)
                key_sum += kf.sum(1, keepdim=True)
            dq[:, :, c] = dqc.unflatten(0, (B, H))
            dk[:, :, c] = torch.bmm(dscores.transpose(1, 2), q).unflatten(0, (B, H))
            dv[:, :, c] = torch.bmm(scores.transpose(1, 2), dn).unflatten(0, (B, H))
        grad, grad_sum = state.zero_(), key_sum.zero_()
        for i in reversed(range(len(chunks))):  # what the later chunks' queries hand back to these keys
            c = chunks[i]
            if i < len(chunks) - 1:
                k, vc = _rows(rk, c), _rows(v, c)
                kf = rotate(k, rot[c])
                dv[:, :, c] += torch.bmm(kf, grad).unflatten(0, (B, H))
                dkf = torch.baddbmm(grad_sum, vc, grad.transpose(1, 2))
                dk[:, :, c] += _unrotate(dkf, rot[c]).unflatten(0, (B, H))
            if i:
                qf, (dn, dd) = rotate(_rows(rq, c), rot[c]), upstream(c)
                grad.baddbmm_(qf.transpose(1, 2), dn)
                grad_sum.baddbmm_(dd.transpose(1, 2), qf)
        return dq, dk, dv, None, None, None, None


def _chunks(tokens: int, C: int) -> list[slice]:
    """Token ranges of C tokens each, the last one possibly shorter."""
    return [slice(lo, min(lo + C, tokens)) for lo in range(0, tokens, C)]


def _rows(x: torch.Tensor, rows: slice) -> torch.Tensor:
    """Tokens ``rows`` of a (B, H, T, e) tensor as a (B*H, n, e) batch of matrices (a view when the tensor
    is laid out (B, H, T, e), as the inputs are)."""
    return x[:, :, rows].flatten(0, 1)


def _unrotate(g: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """The gradient through ``rotate``: (..., 2d) -> (..., d), g_cos * cos a + g_sin * sin a."""
    return (g.unflatten(-1, (2, -1)) * rot.unsqueeze(-1)).sum(-2)


def _distance_weighting(C: int, o: int, window: int | None, max_distance: int,
                        like: torch.Tensor) -> torch.Tensor:
    """(C, C) cos(pi/2 * d / M) for query/key positions a, b of two chunks ``o`` apart (distance
    d = o*C + a - b), zero where the key is not visible (d < 0, or d >= window when windowed)."""
    local = torch.arange(C, device=like.device)
    d = o * C + local[:, None] - local[None, :]
    visible = d >= 0 if window is None else (d >= 0) & (d < window)
    return distance_weights(d, visible, max_distance, like.dtype)


def distance_weights(distance: torch.Tensor, visible: torch.Tensor, max_distance: int,
                     dtype: torch.dtype) -> torch.Tensor:
    """cos(pi/2 * distance / M) where ``visible``, else 0 (computed in float64, returned as ``dtype``)."""
    cos = torch.cos(distance.to(torch.float64) * (math.pi / (2 * max_distance)))
    return torch.where(visible, cos, 0.0).to(dtype)


def _shift(x: torch.Tensor, o: int) -> torch.Tensor:
    """x shifted o steps later along the chunk axis (dim 2), zero-filled: out[:, :, c] = x[:, :, c-o]."""
    if o == 0:
        return x
    n = x.shape[2]
    if o >= n:
        return torch.zeros_like(x)
    zeros = x.new_zeros(*x.shape[:2], o, *x.shape[3:])
    return torch.cat([zeros, x[:, :, : n - o]], dim=2)


def _sliding_sum(x: torch.Tensor, length: int) -> torch.Tensor:
    """out[:, :, c] = sum of x[:, :, c-length+1 .. c] (zero before the start), by doubling.

    Exact sums of O(log length) shifted copies, unlike a difference of prefix sums which loses
    precision on long sequences.
    """
    result = None
    offset = 0
    span = 1
    block = x  # block[c] = sum of x[c-span+1 .. c]
    while length:
        if length & 1:
            term = _shift(block, offset)
            result = term if result is None else result + term
            offset += span
        length >>= 1
        if length:
            block = block + _shift(block, span)
            span *= 2
    assert result is not None
    return result
