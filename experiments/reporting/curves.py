"""Learning curves: the scores of the checkpoints a run evaluated during training (``--eval-every``).

A run trained with ``--eval-every N`` holds ``evals/step-N.json`` (``evals/step-N-streaming.json`` with
``--rollout streaming``; same layout as the final evaluation) for each checkpoint evaluated on the way,
and its final evaluation. Each (run, target, checkpoint) gives one point; points of one cell (the
report's cell: everything but the seed) are averaged over seeds per checkpoint. Curves are drawn per
rollout, exact and streaming (approximate) apart. A periodic evaluation enters a curve only when it used
the final evaluation's environment seed and episode count, so every point of a curve measures the same
thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.results import ROLLOUTS, rollout_label
from agents.upgrade import final_evaluations, periodic_evaluations
from experiments.reporting.aggregate import (
    CELL_KEY,
    _num,
    assign_labels,
    cell_sort_key,
    distinct_seeds,
    episodes_label,
    format_pm,
    group_by,
    mean_std,
)

POINT_COLUMNS = [*CELL_KEY, "seed", "step", "episodes", "normalized_mean", "return_mean", "run_dir"]
CURVE_COLUMNS = [*CELL_KEY, "step", "seeds", "seed_list", "episodes", "normalized_mean", "normalized_std"]


def curve_rollouts(rows_by_run: dict[Path, list[dict[str, Any]]]) -> list[str]:
    """The rollouts that some run used to evaluate during training, exact first."""
    seen = {rollout for run_dir in rows_by_run for rollout in periodic_evaluations(run_dir)}
    return [r for r in ROLLOUTS if r in seen]


def load_curve_points(
    rows_by_run: dict[Path, list[dict[str, Any]]], rollout: str = "exact",
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """One point per (run, target, evaluated checkpoint) of the ``rollout`` evaluations of every run that
    holds them, and the periodic evaluation files left out (with why). ``rows_by_run``: each run
    directory's ``load_run`` rows."""
    points: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    for run_dir, rows in rows_by_run.items():
        periodic = periodic_evaluations(run_dir).get(rollout)
        rows = _final_rows(run_dir, rows, rollout) if periodic else []
        if not rows:
            continue
        final = {r["target"]: r for r in rows}
        for row in rows:
            points.append(_point(row, row["steps"], row["episodes"], row["normalized_mean"],
                                 row["return_mean"]))
        for step, (path, ev) in sorted(periodic.items()):
            if ev.get("eval_seed") != rows[0]["eval_seed"]:
                skipped.append((path, (f"environment seed {ev.get('eval_seed')} vs {rows[0]['eval_seed']} "
                                      "in the final evaluation")))
                continue
            if step == rows[0]["steps"]:
                skipped.append((path, f"step {step} is the final evaluation's (the final evaluation counts)"))
                continue
            for res in ev.get("results", []):
                row = final.get(float(res["target"]))
                if row is None:
                    continue
                if int(res.get("episodes", 0)) != row["episodes"]:
                    skipped.append((path, (f"target {row['target']:g}: {res.get('episodes')} episodes vs "
                                          f"{row['episodes']} in the final evaluation")))
                    continue
                points.append(_point(row, step, row["episodes"], _num(res["normalized_mean"]),
                                     _num(res["return_mean"])))
    return points, skipped


def _final_rows(run_dir: Path, rows: list[dict[str, Any]], rollout: str) -> list[dict[str, Any]]:
    """The run's rows with the scores of its final ``rollout`` evaluation (empty when it has none of the
    rows' checkpoint)."""
    held = final_evaluations(run_dir).get(rollout)
    if not rows or held is None or held[1].get("train_steps") != rows[0]["steps"]:
        return []
    final = held[1]
    scores = {float(r["target"]): r for r in final.get("results", [])}
    return [{**r, "normalized_mean": _num(scores[r["target"]]["normalized_mean"]),
             "return_mean": _num(scores[r["target"]]["return_mean"]),
             "episodes": int(scores[r["target"]].get("episodes", 0)), "eval_seed": final.get("eval_seed")}
            for r in rows if r["target"] in scores]


