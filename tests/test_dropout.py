"""The transformer's dropout: F.dropout's distribution, reproducible from torch's generator."""

import math

import pytest
import torch

from dt_attn.ops.dropout import Dropout, dropout

N = 1_000_000


def test_eval_mode_and_zero_p_are_identity():
    x = torch.randn(4, 5)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    layer = Dropout(0.3).eval()
    assert layer(x) is x


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_and_scale(p):
    torch.manual_seed(0)
    out = dropout(torch.ones(N), p, training=True)
    dropped = (out == 0).double().mean().item()
    # 5 standard deviations of a binomial proportion
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / N)
    kept = out[out != 0]
    assert torch.equal(kept, torch.full_like(kept, 1 / (1 - p)))
    assert abs(out.double().mean().item() - 1.0) < 5 * math.sqrt(p / (1 - p) / N)  # inverted: mean kept


def test_entries_are_independent():
    torch.manual_seed(1)
    p = 0.25
    zero = dropout(torch.ones(N), p, training=True) == 0
    both = (zero[:-1] & zero[1:]).double().mean().item()
    assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / N)


def test_gradient_is_the_scaled_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 30, requires_grad=True)
    out = dropout(x, 0.2, training=True)
    out.sum().backward()
    expected = (out != 0).float() / 0.8
    torch.testing.assert_close(x.grad, expected)
    torch.testing.assert_close(out, x.detach() * expected)


def test_reproducible_from_the_generator_state():
    x = torch.randn(1000)
    torch.manual_seed(3)
    a = dropout(x, 0.1, training=True)
    state = torch.get_rng_state()
    b = dropout(x, 0.1, training=True)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.1, training=True), a)
    torch.set_rng_state(state)
    assert torch.equal(dropout(x, 0.1, training=True), b)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_probability_raises(p):
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        Dropout(p)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_keeps_the_input_dtype(dtype):
    torch.manual_seed(4)
    x = torch.ones(N, dtype=dtype)
    out = dropout(x, 0.1, training=True)
    assert out.dtype == dtype
    assert abs((out == 0).double().mean().item() - 0.1) < 5 * math.sqrt(0.09 / N)
