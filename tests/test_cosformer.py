"""cosFormer: explicit O(L^2) reference, causality, long-stream step form, padding, gradients and memory.

step == parallel over windows, chunk sizes and lengths is checked for every mechanism in
test_attention_properties."""

from __future__ import annotations

import pytest
import torch
from conftest import random_qkv, run_steps
from torch.utils._python_dispatch import TorchDispatchMode

from dt_attn import build_attention, reference_attention

CHUNK = 8
# (tokens, window): lengths that are and are not multiples of the chunk, windows below, across
# and above the chunk size.
CASES = [(16, None), (21, None), (16, 3), (21, 8), (37, 13), (37, 30)]


def _pad_mask(batch: int, tokens: int, n_pad: int) -> torch.Tensor:
    pad = torch.zeros(batch, tokens, dtype=torch.bool)
    pad[-1, :n_pad] = True
    return pad


@pytest.mark.parametrize("tokens, window", CASES)
@pytest.mark.parametrize("chunk", [1, 5, CHUNK, 64])
def test_matches_explicit_reference(tokens, window, chunk):
    q, k, v = random_qkv(tokens=tokens, dim=4, value_dim=3, dtype=torch.float64)
    attn = build_attention("cosformer", max_distance=50, chunk_size=chunk, window=window)
    ref = reference_attention("cosformer", q, k, v, max_distance=50, window=window)
    torch.testing.assert_close(attn(q, k, v), ref, atol=1e-12, rtol=0)

    pad = _pad_mask(2, tokens, 6)
    ref = reference_attention("cosformer", q, k, v, pad, max_distance=50, window=window)  # padded queries: 0
    torch.testing.assert_close(attn(q, k, v, pad), ref, atol=1e-12, rtol=0)


def test_phase_reduction_keeps_long_streams_exact():
    # Positions run far past 4M (the cos period): only distances inside the window matter.
    q, k, v = random_qkv(batch=1, heads=1, tokens=200, dim=3, dtype=torch.float64)
    attn = build_attention("cosformer", max_distance=7, window=8, chunk_size=16)
    ref = reference_attention("cosformer", q, k, v, max_distance=7, window=8)
    torch.testing.assert_close(attn(q, k, v), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(run_steps(attn, q, k, v), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("window", [None, 9])
def test_implied_weights_are_nonnegative_up_to_max_distance(window):
    # With v = identity the output rows are the normalised weights themselves.
    T = 17
    M = T - 1 if window is None else window - 1  # the longest distance attended is exactly M
    q, k, _ = random_qkv(batch=1, heads=1, tokens=T, dim=4, dtype=torch.float64, seed=3)
    q, k = q.abs() + 0.1, k.abs() + 0.1  # every pair gets a positive feature product
    eye = torch.eye(T, dtype=torch.float64)[None, None]
    w = build_attention("cosformer", max_distance=M, chunk_size=4, window=window)(q, k, eye)
    assert w.min() > -1e-12
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 1, T, dtype=torch.float64))
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    hidden = (j > i) | ((i - j) >= (window or T))
    assert w[0, 0][hidden].abs().max() == 0
    assert w[0, 0][~hidden & (i - j < M)].min() > 0  # at distance M itself cos == 0


def test_distance_beyond_max_distance_raises():
    q, k, v = random_qkv(tokens=12)
    attn = build_attention("cosformer", max_distance=10, chunk_size=4)
    attn(q[:, :, :11], k[:, :, :11], v[:, :, :11])  # distance 10 == M is fine
    with pytest.raises(ValueError, match="distance of 11 .* max_distance=10.*window"):
        attn(q, k, v)
    state = attn.init_state(2, 2, 4, 4)
    for t in range(11):
        _, state = attn.step(q[:, :, t], k[:, :, t], v[:, :, t], state)
    with pytest.raises(ValueError, match="Raise max_distance to at least 11"):
        attn.step(q[:, :, 11], k[:, :, 11], v[:, :, 11], state)
    # a window keeps every distance <= M however long the stream
    windowed = build_attention("cosformer", max_distance=10, chunk_size=4, window=11)
    assert windowed(q, k, v).shape == v.shape


@pytest.mark.parametrize("tokens, window", CASES)
def test_causal_outputs_and_gradients(tokens, window):
    attn = build_attention("cosformer", max_distance=64, chunk_size=CHUNK, window=window)
    q, k, v = random_qkv(tokens=tokens)
    for t in (CHUNK - 1, CHUNK, tokens - 2):  # chunk boundary, start of the next chunk, near the end
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for x in (q2, k2, v2):
            x[:, :, t + 1 :] += 10 * torch.randn_like(x[:, :, t + 1 :])
        out, out2 = attn(q, k, v), attn(q2, k2, v2)
        assert torch.equal(out[:, :, : t + 1], out2[:, :, : t + 1])
        assert not torch.allclose(out[:, :, t + 1 :], out2[:, :, t + 1 :])

        inputs = [x.clone().requires_grad_() for x in (q, k, v)]
        attn(*inputs)[:, :, : t + 1].sum().backward()
        for x in inputs:
            assert x.grad[:, :, t + 1 :].abs().max() == 0
            assert x.grad[:, :, : t + 1].abs().max() > 0


