"""Properties every registered attention mechanism must have, checked over a grid of shapes.

The incremental forms (``step`` one token at a time, ``step_many`` in groups of any size) must equal
the parallel form, with and without a sliding window, for lengths that are and are not multiples of
the mechanism's block (Combiner's ``span``, cosFormer's ``chunk_size``) and windows reaching from
less than one block to several blocks back.
"""

from __future__ import annotations

import pytest
import torch
from conftest import SIZES, mechanism_options, random_qkv, run_steps, window_grid

from dt_attn import available_attentions, build_attention

TOLERANCE = {torch.float32: 2e-6, torch.float64: 1e-13}  # relative to 1 + max |output|
# step_many group sizes, cycled: empty calls, single tokens, and calls longer than a ring's spare
# slots (RING_SPARE + 1 = 8 tokens), which the windowed forms feed in pieces.
GROUPS = (3, 1, 0, 9, 2, 5, 8, 4, 17)


def run_step_many(attn, q, k, v):
    """Outputs of ``step_many`` fed in groups of the sizes GROUPS cycles through (some empty)."""
    B, H, T, D = q.shape
    state = attn.init_state(B, H, D, v.shape[-1], dtype=q.dtype)
    outs, start, i = [], 0, 0
    while start < T:
        n = GROUPS[i % len(GROUPS)]
        out, state = attn.step_many(q[:, :, start : start + n], k[:, :, start : start + n],
                                    v[:, :, start : start + n], state)
        assert out.shape == (B, H, min(n, T - start), v.shape[-1])
        outs.append(out)
        start, i = start + n, i + 1
    return torch.cat(outs, dim=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", available_attentions())
def test_incremental_forms_equal_the_parallel_form(name, size, dtype):
    tol = TOLERANCE[dtype]
    for window, length in window_grid(size):
        attn = build_attention(name, **mechanism_options(name, size, window, length))
        q, k, v = random_qkv(batch=2, heads=2, tokens=length, dim=4, value_dim=3, dtype=dtype,
                             seed=length + (window or 0))
        with torch.no_grad():
            full = attn(q, k, v)
            for how, run in (("step", run_steps), ("step_many", run_step_many)):
                got = run(attn, q, k, v)
                err = (got - full).abs().max().item()
                assert err <= tol * (1 + full.abs().max().item()), (
                    f"{name} {attn.options()} T={length}: {how} differs from the parallel form by {err:.3g}"
                )


@pytest.mark.parametrize("windowed", [False, True], ids=["full", "window"])
@pytest.mark.parametrize("name", available_attentions())
def test_empty_inputs_give_empty_outputs(name, windowed):
    """B = 0 batches, T = 0 sequences and steps of 0 new tokens return correctly shaped empty outputs
    (lengths past one block and one chunk included), and the empty step leaves the state as it was."""
    H, D, Dv, size = 2, 4, 3, 3
    attn = build_attention(name, **mechanism_options(name, size, 5 if windowed else None, 32))
    for B, T in ((0, 0), (0, 2), (0, 11), (2, 0)):
        q, k, v = (x.requires_grad_() for x in random_qkv(batch=B, heads=H, tokens=T, dim=D, value_dim=Dv))
        out = attn(q, k, v)
        assert out.shape == (B, H, T, Dv) and out.dtype == v.dtype
        out.sum().backward()
        assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
        assert attn(q, k, v, pad_mask=torch.zeros(B, T, dtype=torch.bool)).shape == (B, H, T, Dv)
    with torch.no_grad():
        q, k, v = random_qkv(batch=2, heads=H, tokens=13, dim=D, value_dim=Dv)
        full = attn(q, k, v)
        for B in (0, 2):
            state = attn.init_state(B, H, D, Dv)
            out, state = attn.step_many(q[:B, :, :0], k[:B, :, :0], v[:B, :, :0], state)
            assert out.shape == (B, H, 0, Dv)
            outs = []
            for t in range(13):
                if t == 7:  # an empty call in the middle of a sequence changes nothing
                    out, state = attn.step_many(q[:B, :, :0], k[:B, :, :0], v[:B, :, :0], state)
                    assert out.shape == (B, H, 0, Dv)
                out, state = attn.step(q[:B, :, t], k[:B, :, t], v[:B, :, t], state)
                assert out.shape == (B, H, Dv)
                outs.append(out)
            torch.testing.assert_close(torch.stack(outs, dim=2), full[:B], atol=1e-5, rtol=1e-5)
            out, state = attn.step_many(q[:B, :, :10], k[:B, :, :10], v[:B, :, :10], state)
            assert out.shape == (B, H, 10, Dv)
