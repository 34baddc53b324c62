"""The agent benchmark's quick evaluation part writes its figures (costs are printed, not asserted)."""

from __future__ import annotations

import csv
import json

from experiments import bench_agent


def test_quick_eval_part_writes_both_paths(tmp_path, capsys):
    assert bench_agent.main(["--quick", "--parts", "eval", "--eval-attentions", "softmax",
                             "--out-dir", str(tmp_path)]) == 0
    with open(tmp_path / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"].split(":")[0] for r in rows] == ["incremental", "naive"]
    for r in rows:
        assert r["attention"] == "softmax" and r["context"] == "5" and int(r["steps"]) == 10
        assert 0 < float(r["policy_time_s"]) <= float(r["wall_time_s"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["eval_attentions"] == ["softmax"] and len(summary["eval"]) == 2
    assert "target: softmax K=5 incremental >= 10x naive" in capsys.readouterr().out
