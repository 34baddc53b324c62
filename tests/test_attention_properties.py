"""Properties every registered token mixer must have, checked over a grid of shapes.

The incremental forms (``step`` one token at a time, ``step_many`` in groups of any size) must equal
the parallel form, with and without a sliding window, for lengths that are and are not multiples of
the mechanism's structural lengths (the options its capabilities name ``sizes``: Combiner's ``span``,
cosFormer's ``chunk_size``, N-gram's ``n``, a local window) and windows reaching from less than one block
to several blocks back. Attention over q, k, v and mixers of hidden states alike.
"""

from __future__ import annotations

import pytest
import torch
from conftest import SIZES, mechanism_grid, mechanism_options, random_qkv, run_steps, value_dim

from dt_attn import available_attentions, build_attention, build_token_mixer, capabilities

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
@pytest.mark.parametrize("name", available_attentions("qkv"))
def test_incremental_forms_equal_the_parallel_form(name, size, dtype):
    tol = TOLERANCE[dtype]
    for window, length in mechanism_grid(name, size):
        attn = build_attention(name, **mechanism_options(name, size, window, length)).to(dtype)
        _perturb(attn, seed=length)
        q, k, v = random_qkv(batch=2, heads=2, tokens=length, dim=4, value_dim=value_dim(name, 3, 4),
                             dtype=dtype, seed=length + (window or 0))
        with torch.no_grad():
            full = attn(q, k, v)
            for how, run in (("step", run_steps), ("step_many", run_step_many)):
                got = run(attn, q, k, v)
                err = (got - full).abs().max().item()
                assert err <= tol * (1 + full.abs().max().item()), (
                    f"{name} {attn.options()} T={length}: {how} differs from the parallel form by {err:.3g}"
                )


@pytest.mark.parametrize("windowed", [False, True], ids=["full", "window"])
@pytest.mark.parametrize("name", available_attentions("qkv"))
def test_empty_inputs_give_empty_outputs(name, windowed):
    """B = 0 batches, T = 0 sequences and steps of 0 new tokens return correctly shaped empty outputs
    (lengths past one block and one chunk included), and the empty step leaves the state as it was."""
    H, D, Dv, size = 2, 4, value_dim(name, 3, 4), 3
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


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Move every learned parameter of a mechanism (AFT-local's biases, a gMLP kernel) off its
    initialisation, so that the comparisons see them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def run_hidden_steps(mixer, h, groups):
    """Outputs of a hidden-state mixer's ``step_many`` fed h (B, T, E) in groups of these sizes, cycled."""
    state = mixer.init_state(h.shape[0], dtype=h.dtype)
    outs, start, i = [], 0, 0
    while start < h.shape[1]:
        n = groups[i % len(groups)]
        out, state = mixer.step_many(h[:, start : start + n], state)
        assert out.shape == (h.shape[0], min(n, h.shape[1] - start), h.shape[2])
        outs.append(out)
        start, i = start + n, i + 1
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", available_attentions("hidden"))
def test_hidden_mixers_incremental_forms_equal_the_parallel_form(name, size, dtype, one_thread):
    """A mixer of hidden states: token by token and in groups of 0 to 17 tokens its incremental form equals
    its parallel form, over the same grid of sizes, windows and lengths."""
    tol = 10 * TOLERANCE[dtype]  # a GRU's or LayerNorm's reductions run in another order for other batches
    grid = mechanism_grid(name, size)
    if capabilities(name).window:  # every third cell of the grid: a GRU step is slow
        grid = grid[::3]
    for window, length in grid:
        torch.manual_seed(length)
        mixer = build_token_mixer(name, 8, 2, **mechanism_options(name, size, window, length)).to(dtype)
        _perturb(mixer, seed=length)
        h = torch.randn(2, length, 8, generator=torch.Generator().manual_seed(length), dtype=dtype)
        with torch.no_grad():
            full = mixer(h)
            for how, groups in (("step", (1,)), ("step_many", GROUPS)):
                err = (run_hidden_steps(mixer, h, groups) - full).abs().max().item()
                assert err <= tol * (1 + full.abs().max().item()), (
                    f"{name} {mixer.options()} T={length}: {how} differs from the parallel form by {err:.3g}")


@pytest.mark.parametrize("name", available_attentions("hidden"))
def test_hidden_mixers_empty_inputs_give_empty_outputs(name):
    """B = 0, T = 0 and steps of 0 new tokens give empty outputs with gradients; an empty step in the
    middle of a sequence changes nothing."""
    mixer = build_token_mixer(name, 8, 2, **mechanism_options(name, 3, None, 13))
    for B, T in ((0, 0), (0, 5), (2, 0)):
        h = torch.randn(B, T, 8, requires_grad=True)
        out = mixer(h)
        assert out.shape == (B, T, 8)
        out.sum().backward()
        assert h.grad.shape == h.shape
    h = torch.randn(2, 13, 8)
    with torch.no_grad():
        full = mixer(h)
        for B in (0, 2):
            state = mixer.init_state(B)
            outs = []
            for t in range(13):
                if t == 7:
                    out, state = mixer.step_many(h[:B, :0], state)
                    assert out.shape == (B, 0, 8)
                out, state = mixer.step_many(h[:B, t : t + 1], state)
                outs.append(out)
            torch.testing.assert_close(torch.cat(outs, dim=1), full[:B], atol=1e-5, rtol=1e-5)
