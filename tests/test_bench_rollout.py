"""The rollout benchmark: its quick run writes every variant's figures, and the counted work of one step of
each rollout is what the model computes (costs are printed, not asserted)."""

from __future__ import annotations

import json

import pytest

from experiments.benchmarks import rollout as bench_rollout
from experiments.benchmarks.rollout import VARIANTS


def test_quick_run_times_every_rollout_and_names_the_machine(tmp_path, capsys):
    assert bench_rollout.COMMAND.main(["--quick", "--attentions", "softmax", "--out-dir", str(tmp_path)]) == 0
    figures = json.loads((tmp_path / "rollout.json").read_text())
    assert "CPUs" in figures["cpu"] and figures["config"]["episodes"] == 2
    rows = {r["variant"]: r for r in figures["rows"]}
    assert list(rows) == list(VARIANTS)
    for r in rows.values():
        assert r["attention"] == "softmax" and r["context"] == 3 and r["steps"] == 8
        assert 0 < r["policy_s"] <= r["wall_s"] and r["steady_policy_ms_per_step"] > 0
        assert r["counted_mflop_per_step"] > 0 and len(r["returns"]) == r["episodes_run"]
    assert rows["streaming (approximate)"]["rollout"] == "streaming"
    alone = rows["one environment at a time"]
    assert alone["episodes_run"] == 1 and alone["envs_at_once"] == 1
    # the exact rollouts compute one function: the same first episode, whichever way it is batched
    first = [rows[v]["returns"][0] for v in ("exact", "exact without reuse", "one environment at a time")]
    assert max(first) - min(first) < 1e-3
    (ratios,) = figures["ratios"]
    assert ratios["exact_over_streaming_wall"] == pytest.approx(
        rows["exact"]["wall_s"] / rows["streaming (approximate)"]["wall_s"])
    assert ratios["one_env_over_exact_wall"] == pytest.approx(
        rows["one environment at a time"]["wall_s"] / rows["exact"]["wall_s"])
    md = (tmp_path / "rollout.md").read_text()
    assert figures["cpu"] in md and "| softmax | 3 | streaming (approximate) |" in md
    assert "aim >= 5" in md and "softmax            K=3" in capsys.readouterr().out
    assert "| MFLOP/step | of peak |" in md and figures["matmul_peak_gflops"] > 0
    for r in rows.values():  # one step of every episode, over its steady time, over the peak
        per_env = r["counted_mflop_per_step"] / r["envs_at_once"]
        assert r["peak_fraction"] == pytest.approx(figures["config"]["episodes"] * per_env * 1e6 / (
            r["steady_policy_ms_per_step"] / 1e3) / (figures["matmul_peak_gflops"] * 1e9))


def test_bad_variants_are_refused(tmp_path, capsys):
    assert bench_rollout.COMMAND.main(["--variants", "naive", "--out-dir", str(tmp_path)]) == 2
    assert "variants=['naive'] (must be some of 'exact'" in capsys.readouterr().err


@pytest.mark.parametrize("n_layers", [1, 2])
def test_counted_step_flops_are_the_linear_layers_of_each_rollout(n_layers):
    """A step's count is its linear layers' and its attention's (4 FLOPs per (query, key) pair and dimension,
    QK^T and PV, in CPU SDPA): streaming projects the 3 new tokens per env and attends them to the KV ring's
    3K + 6 slots (a 3K - 1 window and 7 spare) in every block; exact embeds and projects them into the first
    block once, then runs every block over the window of 3K - 1 tokens, causally (the top one for s_t alone:
    its query, projection and MLP, but every token's key and value, and s_t's 3K - 1 pairs); without reuse,
    every block over all 3K tokens of the padded window, causally."""
    from agents.model import DecisionTransformer, DTConfig
    from dt_attn import TransformerConfig

    e, s, a, n, k = 16, 11, 3, 2, 4
    model = DecisionTransformer(DTConfig(state_dim=s, act_dim=a, context=k, max_ep_len=50,
                                         transformer=TransformerConfig(embed_dim=e, n_layers=n_layers,
                                                                       dropout=0.0,
                                                                       attention="softmax"))).eval()
    cfg = bench_rollout.BenchRolloutConfig(max_steps=50)
    qkv, rest, head = 3 * e * e, 9 * e * e, e * a  # per token: q/k/v; projection and MLP; action head

    def flops(embedded: int, first_qkv: int, window: int, top_queries: int, pairs: int) -> int:
        embed = embedded // 3 * (s + a + 1) * e + 2 * e * pairs  # (multiply-adds) + attention's
        if n_layers == 1:
            blocks = first_qkv * qkv + rest
        else:
            top = window * 2 * e * e + top_queries * e * e + rest
            blocks = first_qkv * qkv + window * rest + (n_layers - 2) * window * (qkv + rest) + top
        return 2 * n * (embed + blocks + head)

    causal = (3 * k - 1) * 3 * k // 2  # pairs of a causal pass over the 3K - 1 tokens
    expected = {"streaming (approximate)": flops(3, 3, 3, 3, n_layers * 3 * (3 * k + 6)),
                "exact": flops(3, 3, 3 * k - 1, 1, (n_layers - 1) * causal + 3 * k - 1),
                "exact without reuse": flops(3 * k, 3 * k, 3 * k, 3 * k, n_layers * 3 * k * (3 * k + 1) // 2)}
    for variant, want in expected.items():
        plan = bench_rollout.variant_plan(model, cfg, variant)
        assert bench_rollout.counted_mflop_per_step(model, plan, n,
                                                    after_steps=k - 1) * 1e6 == pytest.approx(want), variant
