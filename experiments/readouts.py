"""Streaming vs exact readouts of the same checkpoints.

For a context K shorter than the episode, the default rollout streams: every layer keeps a sliding
window of its last 3K - 1 tokens (the trained segment, seen from its last state token), so from the
second layer on a step's output depends on more than K steps of history, unlike training.
``dt-attn eval --naive`` writes eval-naive.json with the exact readout (the model re-run on the last
K steps each step). This module pairs the two results of a run per target and summarizes the
difference per cell, so a report can say how much the readout moves a score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.results import EVAL_FILE, NAIVE_EVAL_FILE
from experiments.aggregate import (
    CELL_KEY,
    _num,
    assign_labels,
    cell_sort_key,
    format_pm,
    group_by,
    mean_std,
    read_json,
)

PAIR_COLUMNS = [*CELL_KEY, "seed", "streaming", "exact", "exact_minus_streaming", "run_dir"]
READOUT_CELL_COLUMNS = [*CELL_KEY, "seeds", "streaming_mean", "streaming_std", "exact_mean", "exact_std",
                        "diff_mean", "diff_std", "abs_diff_max"]
# Fields of the two result files that must agree for their scores to be comparable:
# eval-naive.json's name for each -> load_run's column holding eval.json's value.
_SAME_EVALUATION = {"train_steps": "steps", "eval_seed": "eval_seed", "env_id": "env_id", "observe": "observe",
                    "context": "K"}


def load_readout_pairs(
    rows_by_run: dict[Path, list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """One row per (run, target) holding both eval.json and eval-naive.json scores, and the runs whose
    two files cannot be compared (with why). ``rows_by_run``: each run directory's ``load_run`` rows."""
    pairs: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    for run_dir, rows in rows_by_run.items():
        naive = read_json(run_dir / NAIVE_EVAL_FILE)
        if naive is None or not rows:
            continue
        differ = [k for k, column in _SAME_EVALUATION.items() if rows[0][column] != naive.get(k)]
        if differ:
            skipped.append((run_dir, f"{NAIVE_EVAL_FILE} and {EVAL_FILE} differ in {', '.join(differ)}"))
            continue
        exact = {float(r["target"]): _num(r["normalized_mean"]) for r in naive.get("results", [])}
        episodes = {float(r["target"]): int(r.get("episodes", 0)) for r in naive.get("results", [])}
        for row in rows:
            target = row["target"]
            if target not in exact:
                continue
            if episodes[target] != row["episodes"]:
                skipped.append((run_dir, (f"target {target:g}: {episodes[target]} exact vs {row['episodes']} "
                                          "streaming episodes")))
                continue
            pairs.append({**{k: row[k] for k in CELL_KEY}, "seed": row["seed"], "streaming": row["normalized_mean"],
                          "exact": exact[target], "exact_minus_streaming": exact[target] - row["normalized_mean"],
                          "targets_per_step": row["targets_per_step"], "run_dir": row["run_dir"]})
    return pairs, skipped


def summarize_readouts(pairs: list[dict[str, Any]], lines_by: str = "batch") -> list[dict[str, Any]]:
    """Per cell: both readouts' mean ± std over seeds, the mean paired difference (exact - streaming) and
    its largest absolute value; labelled as ``assign_labels(cells, lines_by)`` does."""
    cells = []
    for key, members in group_by(pairs, CELL_KEY).items():
        cell: dict[str, Any] = dict(zip(CELL_KEY, key))
        cell["seeds"] = len(members)
        cell["streaming_mean"], cell["streaming_std"] = mean_std([m["streaming"] for m in members])
        cell["exact_mean"], cell["exact_std"] = mean_std([m["exact"] for m in members])
        diffs = [m["exact_minus_streaming"] for m in members]
        cell["diff_mean"], cell["diff_std"] = mean_std(diffs)
        cell["abs_diff_max"] = max(abs(d) for d in diffs)
        cell["targets_per_step"], _ = mean_std([m["targets_per_step"] for m in members])
        cells.append(cell)
    cells.sort(key=cell_sort_key)
    assign_labels(cells, lines_by)
    return cells


def format_readouts(cells: list[dict[str, Any]]) -> list[str]:
    """Markdown section comparing the readouts (empty when no run has both)."""
    if not cells:
        return []
    lines = ["", "## Streaming vs exact readout of the same checkpoints", "",
             ("Normalized score, mean ± std over seeds. *streaming*: the default incremental rollout (a sliding "
              "window of 3K - 1 tokens per layer, 3K before session 9, so upper layers see more than K steps); *exact*: `dt-attn eval "
              "--naive` (the model re-run on the last K steps, the trained function). Same checkpoints, "
              "environment seeds and episodes."), "",
             ("| dataset | observe | attention | K | batch | target | seeds | streaming | exact | exact - streaming "
             "| max abs diff |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        lines.append(f"| {c['dataset']} | {c['observe']} | {c['label']} | {c['K']} | {c['batch_size']} "
                     f"| {c['target']:g} | {c['seeds']} | {format_pm(c['streaming_mean'], c['streaming_std'])} "
                     f"| {format_pm(c['exact_mean'], c['exact_std'])} | {format_pm(c['diff_mean'], c['diff_std'])} "
                     f"| {c['abs_diff_max']:.1f} |")
    return lines
