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

    rq, rk = torch.relu(q), _ContiguousGrad.apply(torch.relu(k))
    if pad_mask is not None:
        pad = pad_mask.to(device=q.device, dtype=torch.bool)[:, None, :, None]
        # torch.where (not a product) so that inf/nan garbage in padded slots cannot leak.
        rq = torch.where(pad, 0.0, rq)
        rk = torch.where(pad, 0.0, rk)
        v = torch.where(pad, 0.0, v)
    if T <= chunk_size:  # one chunk: normalise the (T, T) weights, cheaper than a ones column on v
        weights = torch.matmul(rq, rk.transpose(-1, -2))
        weights.mul_(_distance_weighting(T, 0, window, max_distance, rq))
        return torch.matmul(weights / weights.sum(-1, keepdim=True).clamp_min(eps), v)
    # A ones column appended to v turns the normaliser into one more output column.
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    out = _chunkwise(rq, rk, v1, chunk_size, window, max_distance)
    num, den = out[..., :-1], out[..., -1:]
    return num / den.clamp_min(eps)


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
        if window is None:  # lo == 1: chunk c sees the sum over every chunk before it
            summed = torch.cumsum(states, dim=2)
        else:
            summed = _sliding_sum(states, hi - lo + 1)
        term = torch.matmul(qc, summed)
        if out is None:
            out = F.pad(term, (0, 0, 0, 0, lo, 0))
        else:
            out[:, :, lo:] += term  # out is a fresh sum, safe to update in place
    assert out is not None  # offset 0 is always (at least partly) visible
    return out.reshape(B, H, n * C, v.shape[-1])[:, :, :T]


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
