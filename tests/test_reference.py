"""The explicit O(T^2) reference forms (dt_attn.ops.reference): the oracle of every fast form.

Checked three ways: worked examples straight from each formula, the structure of the weights
(causal distributions, padding, windows), and equality with every registered fast parallel form.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from conftest import SIZES, mechanism_grid, mechanism_options, random_qkv, value_dim

from dt_attn import (
    attention_options,
    attention_weights,
    available_attentions,
    build_attention,
    build_token_mixer,
    capabilities,
    reference_attention,
)

#: the mechanisms whose output is a (tokens x tokens) weights matrix times the values
WEIGHTED = [n for n in available_attentions("qkv") if not capabilities(n).elementwise]


def _left_padding(batch: int, tokens: int, n_pad: int) -> torch.Tensor:
    pad = torch.zeros(batch, tokens, dtype=torch.bool)
    pad[-1, :n_pad] = True
    return pad


def test_every_mechanism_declares_the_options_its_constructor_takes():
    """The declared OPTIONS (what build_attention accepts and attention_options lists) are the constructor's
    keyword arguments with their defaults, after the widths a hidden-state mixer is built with."""
    for name in available_attentions():
        cls = type(build_token_mixer(name, 8, 2))
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        if capabilities(name).kind == "hidden":
            assert [p.name for p in params[:2]] == ["embed_dim", "n_heads"]
            params = params[2:]
        assert {p.name: p.default for p in params} == attention_options(name), name


def test_every_mechanism_has_an_oracle_that_is_not_its_fast_form():
    """Each mechanism's reference comes from dt_attn.ops.reference, and those without (T x T) weights say
    so in one line."""
    for name in available_attentions("qkv"):
        attn = build_attention(name)
        assert type(attn).reference is not type(attn).forward
        if capabilities(name).elementwise:
            q, k, _ = random_qkv(tokens=3)
            with pytest.raises(ValueError, match="no \\(tokens x tokens\\) attention weights"):
                attention_weights(name, q, k)
    for name in available_attentions("hidden"):
        cls = type(build_token_mixer(name, 8, 2))
        assert cls.reference is not cls.forward


@pytest.mark.parametrize("windowed", [False, True], ids=["full", "window"])
@pytest.mark.parametrize("name", WEIGHTED)
def test_rows_are_causal_distributions(name, windowed):
    size, window, T = 3, (7 if windowed else None), 23
    q, k, _ = random_qkv(tokens=T, dim=4, dtype=torch.float64, seed=1)
    if name == "cosformer":  # positive features: no row falls under the eps guard (checked below)
        q, k = q.abs() + 0.1, k.abs()
    pad = _left_padding(2, T, 5)
    a = attention_weights(name, q, k, pad, **mechanism_options(name, size, window, T))
    assert a.shape == (2, 2, T, T) and a.min() >= 0
    assert a.triu(1).abs().max() == 0
    assert a[1, :, :5].abs().max() == 0 and a[1, :, :, :5].abs().max() == 0  # padded queries and keys
    real = torch.ones(2, 1, T, dtype=torch.bool)
    real[1, :, :5] = False
    sums = a.sum(-1)
    torch.testing.assert_close(sums[real.expand_as(sums)],
                               torch.ones(int(real.sum()) * 2, dtype=torch.float64))
    if windowed:  # no mechanism reaches further back than its window plus its own block
        lag = torch.arange(T)[:, None] - torch.arange(T)[None, :]
        assert a[..., lag >= window + size].abs().max() == 0
        if name in ("softmax", "cosformer"):  # a token window: every key inside it gets weight
            assert a[0][..., (lag >= 0) & (lag < window)].min() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", available_attentions("qkv"))
def test_the_reference_form_equals_the_fast_form(name, size, dtype):
    """reference_attention (attention_weights @ v where there are weights) equals the parallel form,
    windowed or not, with and without left padding, over lengths that are and are not multiples of the
    mechanism's sizes; learned parameters (AFT-local's biases) moved off their initial values."""
    tol = 5e-6 if dtype == torch.float32 else 1e-12
    for window, length in mechanism_grid(name, size):
        options = mechanism_options(name, size, window, length)
        fast = build_attention(name, **options).to(dtype)
        q, k, v = random_qkv(tokens=length, dim=4, value_dim=value_dim(name, 3, 4), dtype=dtype, seed=length)
        for pad in (None, _left_padding(2, length, min(size + 1, length))):
            ref = reference_attention(name, q, k, v, pad, **options)
            if name in WEIGHTED:
                torch.testing.assert_close(ref, attention_weights(name, q, k, pad, **options) @ v, atol=0,
                                           rtol=0)
            torch.testing.assert_close(fast(q, k, v, pad), ref, atol=tol, rtol=tol)
        if any(True for _ in fast.parameters()):
            with torch.no_grad():
                for p in fast.parameters():
                    p.normal_(generator=torch.Generator().manual_seed(length))
            torch.testing.assert_close(fast(q, k, v), fast.reference(q, k, v), atol=tol, rtol=tol)


def test_softmax_worked_example():
    q = torch.tensor([[[[1.0, 2.0], [0.5, -1.0]]]], dtype=torch.float64)
    k = torch.tensor([[[[3.0, 0.0], [1.0, 1.0]]]], dtype=torch.float64)
    a = attention_weights("softmax", q, k)
    logits = torch.tensor([0.5 * 3.0, 0.5 - 1.0], dtype=torch.float64) / math.sqrt(2)
    torch.testing.assert_close(a[0, 0], torch.stack([torch.tensor([1.0, 0.0], dtype=torch.float64),
                                                     torch.softmax(logits, 0)]))
    assert attention_weights("softmax", q, k, window=1)[0, 0, 1].tolist() == [0.0, 1.0]


def test_cosformer_worked_example_and_eps_guard():
    q = torch.tensor([[[[-1.0, -2.0], [0.5, 3.0]]]], dtype=torch.float64)  # query 0: all-zero features
    k = torch.tensor([[[[2.0, 1.0], [-1.0, 4.0]]]], dtype=torch.float64)
    a = attention_weights("cosformer", q, k, max_distance=3)
    w10 = (0.5 * 2.0 + 3.0 * 1.0) * math.cos(math.pi / 2 / 3)
    w11 = 3.0 * 4.0
    torch.testing.assert_close(a[0, 0, 1], torch.tensor([w10, w11], dtype=torch.float64) / (w10 + w11))
    assert a[0, 0, 0].tolist() == [0.0, 0.0]  # 0 / max(0, eps): the guarded denominator
    small = attention_weights("cosformer", q * 1e-4, k * 1e-4, max_distance=3, eps=1e-6)
    torch.testing.assert_close(small[0, 0, 1].sum(),
                               torch.tensor((w10 + w11) * 1e-8 / 1e-6, dtype=torch.float64))


def test_combiner_fixed_worked_example():
    """Span 2: token 2 attends to itself directly and to block 0 through its summary."""
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(1, 1, 3, 2, generator=g, dtype=torch.float64) for _ in range(2))
    a = attention_weights("combiner-fixed", q, k, span=2)[0, 0]
    s = math.sqrt(2)
    q0, q1, q2 = q[0, 0]
    k0, k1, k2 = k[0, 0]
    qbar, kbar = torch.maximum(q0, q1), torch.maximum(k0, k1)
    p = torch.softmax(torch.stack([qbar @ k0, qbar @ k1]) / s, 0)  # the region's own distribution
    direct, region = torch.softmax(torch.stack([q2 @ k2, q2 @ kbar]) / s, 0)  # one partition function
    torch.testing.assert_close(a[2], torch.stack([region * p[0], region * p[1], direct]))
    torch.testing.assert_close(a[1, :2], torch.softmax(torch.stack([q1 @ k0, q1 @ k1]) / s, 0))


def test_combiner_logsparse_region_shapes():
    """The regions of query 10 (span 1): without a window aligned runs of 8 and 2 blocks; with a
    window of 6 blocks, runs of 4 and 2 from the window's start. Keys of one region share the
    region's weight in proportion to exp(qbar . k_j / sqrt(d))."""
    g = torch.Generator().manual_seed(4)
    q, k = (torch.randn(1, 1, 11, 3, generator=g, dtype=torch.float64) for _ in range(2))
    for window, runs in ((None, [range(8), range(8, 10)]), (6, [range(4, 8), range(8, 10)])):
        row = attention_weights("combiner-logsparse", q, k, span=1, window=window)[0, 0, 10]
        assert row[: runs[0].start].abs().sum() == 0 and (row[runs[0].start :] > 0).all()
        for run in runs:
            qbar = q[0, 0, run.start : run.stop].amax(0)
            p = torch.softmax(k[0, 0, run.start : run.stop] @ qbar / math.sqrt(3), 0)
            torch.testing.assert_close(row[run.start : run.stop] / row[run.start : run.stop].sum(), p)


@pytest.mark.parametrize("name", available_attentions("qkv"))
def test_empty_inputs(name):
    dv = value_dim(name, 3, 4)
    for B, T in ((0, 0), (0, 6), (2, 0)):
        q, k, v = random_qkv(batch=B, tokens=T, dim=4, value_dim=dv)
        if name in WEIGHTED:
            assert attention_weights(name, q, k).shape == (B, 2, T, T)
        assert reference_attention(name, q, k, v).shape == (B, 2, T, dv)


def test_bad_name_options_and_shapes_raise():
    q, k, v = random_qkv()
    with pytest.raises(ValueError, match="unknown attention 'sofmax'; available: aft-local"):
        attention_weights("sofmax", q, k)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['span'\]; valid options: window"):
        attention_weights("softmax", q, k, span=3)
    with pytest.raises(ValueError, match="pad_mask must be"):
        attention_weights("softmax", q, k, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected v"):
        reference_attention("softmax", q, k, v[:, :, :3])
    with pytest.raises(ValueError, match="window must be an int >= 1 or None .*, got 0"):
        attention_weights("combiner-fixed", q, k, span=2, window=0)
    with pytest.raises(ValueError, match="Raise max_distance"):
        attention_weights("cosformer", q, k, max_distance=5)
