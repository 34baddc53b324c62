"""The attention benchmark: a tiny end-to-end run, honest memory numbers and the target checks."""

from __future__ import annotations

import csv

import pytest

from experiments.benchmarks.attention import (
    COMMAND,
    QUADRATIC,
    SDPA,
    BenchAttentionConfig,
    check_targets,
    quadratic_bytes,
    run_cell,
)
from experiments.benchmarks.common import run_isolated


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_tables_plot_and_targets(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--quick", "--mechanisms", "softmax", "cosformer", "no-such-attention",
            "--tokens", "16", "40", "--batch", "1", "--heads", "2", "--head-dim", "4",
            "--step-prefixes", "3", "6", "--step-samples", "2", "--isolate", "false",
            "--quadratic-max-gib", "1e-5", "--out-dir", str(out)]
    assert COMMAND.main(argv) == 0
    printed = capsys.readouterr().out
    assert "'no-such-attention' is not registered" in printed
    assert "SKIP: cosformer fwd+bwd >= 4x faster than SDPA at 8192 tokens (not measured)" in printed

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
    assert (out / "targets.txt").read_text().count("SKIP") == 5


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


def test_targets_pass_and_fail_on_the_numbers():
    fwd = [
        _fwd(SDPA, 8192, 10.0), _fwd("cosformer", 8192, 2.0),  # 5x: pass
        _fwd(SDPA, 3072, 1.0), _fwd("cosformer", 3072, 0.8),  # 1.25x: fail
        _fwd("combiner-fixed", 8192, 4.0),  # 2.5x: pass
        _fwd("cosformer", 16384, 1.0, peak=100),
        _fwd(QUADRATIC, 16384, None, peak=400, method="analytic (not run)"),
    ]
    step = [{"mechanism": "cosformer", "prefix": 100, "median_s": 1e-4},
            {"mechanism": "cosformer", "prefix": 3000, "median_s": 1.6e-4}]
    status = [s for s, _ in check_targets(fwd, step)]
    assert status == ["PASS", "FAIL", "PASS", "PASS", "FAIL"]
    assert "analytic" in check_targets(fwd, step)[3][1]


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="tokens is empty"):
        BenchAttentionConfig(tokens=[])
    with pytest.raises(ValueError, match=r"device=.tpu. \(must be cpu, cuda or auto\)"):
        BenchAttentionConfig(device="tpu")