@pytest.mark.parametrize("window", [None, 50])
def test_step_stays_exact_over_a_long_episode(window):
    # A 3000-token stream (a full rollout) in float32: no drift between the two forms.
    q, k, v = random_qkv(batch=1, heads=1, tokens=3000, dim=4, value_dim=2, seed=1)
    attn = build_attention("cosformer", max_distance=4096, window=window)
    with torch.no_grad():
        stepped = run_steps(attn, q, k, v)
        parallel = attn(q, k, v)
    torch.testing.assert_close(stepped, parallel, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(stepped).all()


def test_step_state_size_does_not_grow():
    attn = build_attention("cosformer")
    q, k, v = random_qkv(batch=1, heads=2, tokens=50, dim=4)
    state = attn.init_state(1, 2, 4, 4)
    sizes = set()
    for t in range(50):
        _, state = attn.step(q[:, :, t], k[:, :, t], v[:, :, t], state)
        sizes.add((tuple(state.kv.shape), tuple(state.k_sum.shape)))
    assert sizes == {((1, 2, 8, 4), (1, 2, 8))}  # two d x dv matrices and two d vectors per head


@pytest.mark.parametrize("window", [None, 4])
def test_left_padding_does_not_change_real_tokens(window):
    attn = build_attention("cosformer", max_distance=64, chunk_size=CHUNK, window=window)
    q, k, v = random_qkv(batch=1, tokens=11)
    n_pad = 6
    pad = torch.zeros(1, 11 + n_pad, dtype=torch.bool)
    pad[:, :n_pad] = True
    expected = attn(q, k, v)
    for garbage in (0.0, 1e4, float("nan")):
        padded = [torch.cat([torch.full_like(x[:, :, :n_pad], garbage), x], dim=2) for x in (q, k, v)]
        out = attn(*padded, pad_mask=pad)
        assert torch.isfinite(out).all()
        assert out[:, :, :n_pad].abs().max() == 0
        torch.testing.assert_close(out[:, :, n_pad:], expected, atol=1e-6, rtol=1e-6)


def test_all_zero_features_give_finite_outputs_and_gradients():
    q, k, v = random_qkv(tokens=10)
    k = -k.abs()  # ReLU(k) == 0 everywhere: every weight is zero
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    out = build_attention("cosformer", chunk_size=4)(q, k, v)
    out.sum().backward()
    assert torch.isfinite(out).all() and out.abs().max() == 0
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


@pytest.mark.parametrize("chunk", [3, 16])  # several chunks; one chunk (the short-sequence path)
@pytest.mark.parametrize("window", [None, 3])
def test_gradcheck_float64(window, chunk):
    q, k, v = random_qkv(batch=1, heads=2, tokens=7, dim=3, value_dim=2, dtype=torch.float64, seed=5)
    pad = torch.zeros(1, 7, dtype=torch.bool)
    pad[0, 0] = True
    attn = build_attention("cosformer", max_distance=16, chunk_size=chunk, window=window)
    inputs = tuple(x.requires_grad_() for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda *a: attn(*a), inputs)
    assert torch.autograd.gradcheck(lambda *a: attn(*a, pad_mask=pad), inputs)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("window", [None, 100])
def test_chunkwise_form_never_builds_quadratic_or_tokens_d_d_tensors(window):
    T, d = 16384, 16
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=1, heads=1, tokens=T, dim=d))
    attn = build_attention("cosformer", max_distance=T, window=window)
    with _LargestTensor() as probe:
        attn(q, k, v).sum().backward()
    # The naive forms need T*T (268M) or T*d*d (4.2M) elements; chunkwise needs ~T*chunk_size.
    assert probe.largest <= T * max(attn.chunk_size, 2 * d + 1)
    assert probe.largest < T * d * d // 2


def test_training_keeps_only_features_values_output_and_normaliser_for_backward():
    """What the causal chunkwise form keeps for backward: the ReLU features, v, the output and the
    normaliser (about 4 (T, d) tensors), not per-chunk states or the (T, 2d) cos/sin features."""
    T, d = 256, 16
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=1, heads=1, tokens=T, dim=d))
    attn = build_attention("cosformer", max_distance=T, chunk_size=16)
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = attn(q, k, v)
    assert sum(kept.values()) <= 4 * (4 * T * d + 4 * T)  # float32: 4 (T, d) tensors and a few (T,) ones
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))
