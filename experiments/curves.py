"""Learning curves: the scores of the checkpoints a run evaluated during training (``--eval-every``).

A run trained with ``--eval-every N`` holds ``evals/step-N.json`` (same schema as ``eval.json``) for
each checkpoint evaluated on the way, and its final ``eval.json``. Each (run, target, checkpoint)
gives one point; points of one cell (the report's cell: everything but the seed) are averaged over
seeds per checkpoint. A periodic evaluation enters a curve only when it used the final evaluation's
environment seed and episode count, so every point of a curve measures the same thing.

With ``exact=True`` the points are the exact readouts (``--eval-exact``: ``evals/step-N-naive.json``
and ``eval-naive.json``); a run whose own readout is already exact (K >= the episode) gives its
ordinary points, so exact curves span every K.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.results import NAIVE_EVAL_FILE, NAIVE_SUFFIX, is_exact_readout
from experiments.aggregate import (
    CELL_KEY,
    _num,
    assign_labels,
    cell_sort_key,
    distinct_seeds,
    format_pm,
    group_by,
    mean_std,
    read_json,
)

EVALS_DIR = "evals"
POINT_COLUMNS = [*CELL_KEY, "seed", "step", "episodes", "normalized_mean", "return_mean", "run_dir"]
CURVE_COLUMNS = [*CELL_KEY, "step", "seeds", "seed_list", "normalized_mean", "normalized_std"]


def has_exact_curves(rows_by_run: dict[Path, list[dict[str, Any]]]) -> bool:
    """Whether any run evaluated exactly during training (``evals/step-N-naive.json``)."""
    return any(next((d / EVALS_DIR).glob(f"step-*{NAIVE_SUFFIX}.json"), None) for d in rows_by_run)


def load_curve_points(
    rows_by_run: dict[Path, list[dict[str, Any]]], exact: bool = False,
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """One point per (run, target, evaluated checkpoint) of every run that holds ``evals/``, and the
    periodic evaluation files left out (with why). ``rows_by_run``: each run directory's ``load_run``
    rows (its final evaluation); ``exact``: the exact readouts' points (see the module docstring)."""
    points: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    for run_dir, rows in rows_by_run.items():
        files, rows = _readout_files(run_dir, rows, exact)
        if not files or not rows:
            continue
        final = {r["target"]: r for r in rows}
        for row in rows:
            points.append(_point(row, row["steps"], row["episodes"], row["normalized_mean"], row["return_mean"]))
        for path in files:
            ev = read_json(path) or {}
            if ev.get("eval_seed") != rows[0]["eval_seed"]:
                skipped.append((path, (f"environment seed {ev.get('eval_seed')} vs {rows[0]['eval_seed']} "
                                      "in eval.json")))
                continue
            step = int(ev.get("train_steps", -1))
            if step == rows[0]["steps"]:
                skipped.append((path, f"step {step} is eval.json's (the final evaluation counts)"))
                continue
            for res in ev.get("results", []):
                row = final.get(float(res["target"]))
                if row is None:
                    continue
                if int(res.get("episodes", 0)) != row["episodes"]:
                    skipped.append((path, (f"target {row['target']:g}: {res.get('episodes')} episodes vs "
                                          f"{row['episodes']} in eval.json")))
                    continue
                points.append(_point(row, step, row["episodes"], _num(res["normalized_mean"]),
                                     _num(res["return_mean"])))
    return points, skipped


def _readout_files(run_dir: Path, rows: list[dict[str, Any]], exact: bool) -> tuple[list[Path], list[dict[str, Any]]]:
    """The periodic evaluation files of one readout, and the final rows with that readout's scores
    (empty when the run has no such readout)."""
    if not rows:
        return [], []
    files = sorted((run_dir / EVALS_DIR).glob("step-*.json"))
    naive = [f for f in files if f.stem.endswith(NAIVE_SUFFIX)]
    plain = [f for f in files if not f.stem.endswith(NAIVE_SUFFIX)]
    if not exact:
        return plain, rows
    if rows[0]["readout"] == "exact":
        return plain, rows
    final = read_json(run_dir / NAIVE_EVAL_FILE)
    if final is None or not is_exact_readout(final) or final.get("train_steps") != rows[0]["steps"]:
        return [], []
    scores = {float(r["target"]): r for r in final.get("results", [])}
    exact_rows = [{**r, "normalized_mean": _num(scores[r["target"]]["normalized_mean"]),
                   "return_mean": _num(scores[r["target"]]["return_mean"]),
                   "episodes": int(scores[r["target"]].get("episodes", 0))}
                  for r in rows if r["target"] in scores]
    return naive, exact_rows


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


def format_curves(curves: list[dict[str, Any]], exact: bool = False) -> list[str]:
    """Markdown section: one row per cell and target, one column per evaluated checkpoint (empty when no
    run evaluated during training); ``exact`` titles it as the exact readout's."""
    if not curves:
        return []
    steps = sorted({c["step"] for c in curves})
    rows: dict[tuple, dict[int, dict[str, Any]]] = {}
    for c in curves:
        rows.setdefault(tuple(c[k] for k in CELL_KEY), {})[c["step"]] = c
    if exact:
        title = "Learning curves, exact readout (`--eval-exact`)"
        final = "`eval-naive.json` (or `eval.json` where K holds the whole episode)"
    else:
        title, final = "Learning curves (evaluations during training)", "`eval.json`"
    lines = ["", f"## {title}", "",
             ("Normalized score at each evaluated checkpoint, mean ± std over seeds (the number of seeds in "
              "brackets where it is not the same at every checkpoint; one seed: its score); the last column of a "
              f"run is its final {final}. Same environment seeds and episodes at every checkpoint."), "",
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
