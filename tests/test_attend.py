"""`dt-attn attend`: attention mass per lag read from exact rollouts, checked against a hand computation."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import HOPPER

from agents.config import TrainConfig
from agents.model import DecisionTransformer, DTConfig
from agents.rollout import SteppedRollout
from agents.trainer import Trainer
from dt_attn import TransformerConfig, attention_weights, available_attentions, capabilities
from envs import make_vector_env
from experiments.cli import main as cli_main
from experiments.commands.attend import attention_by_lag, lag_mass

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def policy(attention: str, context: int = 4, **options) -> DecisionTransformer:
    """An untrained Hopper policy with weights large enough that attention is far from uniform."""
    torch.manual_seed(0)
    return DecisionTransformer(DTConfig(state_dim=11, act_dim=3, context=context, init_std=0.3,
                                        transformer=TransformerConfig(embed_dim=16, n_layers=2, n_heads=2,
                                                                      dropout=0.0, attention=attention,
                                                                      attention_options=options)))


def test_lag_mass_groups_the_three_tokens_of_a_step():
    K, window = 4, 2  # two real steps at positions 0..5, padding after; s_t at position 4
    w = torch.zeros(1, 1, 3 * K, 3 * K)
    w[0, 0, 4, :5] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])  # R_{t-1}, s_{t-1}, a_{t-1}, R_t, s_t
    w[0, 0, 4, 5:] = 100.0  # a_t and padding: not read
    torch.testing.assert_close(lag_mass(w, window, K), torch.tensor([[[9.0, 6.0, 0.0, 0.0]]]))
    w = torch.arange(144.0).reshape(1, 1, 12, 12)
    row = w[0, 0, 10]  # full window: s_t at 3K - 2 = 10
    expected = [row[9] + row[10], row[6:9].sum(), row[3:6].sum(), row[0:3].sum()]
    torch.testing.assert_close(lag_mass(w, K, K)[0, 0], torch.stack(expected))


def hand_lag_masses(model: DecisionTransformer, rollout: SteppedRollout, steps: int) -> np.ndarray:
    """(layers, heads, K) lag masses of s_t for the window of the first ``steps`` real steps, from q, k
    computed by hand from each block's weights (softmax and cosFormer weights written out, Combiner's from the
    library)."""
    cfg = model.cfg.transformer
    K, E, H = model.cfg.context, cfg.embed_dim, cfg.n_heads
    D = E // H
    x = model.embed_tokens(rollout.rtg[:1, :steps], rollout.states[:1, :steps], rollout.actions[:1, :steps],
                           torch.arange(steps)[None])
    # Combiner's blocks depend on the segment length: pad to 3K as trained
    if cfg.attention.startswith("combiner"):
        x = torch.cat([x, torch.zeros(1, 3 * (K - steps), E)], dim=1)
    p = 3 * steps - 2
    out = np.zeros((cfg.n_layers, H, K))
    for layer, block in enumerate(model.transformer.blocks):
        h = F.layer_norm(x, (E,), block.ln1.weight, block.ln1.bias)
        qkv = h @ block.qkv.weight.T + block.qkv.bias
        q = qkv[0, :, :E].reshape(-1, H, D).transpose(0, 1)  # (H, T, D)
        k = qkv[0, :, E : 2 * E].reshape(-1, H, D).transpose(0, 1)
        for head in range(H):
            if cfg.attention == "softmax":
                scores = torch.stack([q[head, p] @ k[head, j] / math.sqrt(D) for j in range(p + 1)])
                row = torch.exp(scores - scores.max())
                row = row / row.sum()
            elif cfg.attention == "cosformer":
                M = cfg.attention_options["max_distance"]
                row = torch.stack([torch.relu(q[head, p]) @ torch.relu(k[head, j])
                                   * math.cos(math.pi / 2 * (p - j) / M) for j in range(p + 1)])
                row = row / row.sum()
            else:
                row = attention_weights(cfg.attention, q[None], k[None],
                                        **cfg.attention_options)[0, head, p, : p + 1]
            for j in range(p + 1):
                out[layer, head, (steps - 1) - j // 3] += float(row[j])
        x = block(x)
    return out


@pytest.mark.parametrize("attention, options", [("softmax", {}), ("cosformer", {"max_distance": 12}),
                                                ("combiner-fixed", {"span": 2}), ("combiner-logsparse", {})])
def test_readout_matches_a_hand_computation(attention, options):
    model, K = policy(attention, **options), 4
    venv = make_vector_env("Hopper-v4", 1, 7)
    rollout = SteppedRollout(model, venv, target=1800.0, state_mean=HOPPER.state_mean,
                             state_std=HOPPER.state_std, rtg_scale=1000.0, seed=7, max_steps=K)
    assert [s.window for s in rollout] == [1, 2, 3, 4]
    venv.close()
    with torch.no_grad():
        expected = hand_lag_masses(model, rollout, K)
    assert expected[..., 0].max() < 0.9 and expected[..., 1:].max() > 0.05  # the test sees real spread
    got = attention_by_lag(model, HOPPER, target=1800.0, episodes=1, envs=1, max_steps=K, seed=7)
    assert got["readouts"] == 1 and got["readouts_per_lag"] == [1] * K and got["lengths"] == [K]
    np.testing.assert_allclose(got["mass_per_head"], expected, atol=2e-6)
    np.testing.assert_allclose(got["mass"], expected.mean(1), atol=2e-6)
    np.testing.assert_allclose(got["mean_lag"], (expected.mean(1) * np.arange(K)).sum(-1), atol=1e-5)


def test_windows_all_averages_the_short_windows_of_the_episode_start():
    model = policy("softmax")
    venv = make_vector_env("Hopper-v4", 1, 3)
    rollout = SteppedRollout(model, venv, target=1800.0, state_mean=HOPPER.state_mean,
                             state_std=HOPPER.state_std, rtg_scale=1000.0, seed=3, max_steps=2)
    list(rollout)
    venv.close()
    with torch.no_grad():
        second = hand_lag_masses(model, rollout, 2)  # t = 1: a two-step window, left-padded to K
    first = np.zeros_like(second)
    first[..., 0] = 1.0  # t = 0: s_t sees R_0 and itself only
    got = attention_by_lag(model, HOPPER, target=1800.0, episodes=1, envs=1, max_steps=2, seed=3,
                           windows="all")
    assert got["readouts"] == 2 and got["readouts_per_lag"] == [2, 1, 0, 0]
    np.testing.assert_allclose(got["mass_per_head"], (first + second) / 2, atol=2e-6)
    with pytest.raises(ValueError, match="no step had a full 4-step window"):
        attention_by_lag(model, HOPPER, target=1800.0, episodes=1, envs=1, max_steps=2, seed=3)


def test_mechanisms_without_attention_weights_are_refused_in_one_line():
    for attention, why in (("aft-simple", "weighs every channel on its own"),
                           ("gmlp", "mixes hidden states")):
        with pytest.raises(ValueError, match=f"{attention} {why}: it has no attention weights"):
            attention_by_lag(policy(attention, context=3), HOPPER, target=1800.0, episodes=1, envs=1)


WEIGHTED = [n for n in available_attentions("qkv") if not capabilities(n).elementwise]


@pytest.mark.parametrize("attention", WEIGHTED)
def test_every_readout_row_sums_to_one(attention):
    model = policy(attention, context=3)
    got = attention_by_lag(model, HOPPER, target=1800.0, episodes=3, envs=2, max_steps=6, windows="all")
    mass = np.asarray(got["mass_per_head"])
    assert mass.shape == (2, 2, 3) and mass.min() >= 0
    # cosFormer's rows fall short of 1 only where the eps guard holds (all-zero ReLU products)
    np.testing.assert_allclose(mass.sum(-1), 1.0, atol=1e-5)
    assert got["readouts"] == 3 * 6 and got["lengths"] == [6, 6, 6]  # every live step of 3 episodes


def tiny_run(tmp_path: Path, name: str, **over) -> Path:
    cfg = {"dataset": "default", "attention": "softmax", "context": 3, "embed_dim": 16, "n_layers": 2,
           "n_heads": 2, "batch_size": 4, "steps": 2, "warmup_steps": 1, "checkpoint_every": 2,
           "log_every": 1, "eval_episodes": 0, "run_dir": str(tmp_path / name), "seed": 0, "threads": 1,
           **over}
    Trainer(TrainConfig(**cfg), progress=False).train()
    return tmp_path / name


def test_attend_command_writes_json_csv_and_figure(tmp_path, capsys):
    runs = [tiny_run(tmp_path, "soft"),
            tiny_run(tmp_path, "cos", attention="cosformer", context=2, n_heads=1)]
    out = tmp_path / "cmp"
    args = ["attend", "--checkpoint", *map(str, runs), "--out", str(out), "--episodes", "3", "--envs", "2",
            "--max-steps", "5", "--target", "900", "--threads", "1"]
    assert cli_main(args) == 0
    table = list(csv.DictReader((out / "attend.csv").open()))
    for run, (attention, K, heads) in zip(runs, [("softmax", 3, 2), ("cosformer", 2, 1)]):
        record = json.loads((run / "attend.json").read_text())
        assert record["schema"] == "dt-attn/attend/1" and record["attention"] == attention
        assert record["context"] == K and record["target"] == 900.0 and record["windows"] == "full"
        assert len(record["returns"]) == 3 and record["readouts"] == sum(n - K + 1 for n in record["lengths"])
        assert np.asarray(record["mass_per_head"]).shape == (2, heads, K)
        rows = list(csv.DictReader((run / "attend.csv").open()))
        assert len(rows) == 2 * (heads + 1) * K
        assert rows == [r for r in table if r["run"] == run.name]
        for layer in range(2):
            mean = [float(r["mass"]) for r in rows if r["layer"] == str(layer) and r["head"] == "mean"]
            np.testing.assert_allclose(mean, record["mass"][layer], rtol=1e-12)
    assert (out / "attend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "softmax K=3" in capsys.readouterr().out

    assert cli_main(["attend", "--checkpoint", *map(str, runs)]) == 2
    assert "several runs: pass --out DIR" in capsys.readouterr().err
    assert cli_main(["attend", "--checkpoint", str(runs[0]), "--max-steps", "2"]) == 2
    assert "no step had a full 3-step window" in capsys.readouterr().err


def test_python_m_experiments_attend_reports_a_missing_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.commands.attend", "--checkpoint",
                           str(tmp_path / "nope")],
                          cwd=ROOT, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no checkpoint at")
