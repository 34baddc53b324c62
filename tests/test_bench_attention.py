"""The attention benchmark: a tiny end-to-end run, honest memory numbers and the roofline columns."""

from __future__ import annotations

import csv

import pytest

from experiments.benchmarks.attention import (
    COMMAND,
    QUADRATIC,
    SDPA,
    BenchAttentionConfig,
    add_roofline,
    quadratic_bytes,
    run_cell,
)
from experiments.benchmarks.common import run_isolated


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_tables_plot_and_roofline(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--quick", "--mechanisms", "softmax", "cosformer", "no-such-attention",
            "--tokens", "16", "40", "--batch", "1", "--heads", "2", "--head-dim", "4",
            "--step-prefixes", "3", "6", "--step-samples", "2", "--isolate", "false",
            "--quadratic-max-gib", "1e-5", "--out-dir", str(out)]
    assert COMMAND.main(argv) == 0
    printed = capsys.readouterr().out
    assert "'no-such-attention' is not registered" in printed
    for title in ("counted matrix work of one forward+backward (GFLOP)",
                  "roofline: fraction of the fp32 matmul peak", "speed-up over SDPA"):
        assert title in printed
    assert "FAIL" not in printed and "PASS" not in printed

    rows = _read_csv(out / "fwd_bwd.csv")
    assert {(r["mechanism"], r["tokens"]) for r in rows} == {
        (m, t) for m in (SDPA, QUADRATIC, "softmax", "cosformer") for t in ("16", "40")
    }
    quad40 = next(r for r in rows if r["mechanism"] == QUADRATIC and r["tokens"] == "40")
    # 3 * 1 * 2 * 40 * 40 * 4 bytes = 38400 > the 1e-5 GiB (~10.7 kB) limit: reported, not run
    assert quad40["memory_method"] == "analytic (not run)" and quad40["median_s"] == ""
    assert int(quad40["peak_bytes"]) == quadratic_bytes(1, 2, 40) == 38400
    timed = [r for r in rows if r["median_s"]]
    assert len(timed) == 7 and all(float(r["median_s"]) > 0 for r in timed)

    steps = _read_csv(out / "step.csv")
    assert [(r["mechanism"], r["prefix"]) for r in steps] == [
        ("softmax", "3"), ("softmax", "6"), ("cosformer", "3"), ("cosformer", "6")
    ]
    assert (out / "attention_bench.png").stat().st_size > 1000
    assert not (out / "targets.txt").exists()
    # every timed cell is counted as it ran: SDPA (the fused CPU kernel) and softmax (which calls it) alike
    flops = {(r["mechanism"], r["tokens"]): int(r["flops"]) for r in timed}
    assert flops[(SDPA, "16")] == flops[("softmax", "16")] == 3 * 4 * 2 * (16 * 17 // 2) * 4


def test_isolated_cell_measures_real_peak_memory():
    spec = {"name": QUADRATIC, "tokens": 512, "batch": 1, "heads": 4, "head_dim": 8, "device": "cpu",
            "seed": 0, "threads": 1, "warmup": 1, "repeats": 1, "slow_cell_s": 60.0, "options": {}}
    result = run_isolated(run_cell, spec)
    one_matrix = 4 * 512 * 512 * 4  # (B, H, T, T) fp32
    assert result["memory_method"].startswith("peak RSS")
    assert one_matrix <= result["peak_bytes"] <= 3 * quadratic_bytes(1, 4, 512)
    assert result["median_s"] > 0


def _fwd(name, tokens, seconds, peak=None, method="measured"):
    return {"mechanism": name, "tokens": tokens, "median_s": seconds, "peak_bytes": peak,
            "memory_method": method}


def test_roofline_columns_divide_counted_work_by_time_and_peak():
    fwd = [_fwd(SDPA, 64, 2.0), _fwd("cosformer", 64, 0.5), _fwd(QUADRATIC, 128, None)]
    for row, flops in zip(fwd, (4e9, 1e9, None)):
        row["flops"] = flops
    add_roofline(fwd, peak_gflops=10.0)
    sdpa, cos, quad = fwd
    assert sdpa["gflop"] == 4.0 and sdpa["peak_fraction"] == pytest.approx(0.2)
    assert sdpa["speedup_vs_sdpa"] == 1
    assert cos["peak_fraction"] == pytest.approx(0.2) and cos["speedup_vs_sdpa"] == 4.0
    assert quad["gflop"] is None and quad["peak_fraction"] is None and quad["speedup_vs_sdpa"] is None


def test_the_default_mechanisms_are_the_registry():
    from dt_attn import available_attentions

    assert BenchAttentionConfig().mechanisms == available_attentions()


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="tokens is empty"):
        BenchAttentionConfig(tokens=[])
    with pytest.raises(ValueError, match=r"device=.tpu. \(must be cpu, cuda or auto\)"):
        BenchAttentionConfig(device="tpu")
