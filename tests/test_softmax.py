"""Softmax attention: reference equality, causality, padding and the KV cache's growth.

step == parallel over windows and lengths is checked for every mechanism in test_attention_properties."""

from __future__ import annotations

import pytest
import torch
from conftest import random_qkv, run_steps

from dt_attn import build_attention, reference_attention

WINDOWS = [None, 1, 4]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("with_pad", [False, True])
def test_matches_explicit_reference(window, with_pad):
    q, k, v = random_qkv(tokens=13, dim=4, value_dim=3, dtype=torch.float64)
    pad = None
    if with_pad:
        pad = torch.zeros(2, 13, dtype=torch.bool)
        pad[1, :5] = True
    out = build_attention("softmax", window=window)(q, k, v, pad)
    ref = reference_attention("softmax", q, k, v, pad, window=window)  # padded queries give zeros
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("window", WINDOWS)
def test_causal_outputs_and_gradients(window):
    attn = build_attention("softmax", window=window)
    q, k, v = random_qkv(tokens=12)
    t = 6
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t + 1 :] += 10 * torch.randn_like(x[:, :, t + 1 :])
    torch.testing.assert_close(attn(q2, k2, v2)[:, :, : t + 1], attn(q, k, v)[:, :, : t + 1], atol=1e-6,
                               rtol=0)
    assert not torch.allclose(attn(q2, k2, v2)[:, :, t + 1 :], attn(q, k, v)[:, :, t + 1 :])

    inputs = [x.clone().requires_grad_() for x in (q, k, v)]
    attn(*inputs)[:, :, : t + 1].sum().backward()
    for x in inputs:
        assert x.grad[:, :, t + 1 :].abs().max() == 0
    assert inputs[2].grad[:, :, : t + 1].abs().max() > 0


def test_step_cache_grows_past_its_first_allocation():
    q, k, v = random_qkv(batch=2, heads=2, tokens=300, dim=4)
    attn = build_attention("softmax")
    assert attn.init_state(2, 2, 4, 4).keys.shape[2] < 300
    with torch.no_grad():
        torch.testing.assert_close(run_steps(attn, q, k, v), attn(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", WINDOWS)
def test_left_padding_does_not_change_real_tokens(window):
    attn = build_attention("softmax", window=window)
    q, k, v = random_qkv(batch=1, tokens=8)
    n_pad = 5
    pad = torch.zeros(1, 8 + n_pad, dtype=torch.bool)
    pad[:, :n_pad] = True
    expected = attn(q, k, v)
    for garbage in (0.0, 1e4, float("nan")):
        padded = [torch.cat([torch.full_like(x[:, :, :n_pad], garbage), x], dim=2) for x in (q, k, v)]
        out = attn(*padded, pad_mask=pad)
        assert torch.isfinite(out).all()
        assert out[:, :, :n_pad].abs().max() == 0  # padded queries output zeros
        torch.testing.assert_close(out[:, :, n_pad:], expected, atol=1e-6, rtol=1e-6)


def test_fully_padded_rows_have_finite_gradients():
    attn = build_attention("softmax")
    q, k, v = (x.requires_grad_() for x in random_qkv(tokens=6))
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, :3] = True
    pad[1, :] = True  # an all-padding sequence
    out = attn(q, k, v, pad)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert out[1].abs().max() == 0
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