def _point(row: dict[str, Any], step: int, episodes: int, normalized: float, ret: float) -> dict[str, Any]:
    return {**{k: row[k] for k in CELL_KEY}, "seed": row["seed"], "step": step, "episodes": episodes,
            "normalized_mean": normalized, "return_mean": ret, "targets_per_step": row["targets_per_step"],
            "run_dir": row["run_dir"]}


def summarize_curves(points: list[dict[str, Any]], lines_by: str = "batch") -> list[dict[str, Any]]:
    """Mean ± std over seeds of each cell at each evaluated checkpoint, labelled as
    ``assign_labels(curves, lines_by)`` does."""
    curves = []
    for key, members in group_by(points, (*CELL_KEY, "step")).items():
        cell: dict[str, Any] = dict(zip((*CELL_KEY, "step"), key))
        seeds = distinct_seeds(members)
        cell["seeds"] = len(seeds)
        cell["seed_list"] = " ".join(map(str, seeds))
        cell["episodes"] = episodes_label(m["episodes"] for m in members)
        cell["normalized_mean"], cell["normalized_std"] = mean_std([m["normalized_mean"] for m in members])
        cell["targets_per_step"], _ = mean_std([m["targets_per_step"] for m in members])
        curves.append(cell)
    curves.sort(key=lambda c: (*cell_sort_key(c), c["step"]))
    assign_labels(curves, lines_by)
    contexts: dict[tuple, set[int]] = {}
    for c in curves:
        contexts.setdefault((c["dataset"], c["observe"], c["target"]), set()).add(c["K"])
    for c in curves:  # unlike in the score plot, K is not the x axis here
        if len(contexts[(c["dataset"], c["observe"], c["target"])]) > 1:
            c["label"] += f" K={c['K']}"
    return curves


def format_curves(curves: list[dict[str, Any]], rollout: str = "exact") -> list[str]:
    """Markdown section of one rollout's curves: one row per cell and target, one column per evaluated
    checkpoint (empty when no run evaluated during training)."""
    if not curves:
        return []
    steps = sorted({c["step"] for c in curves})
    rows: dict[tuple, dict[int, dict[str, Any]]] = {}
    for c in curves:
        rows.setdefault(tuple(c[k] for k in CELL_KEY), {})[c["step"]] = c
    title = "Learning curves (evaluations during training)"
    if rollout != "exact":
        title += f", {rollout_label(rollout)} rollout"
    lines = ["", f"## {title}", "",
             ("Normalized score at each evaluated checkpoint, mean ± sample std (ddof = 1) over seeds (the "
              "number of seeds in brackets where it is not the same at every checkpoint; one seed: its "
              f"score); the last column of a run is its final {rollout_label(rollout)} evaluation. Same "
              "environment seeds and "
              "episodes at every checkpoint."), "",
             ("| dataset | observe | attention | K | batch | steps | target | "
              + " | ".join(f"{s:,}" for s in steps) + " |"),
             "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(steps)]
    for by_step in rows.values():
        c = next(iter(by_step.values()))
        counts = {p["seeds"] for p in by_step.values()}
        cells = []
        for s in steps:
            p = by_step.get(s)
            if p is None:
                cells.append("")
                continue
            text = (format_pm(p["normalized_mean"], p["normalized_std"]) if p["seeds"] > 1
                    else f"{p['normalized_mean']:.1f}")
            cells.append(text if len(counts) == 1 else f"{text} ({p['seeds']})")
        lines.append(f"| {c['dataset']} | {c['observe']} | {c['label']} | {c['K']} | {c['batch_size']} "
                     f"| {c['steps']:,} | {c['target']:g} | " + " | ".join(cells) + " |")
    return lines
