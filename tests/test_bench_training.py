"""The training and context benchmarks' quick runs write their figures (costs are printed, not asserted)."""

from __future__ import annotations

import csv
import json

import pytest

from experiments.benchmarks import context as bench_context
from experiments.benchmarks import training as bench_training


def test_quick_throughput_part_interleaves_rounds(tmp_path, capsys):
    assert bench_training.COMMAND.main(["--quick", "--attentions", "softmax", "cosformer",
                             "--precisions", "fp32", "bf16", "--compare-hf", "false", "--out-dir",
                             str(tmp_path)]) == 0
    with open(tmp_path / "throughput.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"dt-attn softmax", "dt-attn cosformer", "dt-attn softmax [bf16]",
                         "dt-attn cosformer [bf16]"}
    for r in rows.values():
        assert r["precision"] == ("bf16" if r["model"].endswith("[bf16]") else "fp32")
        assert int(r["rounds"]) == 2 and int(r["steps_per_round"]) == 2
        assert 0 < float(r["steps_per_s_min"]) <= float(r["steps_per_s"]) <= float(r["steps_per_s_max"])
        gflop, peak = float(r["counted_gflop_per_step"]), float(r["matmul_peak_gflops"])
        assert gflop > 0 and peak > 0
        assert float(r["steps_per_s_ceiling"]) == pytest.approx(peak / gflop, rel=1e-6)
        ceiling = float(r["steps_per_s_ceiling"])
        assert float(r["peak_fraction"]) == pytest.approx(float(r["steps_per_s"]) / ceiling)
    # autocast does not change what is multiplied, only in which type
    assert float(rows["dt-attn softmax [bf16]"]["counted_gflop_per_step"]) == pytest.approx(
        float(rows["dt-attn softmax"]["counted_gflop_per_step"]), rel=1e-9)
    out = capsys.readouterr().out
    assert "of peak" in out and "vs dt-attn softmax" in out
    assert "FAIL" not in out and "PASS" not in out
    assert "dt-attn cosformer [bf16]" in out


def test_throughput_precisions_must_be_known(tmp_path):
    with pytest.raises(ValueError, match=r"precisions must list some of \['bf16', 'fp32'\], got \['fp16'\]"):
        bench_training.bench_throughput(bench_training.BenchTrainingConfig(precisions=["fp16"],
                                                                           out_dir=str(tmp_path)))


def test_throughput_rounds_must_fit_the_timed_steps(tmp_path):
    with pytest.raises(ValueError, match="need 1 <= rounds <= timed_steps, got 6 rounds of 5 steps"):
        bench_training.bench_throughput(bench_training.BenchTrainingConfig(timed_steps=5, rounds=6,
                                                                           out_dir=str(tmp_path)))


def test_paired_ratio_takes_the_median_of_per_round_ratios():
    fast = {"round_steps_per_s": "10 20 30"}
    slow = {"round_steps_per_s": "8 10 40"}  # per-round ratios 1.25, 2, 0.75; the ratio of medians would be 2
    assert bench_training.paired_ratio(fast, slow) == (1.25, 0.75, 2.0)


def test_counted_flops_of_a_known_step():
    import torch

    from experiments.benchmarks.roofline import count_flops

    w = torch.randn(32, 48, requires_grad=True)

    def step(x):
        (x @ w).sum().backward()  # forward 2*m*k*n; backward only dW = x^T g, another 2*m*k*n

    assert count_flops(step, torch.randn(100, 32))[1] == 2 * 2 * 100 * 32 * 48


def test_quick_context_run_measures_each_cell_in_its_own_process(tmp_path, capsys):
    assert bench_context.COMMAND.main(["--quick", "--attentions", "cosformer", "--contexts", "4",
                                       "--out-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    (row,) = summary["context"]
    assert (row["attention"], row["context"], row["tokens"], row["batch"]) == ("cosformer", 4, 12, 2)
    assert row["steps_per_s"] > 0 and row["peak_rss_mb"] > 0 and row["memory_method"]
    assert row["gflop_per_step"] > 0 and row["peak_fraction"] == pytest.approx(
        row["steps_per_s"] * row["gflop_per_step"] / summary["matmul_peak_gflops"])
    assert summary["config"]["embed_dim"] == 16 and summary["device"] == "cpu"
    with open(tmp_path / "context.csv") as f:
        assert [r["attention"] for r in csv.DictReader(f)] == ["cosformer"]
    printed = capsys.readouterr().out
    assert "cosformer            K=4" in printed and "GFLOP/step" in printed and "of peak" in printed
