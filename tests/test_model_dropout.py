"""Attention-probability and embedding dropout (GPT-2's attn_pdrop and embd_pdrop): active in training
only, so every rollout computes the eval-mode function; refused by a mechanism that does not drop them."""

from __future__ import annotations

import pytest
import torch

from agents.checkpoint import load_checkpoint
from agents.config import TrainConfig
from agents.evaluation import load_policy
from agents.model import DecisionTransformer, DTConfig
from dt_attn import TransformerConfig, build_attention


def _model(attention_dropout=0.0, embed_dropout=0.0, attention="softmax", context=4, seed=0,
           dtype=torch.float32):
    torch.manual_seed(seed)
    opts = {"span": 3} if attention.startswith("combiner") else {}
    cfg = DTConfig(state_dim=3, act_dim=2, context=context, max_ep_len=50, init_std=0.5,
                   embed_dropout=embed_dropout,
                   transformer=TransformerConfig(embed_dim=8, n_layers=2, n_heads=2, dropout=0.0,
                                                 attention_dropout=attention_dropout, attention=attention,
                                                 attention_options=opts))
    return DecisionTransformer(cfg).to(dtype)


def _inputs(b, k, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, k, 3, generator=g, dtype=dtype), torch.rand(b, k, 2, generator=g, dtype=dtype),
            torch.randn(b, k, 1, generator=g, dtype=dtype), torch.arange(k).expand(b, k).clone())


@pytest.mark.parametrize("dropouts", [{"attention_dropout": 0.3}, {"embed_dropout": 0.3}])
@pytest.mark.parametrize("padded", [False, True])
def test_dropout_changes_training_outputs_and_leaves_eval_outputs_alone(dropouts, padded):
    """In train mode two passes differ (fresh masks) and differ from eval mode; in eval mode the model is
    the one without the dropout (same weights), with and without left padding (softmax's masked path)."""
    x = _inputs(3, 4)
    mask = (torch.arange(4)[None] < torch.tensor([[0], [1], [2]])) if padded else None
    model, plain = _model(**dropouts), _model()
    plain.load_state_dict(model.state_dict())
    model.train()
    first, second = model(*x, mask), model(*x, mask)
    model.eval()
    with torch.no_grad():
        evaluated = model(*x, mask)
        torch.testing.assert_close(evaluated, plain.eval()(*x, mask), rtol=0, atol=0)
        torch.testing.assert_close(model(*x, mask), evaluated, rtol=0, atol=0)
    assert not torch.allclose(first, second) and not torch.allclose(first, evaluated)


def test_attention_dropout_drops_probabilities_not_outputs():
    """Values all 1: each output is its kept probabilities' sum / (1 - p), which averages to 1 over draws
    but is not 0 or 1 / (1 - p) everywhere, as dropping the attention's output would give."""
    attn = build_attention("softmax")
    attn.attention_dropout = 0.5
    torch.manual_seed(0)
    q, k = torch.randn(2, 1, 3, 16, 4), torch.randn(2, 1, 3, 16, 4)
    v = torch.ones(2, 1, 3, 16, 4)
    attn.train()
    out = torch.stack([attn(q[i], k[i], v[i]) for i in range(2)])
    assert abs(float(out.mean()) - 1.0) < 0.1
    levels = out[..., 0].flatten()
    assert ((levels - 0.0).abs() > 1e-6).logical_and((levels - 2.0).abs() > 1e-6).any()
    attn.eval()
    torch.testing.assert_close(attn(q[0], k[0], v[0]), v[0])


def test_the_exact_rollout_equals_a_rerun_of_the_eval_mode_model():
    """A model with both dropouts, put in eval mode as every rollout does: act_exact at every step equals
    the model re-run on the last K steps (float64), so the rollout reads the function that was trained."""
    model = _model(attention_dropout=0.4, embed_dropout=0.4, context=3, dtype=torch.float64).eval()
    k, n, steps = 3, 2, 9
    s, _, r, ts = _inputs(n, steps, torch.float64)
    a = torch.zeros(n, steps, 2, dtype=torch.float64)
    state, prev = model.init_exact_state(n), None
    with torch.inference_mode():
        for t in range(steps):
            action, state = model.act_exact(state, r[:, t], s[:, t], ts[:, t], prev)
            lo = max(0, t + 1 - k)
            seg = [x[:, lo: t + 1] for x in (s, a, r, ts)]
            pad = k - seg[0].shape[1]
            seg = [torch.cat((x.new_zeros((n, pad) + x.shape[2:]), x), dim=1) for x in seg]
            mask = torch.arange(k).expand(n, k) < pad
            rerun = model(*seg, mask if pad else None)[:, -1]
            torch.testing.assert_close(action, rerun, rtol=0, atol=1e-12)
            a[:, t] = prev = action


@pytest.mark.parametrize("attention", ["cosformer", "combiner-fixed"])
def test_a_mechanism_that_does_not_drop_probabilities_refuses_attention_dropout(attention):
    refused = f"attention_dropout=0.1: {attention} does not drop out attention probabilities"
    with pytest.raises(ValueError, match=refused):
        _model(attention_dropout=0.1, attention=attention)
    assert _model(attention=attention, embed_dropout=0.1).embed_drop.p == 0.1  # embedding dropout is for all


@pytest.mark.parametrize("field", ["attention_dropout", "embed_dropout"])
@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_dropouts_are_validated_like_dropout(field, value):
    with pytest.raises(ValueError, match=f"{field}.*in \\[0, 1\\)"):
        TrainConfig(**{field: value})


def test_a_run_trains_with_its_dropouts_and_its_checkpoint_rebuilds_them(tmp_path):
    from agents.trainer import Trainer

    cfg = TrainConfig(dataset="default", attention="softmax", context=3, embed_dim=8, n_layers=1, n_heads=1,
                      batch_size=4, steps=2, warmup_steps=1, checkpoint_every=2, eval_episodes=0,
                      run_dir=str(tmp_path / "run"), threads=1, attention_dropout=0.1, embed_dropout=0.2)
    Trainer(cfg, progress=False).train()
    payload = load_checkpoint(tmp_path / "run")
    assert (payload["config"]["attention_dropout"], payload["config"]["embed_dropout"]) == (0.1, 0.2)
    policy = load_policy(payload)
    assert policy.cfg.embed_dropout == 0.2 and policy.transformer.blocks[0].attn.attention_dropout == 0.1
    assert not policy.training
