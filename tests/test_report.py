"""Aggregation, plots and `dt-attn report` on synthetic run directories (no training, no datasets)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from experiments.reporting import report as report_mod
from experiments.reporting.aggregate import DatasetReference, find_runs, load_run, summarize
from experiments.reporting.report import build_report, default_out_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(root: Path, attention: str, K: int, seed: int, scores: dict[float, float], *,
              dataset: str = "hopper-medium-standin", steps: int = 100, steps_per_s: float = 10.0,
              peak_mb: float = 500.0, eval_sps: float = 200.0, options: dict | None = None,
              observe: str = "full", batch_size: int = 64, targets_per_step: float | None = None,
              rollout: str = "exact", train_versions: dict | None = None,
              eval_versions: dict | None = None) -> Path:
    """A finished run directory in the layout `dt-attn train` writes (format 2), evaluated with ``rollout``
    (eval.json, or eval-streaming.json); ``scores`` maps target -> normalized; ``train_versions`` as
    train_summary.json records them (absent when None, as before versions were recorded there)."""
    run = root / f"{dataset}-{attention}-K{K}-s{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"format": 2, "dataset": dataset, "env": None,
                                                 "observe": observe, "attention": attention, "context": K,
                                                 "seed": seed, "steps": steps, "batch_size": batch_size}))
    (run / "train_summary.json").write_text(json.dumps({
        "steps": steps, "train_time_s": steps / steps_per_s, "steps_per_s": steps_per_s,
        "tokens_per_step": batch_size * 3 * K,
        "targets_per_step": batch_size * K if targets_per_step is None else targets_per_step,
        "peak_memory_mb": peak_mb, "parameters": 1234, "device": "cpu",
        "dataset_label": f"{dataset} (stand-in)", "env_id": "Hopper-v4", "observe": observe,
        **({} if train_versions is None else {"versions": train_versions})}))
    results = [{
        "target": t, "episodes": 2, "return_mean": 32.5 * s, "return_std": 1.0, "return_min": 0.0,
        "return_max": 1.0, "normalized_mean": s, "normalized_std": 0.5, "length_mean": 100.0,
        "wall_time_s": 1.0, "env_steps_per_s": eval_sps, "returns": [1.0, 2.0], "lengths": [100, 100]}
        for t, s in scores.items()]
    method = ("exact: the last K steps re-run every step" if rollout == "exact"
              else "streaming (approximate): sliding window of 59 tokens per layer")
    name = "eval.json" if rollout == "exact" else "eval-streaming.json"
    (run / name).write_text(json.dumps({
        "format": 2, "checkpoint": str(run / "checkpoint.pt"), "dataset": dataset,
        "dataset_label": f"{dataset} (stand-in)", "env_id": "Hopper-v4", "observe": observe,
        "attention": attention, "attention_options": options or {}, "activation": "relu", "init": "normal",
        "init_std": 0.02, "context": K, "train_seed": seed, "train_precision": "fp32", "train_steps": steps,
        "eval_seed": 1000, "score_reference": "D4RL reference returns", "rollout": rollout, "method": method,
        "eval_config": {"rollout": rollout}, "results": results, "created": "2025-01-01T00:00:00+00:00",
        "versions": eval_versions or {}}))
    return run


def as_format1(path: Path, described: str | None = None, exact_readout: bool | None = None,
               late: bool = False) -> None:
    """Rewrite an evaluation file as format 1 wrote it before the activation, init and precision fields (with
    ``late``, after them): "schema", the rollout described per target (``described``), optionally
    "exact_readout"."""
    record = json.loads(path.read_text())
    rollout = record["rollout"]
    for key in ("format", "rollout", "method") if late else ("format", "activation", "init", "init_std",
                                                             "train_precision", "rollout", "method"):
        record.pop(key)
    record["schema"] = "dt-attn/eval/1"
    record["eval_config"] = {"naive": rollout == "exact"}
    if described is None:
        described = "naive: recompute the last 20 steps" if rollout == "exact" else (
            "incremental: sliding window of 59 tokens per layer (streaming: after 20 steps the upper layers "
            "see past the window, unlike training; --naive is exact)")
    for r in record["results"]:
        r["rollout"] = described
    if exact_readout is not None:
        record["exact_readout"] = exact_readout
    path.write_text(json.dumps(record))


def make_sweep(root: Path) -> dict[tuple[str, int], list[float]]:
    """softmax and cosformer at K=5, 20 with 3 seeds, two targets; returns the target-1800 scores per cell."""
    expected = {}
    for attention, base in (("softmax", 10.0), ("cosformer", 30.0)):
        for K in (5, 20):
            scores = [base + K + 7.0 * seed**2 for seed in range(3)]
            expected[(attention, K)] = scores
            for seed, s in enumerate(scores):
                write_run(root, attention, K, seed, {1800.0: s, 3600.0: s / 2}, steps_per_s=1000.0 / K,
                          peak_mb=100.0 + K * (10 if attention == "softmax" else 1) + seed,
                          eval_sps=100.0 + seed)
    return expected


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fake_reference(dataset: str, env: str | None) -> DatasetReference:
    return DatasetReference(dataset=dataset, label="hopper stand-in", average=54.1, best=95.9, source="D4RL")


def test_mean_and_std_over_seeds(tmp_path):
    expected = make_sweep(tmp_path)
    finished, unfinished = find_runs([tmp_path])
    assert len(finished) == 12 and unfinished == []
    rows = [r for d in finished for r in load_run(d)]
    assert len(rows) == 24  # one row per (run, target)
    cells = summarize(rows)
    assert len(cells) == 8
    for (attention, K), scores in expected.items():
        cell = next(c for c in cells if (c["attention"], c["K"], c["target"]) == (attention, K, 1800.0))
        assert cell["seeds"] == 3 and cell["seed_list"] == "0 1 2"
        assert cell["normalized_mean"] == pytest.approx(sum(scores) / 3)
        mean = sum(scores) / 3
        # the sample std (ddof = 1): the sum of squared deviations over n - 1 = 2
        assert cell["normalized_std"] == pytest.approx(math.sqrt(sum((s - mean) ** 2 for s in scores) / 2))
        half = next(c for c in cells if (c["attention"], c["K"], c["target"]) == (attention, K, 3600.0))
        assert half["normalized_mean"] == pytest.approx(mean / 2)
        assert cell["train_s_per_step"] == pytest.approx(K / 1000.0)
        assert cell["eval_s_per_step"] == pytest.approx(np.mean([1 / 100, 1 / 101, 1 / 102]))
        assert cell["peak_memory_mb"] == pytest.approx(100.0 + K * (10 if attention == "softmax" else 1) + 1)


def test_report_rebuilds_csv_table_and_plots(tmp_path):
    expected = make_sweep(tmp_path / "sweep")
    rep = build_report([tmp_path / "sweep"], reference_fn=fake_reference)
    assert rep.out_dir == (tmp_path / "sweep" / "report").resolve()
    with open(rep.files["runs_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24
    row = next(r for r in rows
               if (r["attention"], r["K"], r["seed"], r["target"]) == ("cosformer", "20", "2", "1800"))
    assert float(row["normalized_mean"]) == pytest.approx(expected[("cosformer", 20)][2])
    assert row["env_id"] == "Hopper-v4" and row["observe"] == "full" and row["steps"] == "100"
    assert float(row["steps_per_s"]) == pytest.approx(50.0) and float(row["eval_env_steps_per_s"]) == 102.0
    assert row["rollout"] == "exact" and row["method"] == "exact: the last K steps re-run every step"
    assert row["init"] == "normal" and row["activation"] == "relu"
    # run folders are named relative to the report folder: the CSV reads alike on any machine
    assert row["run_dir"] == "../hopper-medium-standin-cosformer-K20-s2"
    with open(rep.files["cells_csv"]) as f:
        assert len(list(csv.DictReader(f))) == 8
    md = rep.files["markdown"].read_text()
    s = expected[("softmax", 5)]
    m = sum(s) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in s) / 2)  # the sample std over the 3 seeds
    # 3 seeds: the interquartile mean trims nothing, so it is the mean; 3 seeds x 2 episodes per figure
    cell = next(c for c in _read_csv(rep.files["cells_csv"])
                if (c["attention"], c["K"], c["target"]) == ("softmax", "5", "1800"))
    assert float(cell["iqm"]) == pytest.approx(m, rel=1e-5) and cell["episodes"] == "2"
    assert float(cell["iqm_low"]) <= m <= float(cell["iqm_high"])
    ci = f"{m:.1f} [{float(cell['iqm_low']):.1f}, {float(cell['iqm_high']):.1f}]"
    assert f"| 5 | 1800 | 100 | 64 | 3 × 2 | exact | {m:.1f} ± {sd:.1f} | {ci} |" in md
    assert f"{ci} (3 × 2)" in md  # the K pivot
    assert "| hopper-medium-standin | hopper stand-in | 54.1 | 95.9 | D4RL |" in md
    for kind in ("scores_png", "costs_png", "profiles_png"):
        data = rep.files[kind].read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_probability_of_improvement_between_cells_has_the_known_answers(tmp_path):
    pytest.importorskip("rliable", reason="probabilities of improvement need the [stats] extra (rliable)")
    make_sweep(tmp_path / "sweep")
    rep = build_report([tmp_path / "sweep"], reference_fn=None, plots=False, baseline_k=20)
    poi = {(r["compare"], r["row"], r["K"], r["target"]): r for r in _read_csv(rep.files["poi_csv"])}
    # cosformer seeds {35, 42, 63} against softmax {15, 22, 43} at K=5: 7 of the 9 pairs are wins
    assert float(poi[("attention", "cosformer", "5", "1800")]["poi"]) == pytest.approx(7 / 9)
    # softmax K=5 {15, 22, 43} against K=20 {30, 37, 58}: only 43 beats two of them
    context = poi[("context", "softmax", "5", "1800")]
    assert float(context["poi"]) == pytest.approx(2 / 9) and (context["x"], context["y"]) == ("K=5", "K=20")
    assert float(context["poi_low"]) <= 2 / 9 <= float(context["poi_high"])
    assert context["seeds_x"] == "3" and context["episodes_y"] == "2"
    assert ("context", "softmax", "20", "1800") not in poi  # the baseline is not compared with itself
    md = rep.markdown
    assert "| hopper-medium-standin (stand-in) | full | 1800 | softmax | K=20 | 0.22 [" in md
    assert "| hopper-medium-standin (stand-in) | full | 1800 | cosformer | softmax | 0.78 [" in md


def test_performance_profiles_pool_the_tasks_every_k_has_on_common_seeds(tmp_path):
    from experiments.reporting.plots import profile_panels

    expected = make_sweep(tmp_path)
    write_run(tmp_path, "softmax", 5, 3, {1800.0: 99.0, 3600.0: 99.0})  # a seed only K=5 has: left out
    cells = summarize([r for d in find_runs([tmp_path])[0] for r in load_run(d)])
    panels = profile_panels(cells)
    assert sorted(panels) == ["cosformer 100 steps, relu normal fp32 observe full",
                              "softmax 100 steps, relu normal fp32 observe full"]
    matrix, episodes = panels["softmax 100 steps, relu normal fp32 observe full"][5]
    scores = expected[("softmax", 5)]  # tasks (dataset, target) sorted: 1800, then 3600 (half the score)
    np.testing.assert_allclose(matrix, [[s, s / 2] for s in scores])
    assert episodes == "2"


def test_a_baseline_the_runs_lack_is_named_and_a_bad_baseline_k_refused(tmp_path, capsys):
    make_sweep(tmp_path / "sweep")  # K = 5 and 20, softmax and cosformer
    rep = build_report([tmp_path / "sweep"], reference_fn=None, plots=False, baseline_k=60,
                       baseline_attention="combiner-fixed")
    assert "* no context comparisons: no cell has K=60; pick one of 5, 20 with --baseline-k" in rep.markdown
    assert ("* no attention comparisons: no cell has attention 'combiner-fixed'; pick one of cosformer, "
            "softmax with --baseline-attention") in rep.markdown
    assert report_mod.COMMAND.main([str(tmp_path / "sweep"), "--baseline-k", "0"]) == 2
    assert "baseline_k=0 (must be >= 1)" in capsys.readouterr().err


def test_iqm_of_a_cell_resists_one_wild_seed(tmp_path):
    for seed, score in enumerate([10.0, 11.0, 12.0, 13.0, 90.0]):
        write_run(tmp_path, "softmax", 20, seed, {1800.0: score})
    (cell,) = summarize([r for d in find_runs([tmp_path])[0] for r in load_run(d)], resamples=2000)
    assert cell["iqm"] == pytest.approx(12.0)  # 25% trimmed: the mean of 11, 12, 13
    assert cell["normalized_mean"] == pytest.approx(27.2)
    # a resample holding the wild seed twice puts it in the middle half: the interval shows that risk
    assert cell["iqm_low"] <= 12.0 <= cell["iqm_high"]
    assert cell["seeds"] == 5 and cell["episodes"] == "2"


def test_unfinished_runs_are_listed_not_fatal(tmp_path):
    write_run(tmp_path, "softmax", 5, 0, {1800.0: 12.0})
    killed = tmp_path / "hopper-medium-standin-softmax-K5-s1"
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    (killed / "checkpoint.pt").write_bytes(b"x")
    broken = write_run(tmp_path, "softmax", 5, 2, {1800.0: 1.0})
    _write_periodic(broken, 50, {1800.0: 1.0})
    (broken / "eval-streaming.json").write_text((broken / "eval.json").read_text())
    (broken / "eval.json").write_text("{not json")  # listed as unreadable; its rollouts and curve are skipped
    rep = build_report([tmp_path], tmp_path / "out", reference_fn=None)
    assert [Path(r) for r in rep.runs] == [(tmp_path / "hopper-medium-standin-softmax-K5-s0").resolve()]
    assert {d.name for d, _ in rep.unfinished} == {killed.name, broken.name}
    md = rep.files["markdown"].read_text()
    # one seed: no std
    assert "Unfinished or failed runs" in md and killed.name in md and "| 12.0 ± – |" in md


def test_no_finished_runs_is_an_error_naming_the_unfinished(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")
    assert report_mod.COMMAND.main([str(tmp_path), "--no-references"]) == 2
    err = capsys.readouterr().err
    assert "no finished runs" in err and str((tmp_path / "r").resolve()) in err


def test_failing_reference_loader_becomes_a_note(tmp_path):
    write_run(tmp_path, "softmax", 5, 0, {1800.0: 12.0})

    def broken(dataset, env):
        raise FileNotFoundError("no such dataset offline")

    rep = build_report([tmp_path], tmp_path / "out", reference_fn=broken, plots=False)
    assert "no reference for hopper-medium-standin" in rep.markdown
    assert "no such dataset offline" in rep.markdown
    assert "scores_png" not in rep.files


def test_cli_main_and_default_out(tmp_path, capsys):
    a = write_run(tmp_path / "runs", "softmax", 5, 0, {1800.0: 12.0})
    b = write_run(tmp_path / "runs", "cosformer", 5, 0, {1800.0: 14.0}, observe="positions")
    assert default_out_dir([a]) == (tmp_path / "runs" / "report").resolve()
    assert default_out_dir([a, b]) == (tmp_path / "runs" / "report").resolve()
    assert default_out_dir([tmp_path / "runs"]) == (tmp_path / "runs" / "report").resolve()
    assert report_mod.COMMAND.main([str(a), str(b), "--no-references"]) == 0
    out = tmp_path / "runs" / "report"
    assert {p.name for p in out.iterdir()} >= {"runs.csv", "cells.csv", "report.md", "scores.png",
                                               "costs.png"}
    printed = capsys.readouterr().out
    assert "| positions | cosformer | 5 | 1800 | 100 | 64 | 1 × 2 | exact | 14.0 ± – |" in printed


def test_attention_variants_are_labelled_and_duplicate_seeds_rejected(tmp_path):
    write_run(tmp_path / "a", "cosformer", 5, 0, {1800.0: 1.0}, options={"chunk_size": 8})
    write_run(tmp_path / "b", "cosformer", 5, 0, {1800.0: 3.0}, options={"chunk_size": 16})
    rows = [r for d in find_runs([tmp_path])[0] for r in load_run(d)]
    cells = summarize(rows)
    assert sorted(c["label"] for c in cells) == ['cosformer {"chunk_size": 16}',
                                                 'cosformer {"chunk_size": 8}']
    write_run(tmp_path / "c", "cosformer", 5, 0, {1800.0: 5.0}, options={"chunk_size": 8})
    rows = [r for d in find_runs([tmp_path])[0] for r in load_run(d)]
    with pytest.raises(ValueError, match="share a seed"):
        summarize(rows)


def test_runs_of_different_lengths_are_separate_lines(tmp_path):
    write_run(tmp_path / "a", "softmax", 5, 0, {1800.0: 1.0}, steps=100)
    write_run(tmp_path / "b", "softmax", 5, 0, {1800.0: 3.0}, steps=200)
    write_run(tmp_path / "b", "cosformer", 5, 0, {1800.0: 3.0}, steps=200)
    cells = summarize([r for d in find_runs([tmp_path])[0] for r in load_run(d)])
    assert sorted(c["label"] for c in cells) == ["cosformer", "softmax 100 steps", "softmax 200 steps"]


def test_batch_sizes_are_separate_cells_and_labelled(tmp_path):
    write_run(tmp_path / "a", "cosformer", 200, 0, {1800.0: 1.0}, batch_size=32)
    write_run(tmp_path / "b", "cosformer", 1000, 0, {1800.0: 3.0}, batch_size=8)
    write_run(tmp_path / "b", "softmax", 200, 0, {1800.0: 3.0}, batch_size=32)
    cells = summarize([r for d in find_runs([tmp_path])[0] for r in load_run(d)])
    assert sorted((c["label"], c["batch_size"]) for c in cells) == [
        ("cosformer batch 32", 32), ("cosformer batch 8", 8), ("softmax", 32)]


def _equal_targets_sweep(root: Path) -> None:
    """softmax and cosformer with about 640 targets per step: batch 128 at K=5, 32 at K=20, 4 at K=200
    (whose segments hold 180 real steps on average, 720 targets); 2 seeds."""
    for attention in ("softmax", "cosformer"):
        for K, batch, targets in ((5, 128, 640.0), (20, 32, 634.0), (200, 4, 720.0)):
            for seed in range(2):
                write_run(root, attention, K, seed, {1800.0: K / 10 + seed}, batch_size=batch,
                          targets_per_step=targets)


def test_equal_targets_sweeps_draw_one_line_per_attention(tmp_path, capsys):
    _equal_targets_sweep(tmp_path / "runs")
    rows = [r for d in find_runs([tmp_path / "runs"])[0] for r in load_run(d)]
    by_batch = summarize(rows)
    assert sorted({c["label"] for c in by_batch if c["attention"] == "softmax"}) == [
        "softmax batch 128", "softmax batch 32", "softmax batch 4"]
    cells = summarize(rows, lines_by="targets")
    assert {(c["attention"], c["K"]): c["label"] for c in cells} == {
        (a, K): f"{a} ~640 targets/step" for a in ("softmax", "cosformer") for K in (5, 20, 200)}
    assert {c["K"]: c["targets_per_step"] for c in cells} == {5: 640.0, 20: 634.0, 200: 720.0}
    assert {c["K"]: c["batch_size"] for c in cells} == {5: 128, 20: 32, 200: 4}
    assert report_mod.COMMAND.main([str(tmp_path / "runs"), "--no-references", "--no-plots", "--lines-by",
                                    "targets"]) == 0
    printed = capsys.readouterr().out
    # one pivot row per attention holds every K (scores K/10 + seed: means 1.0, 2.5, 20.5)
    assert "| full | softmax ~640 targets/step | 1.0 [0.5, 1.5] (2 × 2) | 2.5 [2.0, 3.0] (2 × 2) | " \
           "20.5 [20.0, 21.0] (2 × 2) |" in printed
    with open(tmp_path / "runs" / "report" / "cells.csv") as f:
        assert {float(r["targets_per_step"]) for r in csv.DictReader(f)} == {640.0, 634.0, 720.0}


def test_lines_by_targets_refuses_two_batches_at_one_k_and_runs_without_targets(tmp_path):
    _equal_targets_sweep(tmp_path / "a")
    write_run(tmp_path / "b", "softmax", 20, 0, {1800.0: 1.0}, batch_size=64)
    rows = [r for d in find_runs([tmp_path])[0] for r in load_run(d)]
    with pytest.raises(ValueError, match="several batch sizes at observe=full K=20.*--lines-by batch"):
        summarize(rows, lines_by="targets")
    for r in rows:
        r["targets_per_step"] = math.nan  # runs trained before train_summary.json recorded it
    with pytest.raises(ValueError, match="do not record their targets per step"):
        summarize(rows, lines_by="targets")
    with pytest.raises(ValueError, match="lines_by must be one of"):
        summarize(rows, lines_by="seeds")


def test_runs_and_cells_name_the_code_and_cpu_that_trained_them(tmp_path):
    """runs.csv takes dt-attn's version and the CPU from train_summary.json, else from the evaluation (runs
    written before training recorded them); a cell of runs from two versions names both, also when read
    back from runs.csv."""
    write_run(tmp_path / "runs", "softmax", 20, 0, {1800.0: 10.0},
              train_versions={"dt_attn": "0.4.0", "cpu": "CPU A"}, eval_versions={"dt_attn": "9", "cpu": "B"})
    write_run(tmp_path / "runs", "softmax", 20, 1, {1800.0: 12.0}, eval_versions={"dt_attn": "0.3.0",
                                                                                  "cpu": "CPU B"})
    rep = build_report([tmp_path / "runs"], tmp_path / "out", reference_fn=None, plots=False)
    rows = {int(r["seed"]): r for r in _read_csv(rep.files["runs_csv"])}
    assert (rows[0]["dt_attn"], rows[0]["cpu"]) == ("0.4.0", "CPU A")
    assert (rows[1]["dt_attn"], rows[1]["cpu"]) == ("0.3.0", "CPU B")
    (cell,) = _read_csv(rep.files["cells_csv"])
    assert cell["dt_attn"] == "0.3.0+0.4.0"
    assert "trained on 2 CPUs (CPU A; CPU B)" in rep.markdown and "dt-attn 0.3.0, 0.4.0" in rep.markdown
    (again,) = summarize(_read_rows(rep.files["runs_csv"]))
    assert again["dt_attn"] == "0.3.0+0.4.0"


def test_report_merges_rows_of_an_earlier_runs_csv(tmp_path):
    """Runs whose directories are gone come back from the runs.csv an earlier report wrote."""
    expected = make_sweep(tmp_path / "old")
    first = build_report([tmp_path / "old"], tmp_path / "first", reference_fn=None, plots=False)
    saved = tmp_path / "saved_runs.csv"
    saved.write_bytes(first.files["runs_csv"].read_bytes())
    for run in (tmp_path / "old").iterdir():
        if run.name.startswith("hopper") and "-K20-" in run.name:
            for f in run.iterdir():
                f.unlink()
            run.rmdir()  # the K=20 runs now exist only as CSV rows
    write_run(tmp_path / "new", "cosformer", 60, 0, {1800.0: 70.0}, batch_size=8)
    rep = build_report([saved, tmp_path / "old", tmp_path / "new"], tmp_path / "out", reference_fn=None,
                       plots=False)
    cells = {(c["attention"], c["K"], c["target"]): c for c in summarize(
        [r for r in _read_rows(rep.files["runs_csv"])])}
    assert len(cells) == 9
    for (attention, K), scores in expected.items():
        cell = cells[(attention, K, 1800.0)]
        assert cell["seeds"] == 3 and cell["normalized_mean"] == pytest.approx(sum(scores) / 3, rel=1e-5)
        assert cell["batch_size"] == 64
    assert cells[("cosformer", 60, 1800.0)]["normalized_mean"] == 70.0
    assert cells[("cosformer", 60, 1800.0)]["batch_size"] == 8
    # the K=5 runs are both live and in the CSV: the live directory wins, no duplicate-seed error
    assert "| cosformer batch 64 | 5 | 1800 | 100 | 64 | 3 × 2 |" in rep.markdown


def _read_rows(path):
    from experiments.reporting.aggregate import load_rows_csv

    return load_rows_csv(path)


def test_old_runs_csv_without_batch_column_and_bad_csv(tmp_path):
    from experiments.reporting.aggregate import ROW_COLUMNS, load_rows_csv

    write_run(tmp_path / "r", "softmax", 20, 0, {1800.0: 12.0}, batch_size=32)
    rep = build_report([tmp_path / "r"], tmp_path / "out", reference_fn=None, plots=False)
    with open(rep.files["runs_csv"]) as f:
        rows = list(csv.DictReader(f))
    old = tmp_path / "old.csv"
    with open(old, "w", newline="") as f:
        cols = [c for c in ROW_COLUMNS if c not in ("batch_size", "activation", "std_ddof")]
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (row,) = load_rows_csv(old)
    assert row["batch_size"] == 32 and row["K"] == 20 and row["normalized_mean"] == 12.0
    assert row["activation"] == "gelu"  # runs from before the column were GELU models
    # before the std_ddof column a row held population stds over its episodes: read as sample stds
    assert row["std_ddof"] == 1 and row["episodes"] == 2
    assert row["normalized_std"] == pytest.approx(float(rows[0]["normalized_std"]) * math.sqrt(2 / 1))
    assert row["return_std"] == pytest.approx(float(rows[0]["return_std"]) * math.sqrt(2 / 1))
    assert _read_rows(rep.files["runs_csv"])[0]["normalized_std"] == pytest.approx(
        float(rows[0]["normalized_std"]))  # a current runs.csv reads back as written
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a runs.csv"):
        load_rows_csv(bad)
    with pytest.raises(FileNotFoundError, match="no such runs.csv"):
        build_report([tmp_path / "missing.csv"], tmp_path / "o2", reference_fn=None)
    assert default_out_dir([old]) == (tmp_path / "report").resolve()


def test_missing_input_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        find_runs([tmp_path / "nope"])


def test_markdown_has_score_by_context_pivot():
    from experiments.reporting.aggregate import format_markdown

    def cell(observe, k, mean):
        return {"dataset": "d", "dataset_label": "d stand-in", "observe": observe, "label": "cosformer",
                "K": k, "target": 3600.0, "steps": 10, "batch_size": 4, "seeds": 3, "episodes": "10",
                "normalized_mean": mean, "normalized_std": 1.0, "iqm": mean, "iqm_low": mean - 2,
                "iqm_high": mean + 1, "return_mean": 1.0, "return_std": 0.0, "train_s_per_step": 0.01,
                "peak_memory_mb": 1.0, "eval_s_per_step": 0.001, "rollout": "exact"}

    cells = [cell("full", 1, 10.0), cell("full", 20, 30.0), cell("positions", 20, 5.0)]
    cells[2].update(train_s_per_step=0.03, peak_memory_mb=3.0)
    md = format_markdown(cells, {}, [], [], 9)
    assert "| observe | attention | K=1 | K=20 |" in md
    assert "| full | cosformer | 10.0 [8.0, 11.0] (3 × 10) | 30.0 [28.0, 31.0] (3 × 10) |" in md
    assert "| positions | cosformer |  | 5.0 [3.0, 6.0] (3 × 10) |" in md
    # cost pivot: K=20 averages the full (0.01 s) and positions (0.03 s) cells
    assert "| attention | K=1 | K=20 |" in md and "| cosformer | 10 ms, 1 MB | 20 ms, 2 MB |" in md


def write_streaming(run: Path, scores: dict[float, float], **changes) -> Path:
    """eval-streaming.json beside a run's eval.json: the same evaluation with the streaming rollout, other
    scores (and any field ``changes``)."""
    record = json.loads((run / "eval.json").read_text())
    for res in record["results"]:
        res["normalized_mean"] = scores[res["target"]]
    record.update(rollout="streaming", method="streaming (approximate): sliding window of 59 "
                                              "tokens per layer",
                  eval_config={"rollout": "streaming"}, **changes)
    (run / "eval-streaming.json").write_text(json.dumps(record))
    return run / "eval-streaming.json"


def test_report_compares_streaming_and_exact_rollouts(tmp_path):
    runs = tmp_path / "runs"
    streaming = [20.0, 24.0, 30.0]
    exact = [22.0, 21.0, 33.0]
    for seed in range(3):
        run = write_run(runs, "cosformer", 20, seed, {1800.0: exact[seed], 3600.0: 5.0})
        write_streaming(run, {1800.0: streaming[seed], 3600.0: 5.0})
    write_run(runs, "softmax", 20, 0, {1800.0: 40.0})  # no streaming evaluation: not in the comparison
    mismatched = write_run(runs, "combiner-fixed", 20, 0, {1800.0: 40.0})
    write_streaming(mismatched, {1800.0: 41.0}, train_steps=99)
    rep = build_report([runs], tmp_path / "report", reference_fn=None, plots=False)

    with open(rep.files["rollouts_csv"]) as f:
        cells = {(r["attention"], float(r["target"])): r for r in csv.DictReader(f)}
    assert set(cells) == {("cosformer", 1800.0), ("cosformer", 3600.0)}
    c = cells[("cosformer", 1800.0)]
    assert int(c["seeds"]) == 3
    assert float(c["streaming_mean"]) == pytest.approx(np.mean(streaming), abs=1e-3)
    assert float(c["exact_mean"]) == pytest.approx(np.mean(exact), abs=1e-3)
    assert float(c["diff_mean"]) == pytest.approx(np.mean(np.subtract(exact, streaming)), abs=1e-3)
    assert float(c["abs_diff_max"]) == pytest.approx(3.0)
    assert float(cells[("cosformer", 3600.0)]["abs_diff_max"]) == 0.0
    with open(rep.files["rollout_pairs_csv"]) as f:
        assert len(list(csv.DictReader(f))) == 6
    md = rep.markdown
    assert "## Exact vs streaming (approximate) rollout of the same checkpoints" in md
    assert "| streaming (approximate) | exact | exact - streaming |" in md
    assert "| 24.7 ± 5.0 | 25.3 ± 6.7 | 0.7 ± 3.2 | 3.0 |" in md  # sample stds over the 3 seeds
    assert f"not compared: {mismatched}: eval.json and eval-streaming.json differ in train_steps" in md
    # the runs are reported by their exact evaluation, of the latest checkpoint
    rows = {(r["attention"], r["seed"]): (r["rollout"],
                                          r["normalized_mean"]) for r in _read_rows(rep.files["runs_csv"])
            if r["target"] == 1800.0}
    assert rows[("cosformer", 1)] == ("exact", 21.0) and rows[("combiner-fixed", 0)] == ("exact", 40.0)
    assert "session" not in md and "before" not in md.split("## Exact vs streaming")[1]


def test_every_cell_says_which_rollout_produced_it(tmp_path):
    """Each run is reported by its exact evaluation if it has one, else by its streaming one, labelled
    approximate in every row and cell; a cell of both kinds says mixed. Format-1 files (exact_readout, or
    before it only the rollout described) and rows read back from an old runs.csv are judged alike."""
    runs = tmp_path / "runs"
    write_run(runs, "softmax", 20, 0, {1800.0: 10.0}, rollout="streaming")  # streaming only
    old_flag = write_run(runs, "softmax", 20, 1, {1800.0: 10.0}, rollout="streaming")
    as_format1(old_flag / "eval-streaming.json", exact_readout=False, late=True)
    (old_flag / "eval-streaming.json").rename(old_flag / "eval.json")  # format 1's eval.json: streaming
    old_text = write_run(runs, "softmax", 20, 2, {1800.0: 10.0})
    as_format1(old_text / "eval.json", late=True)  # no exact_readout: described "naive: ...", so exact
    (old_text / "eval.json").rename(old_text / "eval-naive.json")
    write_run(runs, "cosformer", 1000, 0, {1800.0: 10.0})
    rep = build_report([runs], tmp_path / "report", reference_fn=None, plots=False)
    rows = {(r["attention"], r["seed"]): r["rollout"] for r in _read_rows(rep.files["runs_csv"])}
    approx = "streaming (approximate)"
    assert rows == {("softmax", 0): approx, ("softmax", 1): approx, ("softmax", 2): "exact",
                    ("cosformer", 0): "exact"}
    with open(rep.files["cells_csv"]) as f:
        assert {r["attention"]: r["rollout"] for r in csv.DictReader(f)} == {"softmax": "mixed",
                                                                             "cosformer": "exact"}
    assert "| 3 × 2 | mixed | 10.0 ± 0.0 |" in rep.markdown
    # a runs.csv of format 1's report: rollout described the method, readout said exact or streaming
    old = tmp_path / "old_runs.csv"
    with open(rep.files["runs_csv"]) as f:
        table = list(csv.DictReader(f))
    with open(old, "w", newline="") as f:
        writer = csv.DictWriter(f, [c for c in table[0] if c != "method"] + ["readout"],
                                extrasaction="ignore")
        writer.writeheader()
        for r in table:
            exact = r["rollout"] == "exact"
            writer.writerow({**r,
                             "rollout": "naive: recompute the last 20 steps" if exact else "incremental: ...",
                             "readout": "exact" if exact else "streaming"})
    again = _read_rows(old)
    assert {(r["attention"], r["seed"]): r["rollout"] for r in again} == rows
    assert {r["method"] for r in again} == {"naive: recompute the last 20 steps", "incremental: ..."}


def test_report_without_streaming_evaluations_has_no_comparison(tmp_path):
    make_sweep(tmp_path / "runs")
    rep = build_report([tmp_path / "runs"], tmp_path / "report", reference_fn=None, plots=False)
    assert "rollouts_csv" not in rep.files and not (tmp_path / "report" / "rollouts.csv").exists()
    assert "Exact vs streaming" not in rep.markdown


def _write_periodic(run: Path, step: int, scores: dict[float, float], episodes: int = 2,
                    eval_seed: int = 1000, final: str = "eval.json") -> Path:
    """evals/step-N.json as `--eval-every` writes it (the final evaluation ``final`` at an earlier step:
    evals/step-N-streaming.json for eval-streaming.json)."""
    ev = json.loads((run / final).read_text())
    ev["train_steps"], ev["eval_seed"] = step, eval_seed
    ev["results"] = [{**r, "episodes": episodes,
                      "normalized_mean": scores[r["target"]]} for r in ev["results"]]
    (run / "evals").mkdir(exist_ok=True)
    path = run / "evals" / f"step-{step:07d}{Path(final).stem.removeprefix('eval')}.json"
    path.write_text(json.dumps(ev))
    return path


def test_report_builds_learning_curves_from_evaluations_during_training(tmp_path):
    runs = tmp_path / "runs"
    # seed s scores 10*s + step/100 at the periodic checkpoints and 50 + s at the end (step 300)
    for seed in range(2):
        run = write_run(runs, "cosformer", 20, seed, {1800.0: 50.0 + seed, 3600.0: 5.0}, steps=300)
        for step in (100, 200):
            _write_periodic(run, step, {1800.0: 10.0 * seed + step / 100, 3600.0: 1.0})
    _write_periodic(run, 50, {1800.0: 99.0, 3600.0: 99.0}, eval_seed=7)  # other environment seeds: left out
    _write_periodic(run, 150, {1800.0: 99.0, 3600.0: 99.0}, episodes=5)  # other episode count: left out
    _write_periodic(run, 300, {1800.0: 99.0, 3600.0: 99.0})  # the final evaluation's step: it counts
    write_run(runs, "softmax", 20, 0, {1800.0: 40.0, 3600.0: 4.0}, steps=300)  # no evals/: no curve

    report = build_report([runs], tmp_path / "out", reference_fn=fake_reference)

    with open(report.files["curves_csv"]) as fh:
        curves = {(r["attention"], float(r["target"]), int(r["step"])): r for r in csv.DictReader(fh)}
    assert set(curves) == {("cosformer", t, s) for t in (1800.0, 3600.0) for s in (100, 200, 300)}
    at_100 = curves[("cosformer", 1800.0, 100)]
    assert at_100["seeds"] == "2" and float(at_100["normalized_mean"]) == pytest.approx(6.0)  # (1 + 11) / 2
    assert float(at_100["normalized_std"]) == pytest.approx(np.std([1.0, 11.0], ddof=1))
    assert float(curves[("cosformer", 1800.0, 300)]["normalized_mean"]) == pytest.approx(50.5)
    with open(report.files["curve_points_csv"]) as fh:
        assert len(list(csv.DictReader(fh))) == 2 * 2 * 3  # seeds x targets x checkpoints
    md = report.markdown
    assert ("| hopper-medium-standin | full | cosformer | 20 | 64 | 300 | 1800 | 6.0 ± 7.1 | 7.0 ± 7.1 "
            "| 50.5 ± 0.7 |") in md
    assert f"not in a learning curve: {run / 'evals' / 'step-0000050.json'}: environment seed 7" in md
    assert f"not in a learning curve: {run / 'evals' / 'step-0000150.json'}: target 1800: 5 episodes" in md
    assert (f"not in a learning curve: {run / 'evals' / 'step-0000300.json'}: step 300 is the "
            "final evaluation's"
            in md)
    assert report.files["curves_png"].read_bytes().startswith(PNG_MAGIC)


def test_each_rollout_makes_its_own_curves(tmp_path):
    """Runs evaluated with both rollouts during training give exact curves (curves.csv) and streaming ones
    (curves_streaming.csv), each ending at its own final evaluation; a run whose K holds the episode is exact
    whatever it was asked, and a format-1 run (streaming eval.json and evals/step-N.json, exact
    eval-naive.json and evals/step-N-naive.json) joins both."""
    runs = tmp_path / "runs"
    for seed in range(2):
        run = write_run(runs, "cosformer", 20, seed, {1800.0: 60.0 + seed}, steps=300)
        write_streaming(run, {1800.0: 50.0 + seed})
        for step in (100, 200):
            _write_periodic(run, step, {1800.0: 20.0 + step / 100 + seed})
            _write_periodic(run, step, {1800.0: step / 100}, final="eval-streaming.json")
    whole = write_run(runs, "softmax", 1000, 0, {1800.0: 40.0}, steps=300)
    _write_periodic(whole, 100, {1800.0: 30.0})
    old = write_run(runs, "combiner-fixed", 20, 0, {1800.0: 70.0}, steps=300)
    write_streaming(old, {1800.0: 65.0})
    for step in (100,):
        exact, streaming = (_write_periodic(old, step, {1800.0: 7.0}),
                            _write_periodic(old, step, {1800.0: 6.0}, final="eval-streaming.json"))
        as_format1(exact)
        as_format1(streaming)
        exact.rename(exact.with_name(f"step-{step:07d}-naive.json"))
        streaming.rename(streaming.with_name(f"step-{step:07d}.json"))
    as_format1(old / "eval.json")
    as_format1(old / "eval-streaming.json", exact_readout=False)
    (old / "eval.json").rename(old / "eval-naive.json")
    (old / "eval-streaming.json").rename(old / "eval.json")
    report = build_report([runs], tmp_path / "out", reference_fn=None, plots=False)

    def curve(kind):
        with open(report.files[kind]) as fh:
            return {(r["attention"], int(r["step"])): float(r["normalized_mean"]) for r in csv.DictReader(fh)}

    assert curve("curves_csv") == {("cosformer", 100): 21.5, ("cosformer", 200): 22.5,
                                   ("cosformer", 300): 60.5, ("softmax", 100): 30.0, ("softmax", 300): 40.0,
                                   ("combiner-fixed", 100): 7.0, ("combiner-fixed", 300): 70.0}
    assert curve("curves_streaming_csv") == {("cosformer", 100): 1.0, ("cosformer", 200): 2.0,
                                             ("cosformer", 300): 50.5, ("combiner-fixed", 100): 6.0,
                                             ("combiner-fixed", 300): 65.0}
    assert "## Learning curves (evaluations during training)\n" in report.markdown
    streaming = "## Learning curves (evaluations during training), streaming (approximate) rollout"
    assert streaming in report.markdown


def test_report_without_evaluations_during_training_has_no_curves(tmp_path):
    make_sweep(tmp_path / "runs")
    report = build_report([tmp_path / "runs"], tmp_path / "out", reference_fn=fake_reference, plots=False)
    assert "curves_csv" not in report.files and "Learning curves" not in report.markdown


def test_relu_and_gelu_runs_are_separate_cells_and_labelled(tmp_path):
    """A format-1 run saved before the activation field (GELU) and a ReLU run of the same grid point are not
    averaged; nor are runs of different initializations."""
    old = write_run(tmp_path / "old", "softmax", 20, 0, {1800.0: 10.0})
    as_format1(old / "eval.json")  # no activation anywhere: a GELU run, and PyTorch's initialization
    write_run(tmp_path / "new", "softmax", 20, 1, {1800.0: 30.0})
    report = build_report([tmp_path / "old", tmp_path / "new"], tmp_path / "out", reference_fn=None,
                          plots=False)
    with open(report.files["cells_csv"]) as f:
        cells = {r["activation"]: r for r in csv.DictReader(f)}
    assert set(cells) == {"gelu", "relu"}
    assert cells["gelu"]["seeds"] == "1" and float(cells["gelu"]["normalized_mean"]) == 10.0
    assert cells["gelu"]["init"] == "torch-default" and cells["relu"]["init"] == "normal"
    assert cells["relu"]["label"] == "softmax relu init normal"
    assert float(cells["relu"]["normalized_mean"]) == 30.0
    assert "| softmax gelu init torch-default | 20 | 1800 |" in report.markdown


def test_runs_of_different_initializations_are_separate_cells(tmp_path):
    for seed, (init, std) in enumerate([("normal", 0.02), ("torch-default", 0.02), ("normal", 0.05)]):
        run = write_run(tmp_path, "cosformer", 20, seed, {1800.0: 10.0 * seed})
        record = json.loads((run / "eval.json").read_text())
        (run / "eval.json").write_text(json.dumps({**record, "init": init, "init_std": std}))
    cells = summarize([r for d in find_runs([tmp_path])[0] for r in load_run(d)])
    assert sorted((c["init"], c["label"], c["seeds"]) for c in cells) == [
        ("normal", "cosformer init normal", 1), ("normal std 0.05", "cosformer init normal std 0.05", 1),
        ("torch-default", "cosformer init torch-default", 1)]


def test_lines_by_targets_also_labels_rollouts_and_learning_curves(tmp_path):
    runs = tmp_path / "runs"
    for K, batch, targets in ((5, 128, 640.0), (20, 32, 634.0)):
        for seed in range(2):
            run = write_run(runs, "cosformer", K, seed, {1800.0: 20.0 + seed}, batch_size=batch,
                            targets_per_step=targets, steps=300)
            write_streaming(run, {1800.0: 21.0 + seed})
            for step in (100, 200):
                _write_periodic(run, step, {1800.0: step / 10})
    rep = build_report([runs], tmp_path / "report", reference_fn=None, plots=False, lines_by="targets")
    compared = rep.markdown.split("## Exact vs streaming (approximate) rollout")[1]
    assert "| full | cosformer ~640 targets/step | 5 | 128 |" in compared
    assert "| full | cosformer ~640 targets/step | 20 | 32 |" in compared
    assert "cosformer ~640 targets/step K=5" in rep.markdown
    assert "cosformer ~640 targets/step K=20" in rep.markdown
    assert "batch 128" not in rep.markdown
