"""The agent benchmark's quick evaluation part writes its figures (costs are printed, not asserted)."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import bench_agent


def test_quick_eval_part_writes_both_paths(tmp_path, capsys):
    assert bench_agent.main(["--quick", "--parts", "eval", "--eval-attentions", "softmax",
                             "--out-dir", str(tmp_path)]) == 0
    with open(tmp_path / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"].split(":")[0] for r in rows] == ["incremental", "naive"]
    assert 0 < float(rows[0]["counted_mflop_per_step"]) < float(rows[1]["counted_mflop_per_step"])
    for r in rows:
        assert r["attention"] == "softmax" and r["context"] == "5" and int(r["steps"]) == 10
        assert 0 < float(r["policy_time_s"]) <= float(r["wall_time_s"])
        assert float(r["policy_gflops"]) == pytest.approx(
            float(r["counted_mflop_per_step"]) * int(r["steps"]) / 1e3 / float(r["policy_time_s"]), rel=1e-6)
        walls = [float(x) for x in r["round_wall_time_s"].split()]
        assert int(r["rounds"]) == 2 == len(walls)
        assert float(r["wall_time_s"]) == pytest.approx(sum(walls) / 2, abs=1e-3)  # the median of two
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["eval_attentions"] == ["softmax"] and len(summary["eval"]) == 2
    assert "target: softmax K=5 incremental >= 10x naive" in capsys.readouterr().out


def test_quick_throughput_part_interleaves_rounds(tmp_path, capsys):
    assert bench_agent.main(["--quick", "--parts", "throughput", "--attentions", "softmax", "cosformer",
                             "--precisions", "fp32", "bf16", "--compare-hf", "false", "--out-dir", str(tmp_path)]) == 0
    with open(tmp_path / "throughput.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"dt-attn softmax", "dt-attn cosformer", "dt-attn softmax [bf16]", "dt-attn cosformer [bf16]"}
    for r in rows.values():
        assert r["precision"] == ("bf16" if r["model"].endswith("[bf16]") else "fp32")
        assert int(r["rounds"]) == 2 and int(r["steps_per_round"]) == 2
        assert 0 < float(r["steps_per_s_min"]) <= float(r["steps_per_s"]) <= float(r["steps_per_s_max"])
        gflop, peak = float(r["counted_gflop_per_step"]), float(r["matmul_peak_gflops"])
        assert gflop > 0 and peak > 0
        assert float(r["steps_per_s_ceiling"]) == pytest.approx(peak / gflop, rel=1e-6)
    # autocast does not change what is multiplied, only in which type
    assert float(rows["dt-attn softmax [bf16]"]["counted_gflop_per_step"]) == pytest.approx(
        float(rows["dt-attn softmax"]["counted_gflop_per_step"]), rel=1e-9)
    out = capsys.readouterr().out
    for precision in ("fp32", "bf16"):
        assert f"target ({precision}): cosformer no slower than softmax at K=20: " in out


def test_throughput_precisions_must_be_known(tmp_path):
    with pytest.raises(ValueError, match=r"precisions must list some of \['bf16', 'fp32'\], got \['fp16'\]"):
        bench_agent.bench_throughput(bench_agent.BenchAgentConfig(precisions=["fp16"], out_dir=str(tmp_path)))


def test_throughput_rounds_must_fit_the_timed_steps(tmp_path):
    with pytest.raises(ValueError, match="need 1 <= throughput_rounds <= timed_steps, got 6 rounds of 5 steps"):
        bench_agent.bench_throughput(bench_agent.BenchAgentConfig(timed_steps=5, throughput_rounds=6,
                                                                  out_dir=str(tmp_path)))


def test_paired_ratio_takes_the_median_of_per_round_ratios():
    fast = {"round_steps_per_s": "10 20 30"}
    slow = {"round_steps_per_s": "8 10 40"}  # per-round ratios 1.25, 2, 0.75; the ratio of medians would be 2
    assert bench_agent.paired_ratio(fast, slow) == (1.25, 0.75, 2.0)


def test_eval_rounds_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="eval_rounds must be >= 1, got 0"):
        bench_agent.bench_eval(bench_agent.BenchAgentConfig(eval_rounds=0, out_dir=str(tmp_path)))


def test_counted_gflop_of_a_known_step():
    import torch

    w = torch.randn(32, 48, requires_grad=True)

    def step(x):
        (x @ w).sum().backward()  # forward 2*m*k*n; backward only dW = x^T g, another 2*m*k*n

    assert bench_agent.counted_gflop(step, torch.randn(100, 32)) * 1e9 == pytest.approx(2 * 2 * 100 * 32 * 48)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_counted_rollout_step_flops_match_the_linear_layers(n_layers):
    """Softmax's attention runs in SDPA, which FlopCounterMode does not count on CPU, so the count is the
    linear layers': the incremental step projects 3 tokens per env (the last layer's output projection and
    MLP only the state token), the naive one the whole K-step window (3K tokens)."""
    from agents.model import DecisionTransformer, DTConfig

    e, s, a, n, k = 16, 11, 3, 2, 4
    model = DecisionTransformer(DTConfig(state_dim=s, act_dim=a, context=k, max_ep_len=50, embed_dim=e,
                                         n_layers=n_layers, dropout=0.0, attention="softmax")).eval()

    def linear_flops(tokens: int) -> int:
        embed = 2 * n * (tokens // 3) * (s + a + 1) * e
        layer = 2 * tokens * n * (3 * e * e + e * e + 8 * e * e)
        last = 2 * tokens * n * 3 * e * e + 2 * n * (e * e + 8 * e * e)  # K/V of every token, the rest for s_t
        return embed + (n_layers - 1) * layer + last + 2 * n * e * a

    for naive, tokens in ((False, 3), (True, 3 * k)):
        mflop = bench_agent.counted_mflop_per_rollout_step(model, k, naive, n, after_steps=k - 1)
        assert mflop * 1e6 == pytest.approx(linear_flops(tokens))


def test_linear_calls_of_a_rollout_step_are_the_models_in_order():
    """The replayed linear layers of an incremental step: three token embeddings, each block's qkv, output
    projection and MLP (the last block's all but qkv for the state token alone), then the action head."""
    import torch

    from agents.model import DecisionTransformer, DTConfig

    model = DecisionTransformer(DTConfig(state_dim=11, act_dim=3, context=4, max_ep_len=50, embed_dim=16,
                                         n_layers=2, dropout=0.0, attention="cosformer")).eval()
    policy, step = bench_agent._rollout_step(model, 4, False, envs=2, after_steps=3)
    with torch.inference_mode():
        calls = bench_agent.linear_calls(policy, step)
    rows = [tuple(x.shape[:-1]) for _, x in calls]
    assert rows == [(2,)] * 3 + [(2, 3)] * 4 + [(2, 3)] + [(2, 1)] * 3 + [(2,)]
    assert [m.out_features for m, _ in calls][-1] == 3  # the action head
    assert bench_agent.linear_layers_ms(model, 4, False, 2, 3, seconds=0.01) > 0
