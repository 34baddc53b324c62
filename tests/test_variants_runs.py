"""Runs with the memory-task variants: a tiny training records its spec, its evaluation applies it, and the
report and its plots take such runs, one cell per variant."""

from __future__ import annotations

import csv
import json

from test_report import PNG_MAGIC, write_run

from agents.config import EvalConfig, TrainConfig
from agents.evaluation import evaluate
from agents.trainer import Trainer
from experiments.reporting.report import build_report

VARIANTS = ("flicker:0.9", "positions+noisy:0.3+flip:0.5")


def test_a_tiny_run_records_its_variant_and_evaluates_under_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(dataset="default", observe="flip:0.5+flicker:0.5", attention="cosformer", context=4,
                      embed_dim=16, n_layers=1, batch_size=8, steps=4, warmup_steps=1, checkpoint_every=4,
                      eval_episodes=0, threads=1)
    Trainer(cfg, progress=False).train()
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name.split("-cosformer")[0] for r in runs] == ["default-flicker0.5-flip0.5"]
    run = runs[0]
    assert json.loads((run / "config.json").read_text())["observe"] == "flip:0.5+flicker:0.5"
    assert json.loads((run / "train_summary.json").read_text())["observe"] == "flicker:0.5+flip:0.5"
    result = evaluate(EvalConfig(checkpoint=str(run), episodes=1, envs=1, max_steps=5,
                                 observe="FLICKER:0.5+flip:0.5"), progress=False, print_table=False)
    assert result["observe"] == "flicker:0.5+flip:0.5"
    assert json.loads((run / "eval.json").read_text())["observe"] == "flicker:0.5+flip:0.5"
    rep = build_report([tmp_path / "runs"], reference_fn=None, plots=False)
    assert "| flicker:0.5+flip:0.5 |" in rep.files["markdown"].read_text()


def test_report_and_plots_take_runs_of_every_variant(tmp_path):
    for i, observe in enumerate(VARIANTS):
        for K in (5, 20):
            for seed in range(2):
                write_run(tmp_path / f"v{i}", "softmax", K, seed, {1800.0: 10.0 * i + K + seed},
                          observe=observe)
    rep = build_report([tmp_path], reference_fn=None)
    with open(rep.files["cells_csv"], newline="") as f:
        cells = list(csv.DictReader(f))
    assert sorted({c["observe"] for c in cells}) == sorted(VARIANTS) and len(cells) == 2 * len(VARIANTS)
    cell = next(c for c in cells if (c["observe"], c["K"]) == (VARIANTS[1], "20"))
    assert float(cell["normalized_mean"]) == 10.0 + 20 + 0.5 and cell["seeds"] == "2"
    md = rep.files["markdown"].read_text()
    for observe in VARIANTS:
        assert f"| {observe} | softmax |" in md
    for key in ("scores_png", "costs_png"):
        assert rep.files[key].read_bytes().startswith(PNG_MAGIC)
