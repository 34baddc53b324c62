"""Exact vs streaming (approximate) rollouts of the same checkpoints.

For a context K shorter than the episode, the exact rollout (the default) acts as the model was trained,
on the last K steps; the streaming one (``--rollout streaming``) keeps a sliding window of 3K - 1 tokens
per layer, so from the second layer on an action depends on more than K steps of history. A run that
holds both final evaluations (eval.json and eval-streaming.json, or a format-1 run's eval-naive.json and
eval.json) gives one pair per target; the pairs are summarized per cell, so a report can say how much the
approximation moves a score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.upgrade import final_evaluations
from experiments.reporting.aggregate import (
    CELL_KEY,
    _num,
    assign_labels,
    cell_sort_key,
    format_pm,
    group_by,
    mean_std,
)

PAIR_COLUMNS = [*CELL_KEY, "seed", "streaming", "exact", "exact_minus_streaming", "run_dir"]
ROLLOUT_CELL_COLUMNS = [*CELL_KEY, "seeds", "streaming_mean", "streaming_std", "exact_mean", "exact_std",
                        "diff_mean", "diff_std", "abs_diff_max"]
# Fields of the two evaluations that must agree for their scores to be comparable.
_SAME_EVALUATION = ("train_steps", "eval_seed", "env_id", "observe", "context")


def load_rollout_pairs(
    rows_by_run: dict[Path, list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """One row per (run, target) holding both an exact and a streaming score, and the runs whose two
    evaluations cannot be compared (with why). ``rows_by_run``: each run directory's ``load_run`` rows."""
    pairs: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    for run_dir, rows in rows_by_run.items():
        found = final_evaluations(run_dir)
        if not rows or "exact" not in found or "streaming" not in found:
            continue
        (exact_file, exact), (streaming_file, streaming) = found["exact"], found["streaming"]
        differ = [k for k in _SAME_EVALUATION if exact.get(k) != streaming.get(k)]
        if differ:
            differ_in = ", ".join(differ)
            skipped.append((run_dir, f"{exact_file.name} and {streaming_file.name} differ in {differ_in}"))
            continue
        scores = [{float(r["target"]): r for r in ev.get("results", [])} for ev in (exact, streaming)]
        for row in rows:
            target = row["target"]
            if target not in scores[0] or target not in scores[1]:
                continue
            e, s = scores[0][target], scores[1][target]
            if int(e.get("episodes", 0)) != int(s.get("episodes", 0)):
                skipped.append((run_dir, (f"target {target:g}: {e.get('episodes')} exact vs "
                                          f"{s.get('episodes')} streaming episodes")))
                continue
            exact_score, streaming_score = _num(e["normalized_mean"]), _num(s["normalized_mean"])
            pairs.append({**{k: row[k] for k in CELL_KEY}, "seed": row["seed"], "streaming": streaming_score,
                          "exact": exact_score, "exact_minus_streaming": exact_score - streaming_score,
                          "targets_per_step": row["targets_per_step"], "run_dir": row["run_dir"]})
    return pairs, skipped


def summarize_rollouts(pairs: list[dict[str, Any]], lines_by: str = "batch") -> list[dict[str, Any]]:
    """Per cell: both rollouts' mean ± std over seeds, the mean paired difference (exact - streaming) and
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


def format_rollouts(cells: list[dict[str, Any]]) -> list[str]:
    """Markdown section comparing the two rollouts (empty when no run has both)."""
    if not cells:
        return []
    lines = ["", "## Exact vs streaming (approximate) rollout of the same checkpoints", "",
             ("Normalized score, mean ± sample std (ddof = 1) over seeds. *exact*: the function that was "
              "trained, the model on the last K steps (`dt-attn eval`, the default); *streaming "
              "(approximate)*: `dt-attn eval --rollout streaming`, a sliding window of 3K - 1 tokens per "
              "layer, so upper layers see more than K steps. Same checkpoints, environment seeds and "
              "episodes."), "",
             ("| dataset | observe | attention | K | batch | target | seeds | streaming (approximate) | "
              "exact | exact - streaming | max abs diff |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        lines.append(f"| {c['dataset']} | {c['observe']} | {c['label']} | {c['K']} | {c['batch_size']} | "
                     f"{c['target']:g} | {c['seeds']} | {format_pm(c['streaming_mean'], c['streaming_std'])} "
                     f"| {format_pm(c['exact_mean'], c['exact_std'])} | "
                     f"{format_pm(c['diff_mean'], c['diff_std'])} | {c['abs_diff_max']:.1f} |")
    return lines
