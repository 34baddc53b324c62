"""Combiner-Fixed and Combiner-Logsparse: reference matrix, causality, incremental state, padding, cost.

step == parallel over spans, windows and lengths is checked for every mechanism in
test_attention_properties; the reference forms themselves in test_reference."""

from __future__ import annotations

import math

import pytest
import torch

from dt_attn import attention_weights, build_attention
from dt_attn.attention.combiner import CombinerFixed, CombinerLogsparse
from dt_attn.ops.combiner import combiner_fixed, combiner_logsparse, masked_max, summarize, window_groups

VARIANTS = ["combiner-fixed", "combiner-logsparse"]


def _qkv(b: int, h: int, t: int, d: int, dv: int | None = None, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, t, d, generator=g, dtype=dtype)
    k = torch.randn(b, h, t, d, generator=g, dtype=dtype)
    v = torch.randn(b, h, t, dv or d, generator=g, dtype=dtype)
    return q, k, v


def reference_matrix(variant, q, k, span, window=None, pad_mask=None) -> torch.Tensor:
    """The implied (B, H, T, T) attention matrix from the library's explicit reference form."""
    return attention_weights(variant, q, k, pad_mask, span=span, window=window)


def _forward(variant, q, k, v, span, window=None, pad_mask=None):
    ops = combiner_fixed if variant == "combiner-fixed" else combiner_logsparse
    return ops(q, k, v, span=span, window=window, pad_mask=pad_mask)


def _implied_matrix(variant, q, k, span, window=None, pad_mask=None):
    """The implementation's attention matrix, read out by attending to one-hot values."""
    b, h, t, _ = q.shape
    eye = torch.eye(t, dtype=q.dtype).expand(b, h, t, t)
    return _forward(variant, q, k, eye, span, window, pad_mask)


CASES = [
    ("combiner-fixed", 12, 4, None),
    ("combiner-fixed", 13, 3, None),
    ("combiner-fixed", 13, 3, 4),
    ("combiner-fixed", 14, 2, 6),
    ("combiner-logsparse", 12, 4, None),
    ("combiner-logsparse", 19, 2, None),
    ("combiner-logsparse", 23, 3, None),
    ("combiner-logsparse", 23, 3, 4),  # one earlier block at most
    ("combiner-logsparse", 29, 2, 13),  # six blocks back: groups of 4 and 2
    ("combiner-logsparse", 34, 2, 22),  # eleven blocks back: 8, 2 and 1
    ("combiner-logsparse", 13, 4, 2),  # window shorter than a block: the own block only
]


@pytest.mark.parametrize("variant,t,span,window", CASES)
def test_matches_reference_matrix(variant, t, span, window):
    q, k, v = _qkv(2, 2, t, 4, dtype=torch.float64)
    ref = reference_matrix(variant, q, k, span, window)
    got = _implied_matrix(variant, q, k, span, window)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(_forward(variant, q, k, v, span, window), ref @ v, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rows_are_full_causal_distributions(variant):
    q, k, _ = _qkv(1, 2, 37, 8)
    a = _implied_matrix(variant, q, k, span=5)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(1, 2, 37), atol=1e-5, rtol=0)
    assert a.triu(1).abs().max() == 0
    # Full attention: every earlier token gets some weight (no sparsity pattern).
    lower = torch.ones(37, 37, dtype=torch.bool).tril()
    assert (a[..., lower] > 0).all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("t", [16, 19])
def test_causal_outputs_and_gradients(variant, t):
    span = 4
    q, k, v = _qkv(2, 2, t, 6)
    out = _forward(variant, q, k, v, span)
    for cut in (3, 4, 9, t - 2):
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for x in (q2, k2, v2):
            x[:, :, cut + 1 :] = torch.randn_like(x[:, :, cut + 1 :]) * 5
        out2 = _forward(variant, q2, k2, v2, span)
        torch.testing.assert_close(out2[:, :, : cut + 1], out[:, :, : cut + 1], atol=1e-6, rtol=1e-6)
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
        _forward(variant, qg, kg, vg, span)[:, :, cut].sum().backward()
        for g in (qg.grad, kg.grad, vg.grad):
            assert g[:, :, cut + 1 :].abs().max() == 0
            assert g[:, :, : cut + 1].abs().max() > 0


