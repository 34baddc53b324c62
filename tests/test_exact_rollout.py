"""The exact rollout: the model on the last K steps, computed with reuse of what a sliding window leaves
unchanged, equals a plain re-run; it is the default evaluation, and the one table `dt-attn train` prints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.checkpoint import load_checkpoint
from agents.config import EvalConfig, TrainConfig
from agents.evaluation import evaluate, load_policy
from agents.model import DecisionTransformer, DTConfig
from dt_attn import TransformerConfig, available_attentions, build_attention, capabilities
from dt_attn.attention.base import TokenMixer
from envs import make_vector_env


def _model(attention: str, context: int, n_layers: int, n_heads: int = 2, dtype=torch.float64):
    torch.manual_seed(0)
    opts = {size: 3 for size in capabilities(attention).sizes}  # blocks, chunks and local windows of 3 tokens
    cfg = DTConfig(state_dim=5, act_dim=2, context=context, max_ep_len=50, init_std=0.5,
                   transformer=TransformerConfig(embed_dim=8, n_layers=n_layers, n_heads=n_heads, dropout=0.0,
                                                 attention=attention, attention_options=opts))
    model = DecisionTransformer(cfg).to(dtype).eval()
    with torch.no_grad():  # a token mixer's own parameters (AFT-local's biases, gMLP's kernel) off their init
        for module in model.modules():
            if isinstance(module, TokenMixer):
                for p in module.parameters(recurse=False):
                    p.normal_(generator=torch.Generator().manual_seed(1))
    return model


def _rerun(model, s, a, r, ts, t, k):
    """The trained function at step t: the model on the last K steps, left padded at the episode start."""
    n = s.shape[0]
    lo = max(0, t + 1 - k)
    pad = k - (t + 1 - lo)
    seg = [x[:, lo : t + 1] for x in (s, a, r, ts)]
    seg = [torch.cat((x.new_zeros((n, pad) + x.shape[2:]), x), dim=1) for x in seg]
    mask = torch.arange(k).expand(n, k) < pad
    return model(*seg, mask if pad else None)[:, -1]  # every step's action computed, the last one read


@pytest.mark.parametrize("attention", available_attentions())
@pytest.mark.parametrize("n_layers,context", [(1, 4), (2, 3), (3, 5)])
def test_exact_steps_equal_a_rerun_of_the_last_k_steps(attention, n_layers, context):
    """In float64, every step of act_exact equals the model re-run on the last K steps: before the window
    fills (left padding), as it fills and long after it slides, for every mechanism and depth."""
    model = _model(attention, context, n_layers)
    g = torch.Generator().manual_seed(1)
    n, steps = 3, 4 * context + 1
    s = torch.randn(n, steps, 5, generator=g, dtype=torch.float64)
    r = torch.randn(n, steps, 1, generator=g, dtype=torch.float64)
    ts = torch.arange(steps).expand(n, steps)
    a = torch.zeros(n, steps, 2, dtype=torch.float64)
    state, prev, worst = model.init_exact_state(n), None, 0.0
    buffers = (state.tokens.data_ptr(), None if state.projected is None else state.projected.data_ptr())
    with torch.inference_mode():
        for t in range(steps):
            action, state = model.act_exact(state, r[:, t], s[:, t], ts[:, t], prev)
            a[:, t] = prev = action
            worst = max(worst, float((action - _rerun(model, s, a, r, ts, t, context)).abs().max()))
    assert worst < 1e-12
    projected = None if state.projected is None else state.projected.data_ptr()
    assert (state.tokens.data_ptr(), projected) == buffers  # written in place, never reallocated
    assert (state.projected is None) == (capabilities(attention).kind == "hidden")
    assert state.length == 3 * steps - 1


@pytest.mark.parametrize("attention", available_attentions("qkv"))
@pytest.mark.parametrize("window", [None, 5])
def test_forward_last_is_the_last_row_of_forward(attention, window):
    """Every mechanism's forward_last equals the last output of its parallel form (float64), with and
    without a window."""
    if window is not None and not capabilities(attention).window:
        pytest.skip(f"{attention} has no window option")
    opts = {"span": 3} if attention.startswith("combiner") else {}
    attn = build_attention(attention, **({} if window is None else {"window": window}), **opts).double()
    with torch.no_grad():
        for p in attn.parameters():  # learned biases off their initial zeros
            p.normal_(generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 11, 4, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(attn.forward_last(q, k, v), attn(q, k, v)[:, :, -1:], rtol=0, atol=1e-12)
    if attn.last_query_only:  # the other queries may be left out
        torch.testing.assert_close(attn.forward_last(q[:, :, -1:], k, v), attn(q, k, v)[:, :, -1:], rtol=0,
                                   atol=1e-12)
    else:  # Combiner: region summaries pool the regions' queries
        assert attention.startswith("combiner")


def _tiny_run(tmp_path, **over) -> TrainConfig:
    from agents.trainer import Trainer

    cfg = TrainConfig(**{"dataset": "default", "attention": "softmax", "context": 3, "embed_dim": 16,
                         "n_layers": 2, "n_heads": 2, "batch_size": 8, "steps": 2, "warmup_steps": 1,
                         "checkpoint_every": 2, "eval_episodes": 0, "run_dir": str(tmp_path / "run"),
                         "threads": 1, "init_std": 0.3, **over})
    Trainer(cfg, progress=False).train()
    return cfg


def rerun_returns(model: DecisionTransformer, payload: dict, target: float, n: int, seed: int,
                  max_steps: int):
    """Returns of n episodes whose every action is the model re-run on the last K steps (one plain forward
    pass over the padded window per step, batched over the episodes), as the test computes it."""
    mean, std = (np.asarray(payload["normalization"][k]) for k in ("state_mean", "state_std"))
    scale, k = payload["config"]["rtg_scale"], model.cfg.context
    envs = make_vector_env(payload["data"]["env_id"], n, seed)
    obs, _ = envs.reset(seed=seed)
    s = torch.zeros(n, max_steps, model.cfg.state_dim)
    a = torch.zeros(n, max_steps, model.cfg.act_dim)
    r = torch.zeros(n, max_steps, 1)
    ts = torch.arange(max_steps).expand(n, max_steps)
    rtg = np.full(n, target / scale)
    returns, done = np.zeros(n), np.zeros(n, dtype=bool)
    with torch.no_grad():
        for t in range(max_steps):
            if done.all():
                break
            s[:, t] = torch.as_tensor((obs - mean) / std, dtype=torch.float32)
            r[:, t, 0] = torch.as_tensor(rtg, dtype=torch.float32)
            a[:, t] = _rerun(model, s, a, r, ts, t, k)
            obs, reward, terminated, truncated, _ = envs.step(a[:, t].numpy())
            returns[~done] += reward[~done]
            rtg = rtg - reward / scale
            done |= terminated | truncated
    envs.close()
    return returns


def test_default_evaluation_is_exact_and_matches_a_rerun(tmp_path, capsys):
    """An evaluation of a K < episode checkpoint reports the exact rollout by default (eval.json) and its
    returns are those of the model re-run on the last K steps; the streaming rollout, asked for, is labelled
    approximate in its file name, its record and its printed table."""
    cfg = _tiny_run(tmp_path)
    result = evaluate(EvalConfig(checkpoint=cfg.run_dir, episodes=2, envs=2, targets=[1800.0], max_steps=15))
    assert result["rollout"] == "exact" and result["method"] == "exact: the last 3 steps re-run every step"
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["rollout"] == "exact"
    payload = load_checkpoint(cfg.run_dir)
    expected = rerun_returns(load_policy(payload), payload, 1800.0, 2, 1000, 15)
    np.testing.assert_allclose(result["results"][0]["returns"], expected, rtol=1e-5)
    assert "rollout: exact: the last 3 steps re-run every step" in capsys.readouterr().out

    streaming = evaluate(EvalConfig(checkpoint=cfg.run_dir, episodes=2, envs=2, targets=[1800.0],
                                    max_steps=15, rollout="streaming"))
    saved = json.loads((tmp_path / "run" / "eval-streaming.json").read_text())
    assert streaming["rollout"] == saved["rollout"] == "streaming"
    assert saved["method"].startswith("streaming (approximate): sliding window of 8 tokens per layer")
    assert "rollout: streaming (approximate): sliding window" in capsys.readouterr().out


def test_train_prints_one_evaluation_table_the_exact_one(tmp_path, capsys):
    from experiments.commands.train import train_and_evaluate

    cfg = TrainConfig(dataset="default", attention="cosformer", context=3, embed_dim=16, n_layers=2,
                      batch_size=8, steps=2, warmup_steps=1, eval_episodes=1, eval_envs=1,
                      eval_targets=[1800.0], run_dir=str(tmp_path / "run"), threads=1)
    out = train_and_evaluate(cfg, progress=False)
    printed = capsys.readouterr().out
    assert printed.count("rollout: ") == 1 and "rollout: exact: the last 3 steps re-run every step" in printed
    assert "streaming" not in printed
    assert out["eval"]["rollout"] == "exact"
    assert sorted(p.name for p in (tmp_path / "run").glob("eval*.json")) == ["eval.json"]
