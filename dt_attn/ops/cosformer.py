"""cosFormer tensor math (Qin et al. 2022): features, chunkwise-parallel causal form.

The weight between query i and key j <= i is ``relu(q_i) . relu(k_j) * cos(pi/2 * (i - j) / M)``.
With ``a_i = pi/2 * i / M`` and ``cos(a_i - a_j) = cos a_i cos a_j + sin a_i sin a_j`` it becomes a
plain dot product of 2d-dimensional features ``[relu(x) cos a, relu(x) sin a]``, i.e. causal linear
attention. The parallel form works chunk by chunk: pairs of nearby chunks directly (ReLU features
times a chunk x chunk distance weighting), distant chunks through per-chunk key-value states of the
2d features, so that neither a (tokens, tokens) nor a (tokens, d, d) tensor is ever built."""

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
        num, den = _causal_chunks(rq, rk, v, chunk_size, max_distance)
        return num / den.unsqueeze(-1).clamp_min(eps)
    # A ones column appended to v turns the normaliser into one more output column.
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    out = _chunkwise(rq, rk, v1, chunk_size, window, max_distance)
    num, den = out[..., :-1], out[..., -1:]
    return num / den.clamp_min(eps)


def fitting_chunk(tokens: int, chunk: int) -> int:
    """The chunk size the causal chunkwise form uses: the largest divisor of ``tokens`` in
    [chunk/2, chunk] when there is one (no zero-padded copies of the features), else ``chunk``."""
    if tokens <= chunk:
        return tokens
    return next((c for c in range(chunk, (chunk + 1) // 2 - 1, -1) if tokens % c == 0), chunk)


def _causal_chunks(rq: torch.Tensor, rk: torch.Tensor, v: torch.Tensor, chunk: int,
                   max_distance: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised numerator (B, H, T, dv) and normaliser (B, H, T) of causal cosFormer, chunk by chunk.

    Within a chunk the (chunk x chunk) products relu(q) relu(k)^T times the distance weighting (its row
    sums are the normaliser's part); every earlier chunk comes in through ``_PrefixStates``' running
    (2d x dv) state of the cos/sin features and its running (2d) key sum. The normaliser is kept apart
    from v (no ones column), so that every product is dv wide: an odd width (dv + 1) halves the CPU
    matmul rate."""
    B, H, T, D = rq.shape
    C = fitting_chunk(T, chunk)
    n = -(-T // C)
    extra = n * C - T  # trailing zero keys come after every real query: they never contribute
    if extra:
        rq, rk, v = (F.pad(x, (0, 0, 0, extra)) for x in (rq, rk, v))
    rqc, rkc = rq.reshape(B, H, n, C, D), rk.reshape(B, H, n, C, D)
    vc = v.reshape(B, H, n, C, v.shape[-1])
    scores = torch.matmul(rqc, rkc.transpose(-1, -2))
    # in place: matmul's backward needs only its inputs
    scores = scores.mul_(_distance_weighting(C, 0, None, max_distance, rq))
    num, den = torch.matmul(scores, vc), scores.sum(-1)
    if n > 1:
        rot = rotation(torch.arange(n * C, device=rq.device), max_distance, rq.dtype).view(n, C, 2)
        far_num, far_den = _PrefixStates.apply(rqc[:, :, 1:], rkc[:, :, :-1], vc[:, :, :-1], rot[1:],
                                               rot[:-1])
        num[:, :, 1:] += far_num  # fresh results that no backward needs: safe to update in place
        den[:, :, 1:] += far_den
    return num.reshape(B, H, n * C, v.shape[-1])[:, :, :T], den.reshape(B, H, n * C)[:, :, :T]


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


class _PrefixStates(torch.autograd.Function):
    """num[i] = phi(rq[i], rot_q[i]) @ S_i, S_i = sum_{j <= i} phi(rk[j], rot_k[j])^T v[j], over chunks i,
    and den[i] = phi(rq[i], rot_q[i]) @ z_i, z_i = sum_{j <= i} (chunk j's sum of phi(rk[j], rot_k[j])).

    ``rq``, ``rk`` (B, H, m, C, d) are the ReLU features of m query and key chunks, ``v`` (B, H, m, C, e),
    ``rot_q``, ``rot_k`` (m, C, 2) their [cos a, sin a]; phi = ``rotate`` (the 2d cos/sin features). One
    running (2d x e) state and (2d) key sum per (batch, head) are carried chunk by chunk, forward and
    backward alike, and the
    2d features are formed a chunk at a time: neither the m per-chunk states nor the (tokens, 2d) features
    are ever stored. Backward recomputes the states in a forward pass (dq_i = dnum_i S_i^T + dden_i z_i^T)
    and sums G_i = sum_{j >= i} phi_q[j]^T dnum_j and g_i = sum_{j >= i} phi_q[j]^T dden_j in a reverse
    pass (dk_j = v_j G_j^T + g_j, dv_j = phi_k[j] G_j): the same products autograd would do, plus one
    recomputed state product per chunk.
    """

    @staticmethod
    def forward(ctx, rq, rk, v, rot_q, rot_k):
        ctx.save_for_backward(rq, rk, v, rot_q, rot_k)
        qs, ks, vs = (_chunk_major(x) for x in (rq, rk, v))
        state = qs.new_zeros(qs.shape[1], 2 * qs.shape[-1], vs.shape[-1])
        key_sum = qs.new_zeros(qs.shape[1], 2 * qs.shape[-1], 1)
        num, den = torch.empty_like(vs), qs.new_empty(*qs.shape[:-1], 1)
        for i in range(qs.shape[0]):
            kf, qf = rotate(ks[i], rot_k[i]), rotate(qs[i], rot_q[i])
            state.baddbmm_(kf.transpose(1, 2), vs[i])
            key_sum += kf.sum(1).unsqueeze(-1)
            torch.bmm(qf, state, out=num[i])
            torch.bmm(qf, key_sum, out=den[i])
        return _batch_major(num, v.shape), _batch_major(den, (*rq.shape[:-1], 1)).squeeze(-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dnum, dden):
        rq, rk, v, rot_q, rot_k = ctx.saved_tensors
        qs, ks, vs, dn = (_chunk_major(x) for x in (rq, rk, v, dnum))
        dd = _chunk_major(dden.unsqueeze(-1))
        m = qs.shape[0]
        state = qs.new_zeros(qs.shape[1], 2 * qs.shape[-1], vs.shape[-1])
        key_sum = qs.new_zeros(qs.shape[1], 1, 2 * qs.shape[-1])
        dq = torch.empty_like(qs)
        for i in range(m):
            kf = rotate(ks[i], rot_k[i])
            state.baddbmm_(kf.transpose(1, 2), vs[i])
            key_sum += kf.sum(1, keepdim=True)
            dqf = torch.baddbmm(torch.bmm(dd[i], key_sum), dn[i], state.transpose(1, 2))
            _unrotate(dqf, rot_q[i], out=dq[i])
        grad, grad_sum = state.zero_(), key_sum.zero_()
        dk, dv = torch.empty_like(ks), torch.empty_like(vs)
        for i in reversed(range(m)):
            qf = rotate(qs[i], rot_q[i])
            grad.baddbmm_(qf.transpose(1, 2), dn[i])
            grad_sum.baddbmm_(dd[i].transpose(1, 2), qf)
            kf = rotate(ks[i], rot_k[i])
            torch.bmm(kf, grad, out=dv[i])
            _unrotate(torch.baddbmm(grad_sum, vs[i], grad.transpose(1, 2)), rot_k[i], out=dk[i])
        return _batch_major(dq, rq.shape), _batch_major(dk, rk.shape), _batch_major(dv, v.shape), None, None


def _chunk_major(x: torch.Tensor) -> torch.Tensor:
    """(B, H, m, C, e) as a contiguous (m, B*H, C, e): one chunk of every sequence is one slice."""
    B, H, m, C, e = x.shape
    return x.permute(2, 0, 1, 3, 4).reshape(m, B * H, C, e).contiguous()


def _batch_major(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``_chunk_major``'s inverse: (m, B*H, C, e) back to (B, H, m, C, e)."""
    B, H, m, C, e = shape
    return x.view(m, B, H, C, e).permute(1, 2, 0, 3, 4)


def _unrotate(g: torch.Tensor, rot: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The gradient through ``rotate`` into ``out``: (..., 2d) -> (..., d), g_cos * cos a + g_sin * sin a."""
    return torch.sum(g.unflatten(-1, (2, -1)) * rot.unsqueeze(-1), dim=-2, out=out)


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
