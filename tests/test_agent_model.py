"""Decision Transformer: shapes, left-padding invariance, incremental == parallel."""

import pytest
import torch

from agents.model import DecisionTransformer, DTConfig
from dt_attn import TransformerConfig, available_attentions


def _model(attention, context=6, n_layers=2, seed=0):
    torch.manual_seed(seed)
    opts = {"span": 4} if attention.startswith("combiner") else {}
    m = DecisionTransformer(DTConfig(state_dim=3, act_dim=2, context=context, max_ep_len=50,
                                     transformer=TransformerConfig(embed_dim=16, n_layers=n_layers, n_heads=2,
                                                                   dropout=0.0, attention=attention,
                                                                   attention_options=opts)))
    return m.eval()


def _inputs(b, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, k, 3, generator=g), torch.rand(b, k, 2, generator=g) * 2 - 1,
            torch.randn(b, k, 1, generator=g), torch.arange(k).expand(b, k).clone())


ATTENTIONS = available_attentions()


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_left_padding_matches_unpadded_segment(attention):
    m = _model(attention)
    s, a, r, t = _inputs(2, 4)
    ref = m(s, a, r, t)
    pad = 3
    padded = [torch.cat((torch.randn((2, pad) + x.shape[2:]).to(x.dtype), x), 1) for x in (s, a, r)]
    tp = torch.cat((torch.zeros(2, pad, dtype=torch.long), t), 1)
    mask = torch.arange(4 + pad).expand(2, -1) < pad
    out = m(*padded, tp, mask)
    torch.testing.assert_close(out[:, pad:], ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_mixed_padding_matches_each_rows_unpadded_segment_and_skips_shared_padding(attention):
    """Rows padded by 5 and 2 of 9 steps: each row's real steps equal that row run alone unpadded,
    while the stack sees only the 7 steps real in some row (the 2 padded in every row are skipped)."""
    m = _model(attention, context=9)
    s, a, r, t = _inputs(2, 9)
    pads = torch.tensor([5, 2])
    mask = torch.arange(9)[None, :] < pads[:, None]
    t = (torch.arange(9)[None, :] - pads[:, None]).clamp_min(0)
    seen = []
    hook = m.transformer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    out = m(s, a, r, t, mask)
    hook.remove()
    assert seen == [3 * 7]
    for row, p in enumerate(pads.tolist()):
        alone = m(*(x[row : row + 1, p:] for x in (s, a, r, t)))
        torch.testing.assert_close(out[row : row + 1, p:], alone, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("pads", [None, (2, 2, 2), (0, 3, 1)],
                         ids=["no-padding", "equal-padding", "mixed-padding"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_last_only_gives_the_last_steps_action(attention, pads):
    """forward(last_only=True), which a naive rollout uses, equals the last step of the full forward
    (with one shared padding the final block then runs the projection and MLP of that token only)."""
    m = _model(attention)
    s, a, r, t = _inputs(3, 6)
    mask = None if pads is None else torch.arange(6)[None, :] < torch.tensor(pads)[:, None]
    full = m(s, a, r, t, mask)
    last = m(s, a, r, t, mask, last_only=True)
    assert last.shape == (3, 1, 2)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-6, rtol=1e-5)


def test_pad_mask_must_be_left_padding():
    m = _model("softmax")
    s, a, r, t = _inputs(1, 4)
    with pytest.raises(ValueError, match="left padding"):
        m(s, a, r, t, torch.tensor([[False, True, False, False]]))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_incremental_policy_matches_parallel(attention):
    """``act`` (feeding a_{t-1}, R_t, s_t in one pass) gives the parallel forward's actions step by step."""
    m = _model(attention, context=7)
    s, a, r, t = _inputs(3, 7)
    parallel = m(s, a, r, t)
    state = m.init_state(3)
    for i in range(7):
        pred, state = m.act(state, r[:, i], s[:, i], t[:, i], a[:, i - 1] if i else None)
        torch.testing.assert_close(pred, parallel[:, i], atol=2e-5, rtol=1e-4)


def test_with_attention_options_copies_weights():
    m = _model("cosformer")
    w = m.with_attention_options(window=9)
    assert w.cfg.transformer.attention_options["window"] == 9
    assert "window" not in m.cfg.transformer.attention_options
    s, a, r, t = _inputs(1, 3)  # 9 tokens: the window covers them all
    torch.testing.assert_close(w(s, a, r, t), m(s, a, r, t))


@pytest.mark.parametrize("attention", ["cosformer", "combiner-fixed", "combiner-logsparse"])
def test_whole_episode_context_of_1000_steps(attention):
    """K = 1000 (3000 tokens): the parallel form runs and the incremental form matches it on a prefix."""
    torch.manual_seed(0)
    opts = {"span": 55} if attention.startswith("combiner") else {}
    m = DecisionTransformer(DTConfig(state_dim=3, act_dim=2, context=1000, max_ep_len=1000,
                                     transformer=TransformerConfig(embed_dim=8, n_layers=1, n_heads=1,
                                                                   dropout=0.0, attention=attention,
                                                                   attention_options=opts))).eval()
    s, a, r, t = _inputs(1, 1000)
    with torch.no_grad():
        full = m(s, a, r, t)
    assert full.shape == (1, 1000, 2) and torch.isfinite(full).all()
    state = m.init_state(1)
    with torch.no_grad():
        for i in range(40):
            pred, state = m.act(state, r[:, i], s[:, i], t[:, i], a[:, i - 1] if i else None)
            torch.testing.assert_close(pred, full[:, i], atol=2e-5, rtol=1e-4)


def _init_model(init="normal", std=0.02, n_layers=3, embed_dim=64):
    torch.manual_seed(0)
    return DecisionTransformer(DTConfig(state_dim=11, act_dim=3, context=20, max_ep_len=1000, init=init,
                                        init_std=std,
                                        transformer=TransformerConfig(embed_dim=embed_dim, n_layers=n_layers,
                                                                      attention="softmax")))


def test_normal_init_matches_the_peers_scheme():
    """Every linear/embedding weight ~ N(0, std) (residual projections std / sqrt(2 L)), zero biases,
    LN 1/0."""
    m = _init_model(std=0.02, n_layers=3)
    blocks = m.transformer.blocks
    residual = {id(b.proj.weight) for b in blocks} | {id(b.mlp[-1].weight) for b in blocks}
    for name, mod in m.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
            w = mod.weight.detach()
            want = 0.02 / 6 ** 0.5 if id(mod.weight) in residual else 0.02
            if w.numel() >= 1000:  # enough draws for the sample std to sit within 10% of the target
                assert abs(w.std().item() - want) < 0.1 * want, name
                assert abs(w.mean().item()) < 0.2 * want, name
            else:
                assert w.abs().max().item() < 6 * want, name
            if isinstance(mod, torch.nn.Linear):
                assert torch.count_nonzero(mod.bias) == 0, name
        if isinstance(mod, torch.nn.LayerNorm):
            assert torch.all(mod.weight == 1) and torch.count_nonzero(mod.bias) == 0, name
    assert abs(m.embed_timestep.weight.std().item() - 0.02) < 0.002


def test_init_std_scales_every_weight_and_torch_default_keeps_the_unit_timestep_embedding():
    assert abs(_init_model(std=0.05).embed_timestep.weight.std().item() - 0.05) < 0.005
    legacy = _init_model(init="torch-default")
    assert abs(legacy.embed_timestep.weight.std().item() - 1.0) < 0.05  # nn.Embedding's N(0, 1)
    with pytest.raises(ValueError, match="init must be one of"):
        _init_model(init="xavier")
