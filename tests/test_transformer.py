"""The causal transformer stack: config checks, causality, padding and step == forward per mechanism."""

from __future__ import annotations

import pytest
import torch

from dt_attn import (
    CausalTransformer,
    TransformerConfig,
    available_attentions,
    build_token_mixer,
    capabilities,
)

# Small option sets so every mechanism's chunk/block boundaries fall inside the test sequences.
# Mechanisms not listed run with their defaults.
SMALL_OPTIONS = {
    "cosformer": {"chunk_size": 4, "max_distance": 64},
    "combiner-fixed": {"span": 4},
    "combiner-logsparse": {"span": 4},
}


def _mechanisms() -> list[str]:
    try:
        return available_attentions()
    except ImportError:  # a mechanism module that is being written does not import yet
        return ["cosformer", "softmax"]


def _model(name: str, **options) -> CausalTransformer:
    opts = {**SMALL_OPTIONS.get(name, {}), **options}
    try:
        build_token_mixer(name, 16, 2, **opts)
    except ImportError as exc:  # its module is being written
        pytest.skip(f"attention {name!r} does not import yet: {exc}")
    except ValueError as exc:
        if "unknown attention" not in str(exc):
            raise
        pytest.skip(f"attention {name!r} is not registered yet")
    torch.manual_seed(0)
    cfg = TransformerConfig(embed_dim=16, n_layers=2, n_heads=2, dropout=0.0, attention=name,
                            attention_options=opts)
    return CausalTransformer(cfg).eval()


@pytest.mark.parametrize("name", _mechanisms())
@pytest.mark.parametrize("tokens", [8, 11])
def test_step_matches_forward(name, tokens):
    model = _model(name)
    x = torch.randn(3, tokens, 16)
    with torch.no_grad():
        full = model(x)
        state = model.init_state(3)
        steps = []
        for t in range(tokens):
            out, state = model.step(x[:, t], state)
            steps.append(out)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", _mechanisms())
@pytest.mark.parametrize("window", [None, 2, 5])  # 2: a chunk of 3 is longer than the window
def test_step_many_matches_forward_in_uneven_chunks(name, window):
    """Feeding 1, 3, 2, 3, 2 tokens at a time (a rollout feeds 2 then 3 per step) equals forward;
    so does the last token's output alone (last_only), with a state that evolves the same."""
    if window is not None and not capabilities(name).window:
        pytest.skip(f"{name} has no sliding window option")
    model = _model(name, **({} if window is None else {"window": window}))
    x = torch.randn(3, 11, 16)
    with torch.no_grad():
        full = model(x)
        state, state_last = model.init_state(3), model.init_state(3)
        outs, lasts, start = [], [], 0
        for n in (1, 3, 2, 3, 2):
            out, state = model.step_many(x[:, start:start + n], state)
            last, state_last = model.step_many(x[:, start:start + n], state_last, last_only=True)
            assert out.shape == (3, n, 16) and last.shape == (3, 1, 16)
            outs.append(out)
            start += n
            lasts.append(last[:, 0])
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(lasts, dim=1), full[:, [0, 3, 5, 8, 10]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", _mechanisms())
def test_keep_returns_the_kept_outputs_with_the_same_gradients(name):
    """forward(x, keep=slice) equals forward(x)[:, slice], and so do the gradients of anything
    computed from the kept outputs (the skipped projection/MLP rows feed nothing)."""
    model = _model(name)
    keep = slice(1, None, 3)
    x = torch.randn(3, 12, 16, requires_grad=True)
    weights = torch.randn(3, 4, 16)
    full = model(x)
    kept = model(x, keep=keep)
    assert kept.shape == (3, 4, 16)
    torch.testing.assert_close(kept, full[:, keep], atol=1e-6, rtol=1e-6)
    params = [x, *model.parameters()]
    g_full = torch.autograd.grad((full[:, keep] * weights).sum(), params)
    g_kept = torch.autograd.grad((kept * weights).sum(), params)
    for a, b in zip(g_kept, g_full):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_step_many_rejects_a_wrong_shape():
    model = _model("softmax")
    with pytest.raises(ValueError, match="new tokens"):
        model.step_many(torch.randn(2, 16), model.init_state(2))


@pytest.mark.parametrize("name", _mechanisms())
def test_stack_is_causal(name):
    model = _model(name)
    x = torch.randn(2, 11, 16, requires_grad=True)
    t = 5
    out = model(x)
    x2 = x.detach().clone()
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])
    torch.testing.assert_close(model(x2)[:, : t + 1], out[:, : t + 1], atol=1e-6, rtol=0)
    out[:, : t + 1].sum().backward()
    assert x.grad[:, t + 1 :].abs().max() == 0
    assert x.grad[:, : t + 1].abs().max() > 0


@pytest.mark.parametrize("name", _mechanisms())
def test_left_padding_keeps_real_tokens_and_stays_finite(name):
    model = _model(name)
    x = torch.randn(1, 9, 16)
    n_pad = 3
    padded = torch.cat([torch.full((1, n_pad, 16), 1e3), x], dim=1)
    pad = torch.zeros(1, 9 + n_pad, dtype=torch.bool)
    pad[:, :n_pad] = True
    with torch.no_grad():
        out = model(padded, pad_mask=pad)
        expected = model(x)
    assert torch.isfinite(out).all()
    if not capabilities(name).absolute_position:  # position-free mechanisms: padding is invisible
        torch.testing.assert_close(out[:, n_pad:], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["softmax", "cosformer"])
def test_windowed_stack_step_matches_forward(attention):
    model = _model(attention, window=3)
    x = torch.randn(2, 10, 16)
    with torch.no_grad():
        full = model(x)
        state = model.init_state(2)
        steps = [None] * 10
        for t in range(10):
            steps[t], state = model.step(x[:, t], state)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_output_shape_and_dropout_only_in_training():
    cfg = TransformerConfig(embed_dim=8, n_layers=1, n_heads=2, dropout=0.5)
    model = CausalTransformer(cfg)
    x = torch.randn(2, 5, 8)
    assert model(x).shape == (2, 5, 8)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"embed_dim": 10, "n_heads": 3}, "embed_dim=10 is not divisible by n_heads=3"),
        ({"n_layers": 0}, "n_layers must be an int >= 1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"activation": "swish"}, r"activation must be one of \['gelu', 'relu'\], got 'swish'"),
    ],
)
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**kwargs)


def test_bad_attention_name_and_state_raise():
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        CausalTransformer(TransformerConfig(attention="nope"))
    model = CausalTransformer(TransformerConfig(embed_dim=8, n_layers=2))
    with pytest.raises(ValueError, match="state has 1 layer entries"):
        model.step(torch.randn(1, 8), model.init_state(1)[:1])
