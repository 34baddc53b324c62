"""The benchmarks' counted matrix work equals the hand count of small known shapes, and the roofline
fraction divides it by time and peak."""

from __future__ import annotations

import pytest
import torch

from dt_attn import available_attentions, capabilities
from experiments.benchmarks.roofline import attention_flops, count_flops, peak_fraction, visible_pairs


def test_visible_pairs_of_a_causal_mask():
    assert visible_pairs(4, 4, causal=True) == 10  # 1 + 2 + 3 + 4
    assert visible_pairs(4, 2, causal=True) == 1 + 2 + 2 + 2  # queries past the keys see every key
    assert visible_pairs(3, 5, causal=False) == 15


def test_softmax_counts_the_causal_pairs_of_the_fused_kernel():
    # 10 visible pairs of 4 tokens; forward QK^T and PV: 2 products x 2 FLOPs x 10 pairs x 2 dims = 80;
    # backward dV, dP, dQ, dK: twice that
    assert attention_flops("softmax", {}, batch=1, heads=1, tokens=4, head_dim=2) == 3 * 80
    # linear in batch x heads
    assert attention_flops("softmax", {}, batch=2, heads=3, tokens=4, head_dim=2) == 6 * 3 * 80


def test_cosformer_counts_its_chunk_products_and_states():
    # one chunk (T <= chunk): (T x d)(d x T) and (T x T)(T x dv): 2 * 4*4*2 each = 128; backward 2x
    assert attention_flops("cosformer", {"chunk_size": 4}, 1, 1, tokens=4, head_dim=2) == 3 * 128
    # two chunks of 4, d = dv = 2. Forward: the diagonal chunk pairs (QK^T, 2 chunks x 2*4*4*2 = 128; scores
    # x V, 128); the first chunk's state of the 2d cos/sin features (4x4)^T(4x2) = 64, the second chunk's
    # queries against it (64) and against its key sum (4x4)(4x1) = 32: 416. Backward, by hand, with
    # recomputation: the diagonal scores again (128), their gradient dnum V^T (128), dQ, dK and dV from them
    # (3 x 128); the first chunk's state again (64), dq from the state (64) and key sum (32), the reverse sums
    # of q^T dnum (64) and dden^T q (32), dv (64) and dk (64) of the first chunk's keys: 640 + 384
    assert attention_flops("cosformer", {"chunk_size": 4}, 1, 1, tokens=8, head_dim=2) == 416 + 640 + 384


def test_every_registered_attention_is_counted():
    """Attention over q, k, v multiplies matrices, except the elementwise mechanisms (AFT), whose work the
    counter does not count: their roofline fraction is 0 by definition."""
    for name in available_attentions("qkv"):
        flops = attention_flops(name, {}, batch=1, heads=2, tokens=12, head_dim=4)
        assert (flops == 0) if capabilities(name).elementwise else (flops > 0), name


def test_count_flops_returns_the_result_and_the_products_of_the_call():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    out, flops = count_flops(torch.matmul, a, b)
    assert torch.equal(out, a @ b) and flops == 2 * 3 * 5 * 7


def test_peak_fraction_is_work_over_time_over_peak():
    assert peak_fraction(5e9, 0.5, peak_gflops=20.0) == pytest.approx(0.5)
    assert peak_fraction(None, 1.0, 20.0) is None and peak_fraction(1e9, float("nan"), 20.0) is None


def test_in_place_products_are_counted():
    state, a, b = torch.zeros(2, 4, 5), torch.randn(2, 4, 3), torch.randn(2, 3, 5)
    assert count_flops(lambda: state.baddbmm_(a, b))[1] == 2 * 2 * 4 * 3 * 5
    m = torch.zeros(4, 5)
    assert count_flops(lambda: m.addmm_(a[0], b[0]))[1] == 2 * 4 * 3 * 5