def test_fixed_window_step_keeps_every_visible_summary():
    """K=20's rollout shape (span 8, window 59): a query sees the summaries of the 7 blocks before its
    own, so the step must hold min(closed blocks, 7) of them, and equal the parallel form throughout
    (it once dropped the oldest summary while 4 to 6 were cached, and stayed at 3 ever after)."""
    span, window, t = 8, 59, 100
    attn = build_attention("combiner-fixed", span=span, window=window)
    q, k, v = _qkv(2, 1, t, 16)
    full = attn(q, k, v)
    state = attn.init_state(2, 1, 16, 16)
    for i in range(t):
        out, state = attn.step(q[:, :, i], k[:, :, i], v[:, :, i], state)
        assert state.num_summaries == min((i + 1) // span, window // span)
        torch.testing.assert_close(out, full[:, :, i], atol=1e-5, rtol=1e-5)


def test_windowed_logsparse_state_stays_bounded():
    """With a window the state holds only the blocks the window reaches, and the open block attends
    to one region per set bit of their number."""
    span, window, t = 2, 23, 400  # eleven blocks back: regions of 8, 2 and 1 blocks
    attn = CombinerLogsparse(span=span, window=window)
    q, k, v = _qkv(1, 1, t, 2)
    state = attn.init_state(1, 1, 2, 2)
    for i in range(t):
        _, state = attn.step(q[:, :, i], k[:, :, i], v[:, :, i], state)
        b = (i + 1) // span  # the open block
        seen = min(b, 11)
        assert len(state.blocks) == seen and state.num_summaries == seen.bit_count()
        assert sorted(n for _, n in state.regions) == [n for n in (1, 2, 4, 8) if seen & n]
        assert all(first >= b - seen for first, _ in state.regions)


def test_step_state_grows_sublinearly():
    span, t = 4, 130
    q, k, v = _qkv(1, 1, t, 2)
    fixed, fixed_w, logs = (
        CombinerFixed(span=span),
        CombinerFixed(span=span, window=10),
        CombinerLogsparse(span=span),
    )
    states = [m.init_state(1, 1, 2, 2) for m in (fixed, fixed_w, logs)]
    for i in range(t):
        for n, m in enumerate((fixed, fixed_w, logs)):
            _, states[n] = m.step(q[:, :, i], k[:, :, i], v[:, :, i], states[n])
        blocks = (i + 1) // span
        assert states[0].num_summaries == blocks
        assert states[0].k_blk.shape[2] == (i + 1) % span
        assert states[1].num_summaries == min(blocks, 10 // span)
        assert states[2].num_summaries == blocks.bit_count()
        assert states[2].num_summaries <= math.log2(max(blocks, 1)) + 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_left_padding_garbage_does_not_leak(variant):
    b, h, t, d, span = 2, 2, 17, 4, 3
    q, k, v = _qkv(b, h, t, d)
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[0, :7] = True  # covers blocks 0 and 1 entirely and part of block 2
    pad[1, :2] = True
    outs = []
    for garbage in (0.0, 1e4, float("nan")):
        qg, kg, vg = (x.clone() for x in (q, k, v))
        for x in (qg, kg, vg):
            x[pad[:, None, :, None].expand_as(x)] = garbage
        qg, kg, vg = (x.requires_grad_() for x in (qg, kg, vg))
        out = _forward(variant, qg, kg, vg, span, pad_mask=pad)
        assert torch.isfinite(out).all()
        assert out[pad[:, None, :, None].expand_as(out)].abs().max() == 0
        out.square().sum().backward()
        for x in (qg, kg, vg):
            assert torch.isfinite(x.grad).all()
            assert x.grad[pad[:, None, :, None].expand_as(x)].abs().max() == 0
        outs.append(out.detach())
    torch.testing.assert_close(outs[1], outs[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(outs[2], outs[0], atol=1e-6, rtol=1e-6)
    ref = reference_matrix(variant, q.double(), k.double(), span, pad_mask=pad)
    torch.testing.assert_close(outs[0].double(), ref @ v.double(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_all_padded_region_is_ignored(variant):
    t, span = 16, 4
    q, k, _ = _qkv(1, 2, t, 4, dtype=torch.float64)
    pad = torch.zeros(1, t, dtype=torch.bool)
    pad[0, 4:8] = True  # block 1 is entirely padding
    a = _implied_matrix(variant, q, k, span, pad_mask=pad)
    real = ~pad[0]
    # An empty region taking softmax mass (logit q . 0 = 0) would make real rows sum below one.
    torch.testing.assert_close(a[0, :, real].sum(-1), torch.ones(2, int(real.sum()), dtype=torch.float64))
    assert a[..., pad[0]].abs().max() == 0
    torch.testing.assert_close(a, reference_matrix(variant, q, k, span, pad_mask=pad))


@pytest.mark.parametrize("variant", VARIANTS)
def test_window_with_left_padding_matches_reference(variant):
    q, k, _ = _qkv(2, 2, 27, 4, dtype=torch.float64, seed=5)
    pad = torch.zeros(2, 27, dtype=torch.bool)
    pad[0, :9] = True  # three whole blocks and no more
    pad[1, :4] = True
    got = _implied_matrix(variant, q, k, 3, window=14, pad_mask=pad)
    torch.testing.assert_close(got, reference_matrix(variant, q, k, 3, window=14, pad_mask=pad))


def test_window_groups_follow_the_binary_digits_from_the_window_start():
    assert window_groups(0, 13) == [(0, 8), (8, 4), (12, 1)]  # no window: aligned, as in training
    assert window_groups(5, 16) == [(5, 8), (13, 2), (15, 1)]  # 11 blocks from block 5
    assert window_groups(7, 7) == []


def test_logsparse_window_beyond_the_sequence_changes_nothing():
    q, k, v = _qkv(2, 2, 37, 4, dtype=torch.float64)
    for span in (1, 3, 5):
        whole = combiner_logsparse(q, k, v, span=span)
        torch.testing.assert_close(combiner_logsparse(q, k, v, span=span, window=37), whole)
        assert not torch.allclose(combiner_logsparse(q, k, v, span=span, window=36 - span), whole)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("window", [None, 5])
def test_gradcheck_float64(variant, window):
    q, k, v = _qkv(1, 1, 9, 2, dtype=torch.float64, seed=3)
    pad = torch.zeros(1, 9, dtype=torch.bool)
    pad[0, :2] = True
    inputs = tuple(x.requires_grad_() for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: _forward(variant, a, b, c, 2, window, pad), inputs)
    q, k, v = _qkv(2, 2, 11, 3, dtype=torch.float64, seed=4)
    inputs = tuple(x.requires_grad_() for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: _forward(variant, a, b, c, 3, window), inputs,
                                    fast_mode=True)


def _plain_summary(qbar, k, v, valid):
    """summarize's formula written with autograd ops only."""
    logits = (k * qbar.unsqueeze(-2)).sum(-1) / math.sqrt(qbar.shape[-1])
    logits = logits.masked_fill(~valid, float("-inf"))
    logits = torch.where(valid.any(-1, keepdim=True), logits, torch.zeros_like(logits))
    return (torch.softmax(logits, -1).unsqueeze(-1) * v).sum(-2)


def test_summary_gradient_matches_autograd_of_the_formula():
    g = torch.Generator().manual_seed(5)
    qbar = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 4, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 4, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    valid = torch.rand(2, 3, 4, 6, generator=g) > 0.3
    valid[0, 0, 0] = False  # a region without a valid token
    valid[1, 2, 3] = True
    d_out = torch.randn(2, 3, 4, 7, generator=g, dtype=torch.float64)
    for mask in (valid, None):
        ours = summarize(qbar, k, v, mask)
        plain = _plain_summary(qbar, k, v, torch.ones_like(valid) if mask is None else mask)
        torch.testing.assert_close(ours, plain)
        for a, b in zip(torch.autograd.grad(ours, (qbar, k, v), d_out),
                        torch.autograd.grad(plain, (qbar, k, v), d_out)):
            torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda a, b, c: summarize(a, b, c, valid), (qbar, k, v))


@pytest.mark.parametrize("variant", VARIANTS)
def test_bfloat16_with_padding_keeps_its_dtype(variant):
    q, k, v = (x.to(torch.bfloat16).requires_grad_() for x in _qkv(2, 1, 13, 8))
    pad = torch.zeros(2, 13, dtype=torch.bool)
    pad[0, :5] = True
    out = _forward(variant, q, k, v, 3, None, pad)
    out.float().sum().backward()
    assert out.dtype == q.grad.dtype == k.grad.dtype == v.grad.dtype == torch.bfloat16
    reference = _forward(variant, *(x.detach().float() for x in (q, k, v)), 3, None, pad)
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)


def test_token_max_gradient_goes_to_the_maxima():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [2.0, 0.0]], requires_grad=True)
    masked_max(x, None).backward(torch.tensor([10.0, 20.0]))
    assert x.grad.tolist() == [[0.0, 20.0], [10.0, 20.0], [0.0, 0.0]]  # a tie feeds both entries
    x.grad = None
    masked_max(x, torch.tensor([True, False, True])).backward(torch.tensor([10.0, 20.0]))
    assert x.grad.tolist() == [[0.0, 20.0], [0.0, 0.0], [10.0, 0.0]]


@pytest.mark.parametrize("variant", VARIANTS)
def test_long_sequence_never_builds_tokens_squared(variant):
    t = 16384
    q, k, v = (x.requires_grad_() for x in _qkv(1, 1, t, 8))
    largest = 0

    def pack(x: torch.Tensor) -> torch.Tensor:
        nonlocal largest
        largest = max(largest, x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = _forward(variant, q, k, v, span=None)
    out.sum().backward()
    assert out.shape == (1, 1, t, 8) and torch.isfinite(q.grad).all()
    # Default span 128: direct + region logits are ~T * 2 * sqrt(T) = 4.2M entries, T^2 is 268M.
    # The hook does see the probability tensors (T * span entries each).
    assert t * math.isqrt(t) <= largest <= 4 * t * math.isqrt(t)


@pytest.mark.parametrize("variant", VARIANTS)
def test_non_contiguous_inputs(variant):
    q, k, v = _qkv(2, 3, 20, 4)
    as_btHd = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v)]
    assert not as_btHd[0].is_contiguous()
    torch.testing.assert_close(_forward(variant, *as_btHd, 5), _forward(variant, q, k, v, 5))


@pytest.mark.parametrize("variant", VARIANTS)
def test_default_span_is_sqrt_length(variant):
    q, k, v = _qkv(1, 1, 50, 4)
    # ceil(sqrt(50)) = 8
    torch.testing.assert_close(_forward(variant, q, k, v, None), _forward(variant, q, k, v, 8))


@pytest.mark.parametrize("variant", VARIANTS)
def test_window_limits_the_reach_of_summaries(variant):
    q, k, _ = _qkv(1, 1, 24, 4)
    a = _implied_matrix(variant, q, k, span=4, window=4)
    # Token 20 (block 5) sees block 4 (tokens 16..19) but nothing before it.
    assert a[0, 0, 20, :16].abs().max() == 0
    assert (a[0, 0, 20, 16:21] > 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(1, 1, 24))


@pytest.mark.parametrize(
    "variant,opts,name",
    [
        ("combiner-fixed", {"span": 0}, "span"),
        ("combiner-fixed", {"span": 2.5}, "span"),
        ("combiner-fixed", {"window": 0}, "window"),
        ("combiner-fixed", {"window": -3}, "window"),
        ("combiner-logsparse", {"span": -1}, "span"),
        ("combiner-logsparse", {"span": True}, "span"),
        ("combiner-logsparse", {"window": 0}, "window"),
    ],
)
def test_bad_options_raise(variant, opts, name):
    with pytest.raises(ValueError, match=name):
        build_attention(variant, **opts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_form_needs_a_span(variant):
    with pytest.raises(ValueError, match="span"):
        build_attention(variant).init_state(1, 1, 4, 4)


def test_unknown_option_and_registry():
    with pytest.raises(ValueError, match="width"):
        build_attention("combiner-logsparse", width=4)
    attn = build_attention("combiner-fixed", span=8, window=16)
    assert attn.options() == {"span": 8, "window": 16}
    assert build_attention("combiner-logsparse", span=8, window=16).options() == {"span": 8, "window": 16}
