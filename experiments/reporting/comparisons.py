"""Probability of improvement between the cells of a report (rliable's P(X > Y) over training seeds).

Two questions a context-length study asks, each answered per (dataset, observe, target):

* **context**: along one attention's line, does context K beat the baseline context (default K=20)?
* **attention**: at one K, does each attention beat the baseline attention (default softmax)?

P(X > Y) is the chance that a seed of X outscores a seed of Y (ties count half): 0.5 is no difference,
1 is X better on every pair. Its 95% interval comes from the stratified bootstrap over seeds, so a
comparison is credible when the interval excludes 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.reporting.aggregate import format_ci, group_by
from experiments.reporting.stats import probability_of_improvement

POI_COLUMNS = ["dataset", "dataset_label", "observe", "target", "compare", "row", "K", "x", "y", "seeds_x",
               "seeds_y", "episodes_x", "episodes_y", "poi", "poi_low", "poi_high"]


def _poi(x: dict[str, Any], y: dict[str, Any], compare: str, row: str, x_name: str, y_name: str,
         resamples: int) -> dict[str, Any]:
    p, low, high = probability_of_improvement(np.array(list(x["scores_by_seed"].values())),
                                              np.array(list(y["scores_by_seed"].values())), resamples)
    return {"dataset": x["dataset"], "dataset_label": x["dataset_label"], "observe": x["observe"],
            "target": x["target"], "compare": compare, "row": row, "K": x["K"], "x": x_name, "y": y_name,
            "seeds_x": x["seeds"], "seeds_y": y["seeds"], "episodes_x": x["episodes"],
            "episodes_y": y["episodes"], "poi": p, "poi_low": low, "poi_high": high}


def compare_cells(cells: list[dict[str, Any]], baseline_k: int = 20, baseline_attention: str = "softmax",
                  resamples: int = 2_000) -> list[dict[str, Any]]:
    """P(X > Y) with its interval for every cell against its line's ``baseline_k`` cell ("context") and
    against the ``baseline_attention`` cell of its (dataset, observe, K, target) ("attention"). A group
    without exactly one baseline cell is skipped."""
    out = []
    for (_, _, label, _), line in group_by(cells, ("dataset", "observe", "label", "target")).items():
        base = [c for c in line if c["K"] == baseline_k]
        if len(base) == 1:
            out += [_poi(c, base[0], "context", label, f"K={c['K']}", f"K={baseline_k}", resamples)
                    for c in sorted(line, key=lambda c: c["K"]) if c is not base[0]]
    for group in group_by(cells, ("dataset", "observe", "K", "target")).values():
        base = [c for c in group if c["attention"] == baseline_attention]
        if len(base) == 1:
            out += [_poi(c, base[0], "attention", c["label"], c["label"], base[0]["label"], resamples)
                    for c in group if c is not base[0]]
    return out


def missing_baselines(cells: list[dict[str, Any]], baseline_k: int, baseline_attention: str) -> list[str]:
    """A note for each comparison kind that has several K (or attentions) to compare but no cell of its
    baseline, naming the flag that picks another."""
    notes = []
    ks = sorted({c["K"] for c in cells})
    if len(ks) > 1 and baseline_k not in ks:
        notes.append(f"no context comparisons: no cell has K={baseline_k}; pick one of "
                     f"{', '.join(map(str, ks))} with --baseline-k")
    attentions = sorted({c["attention"] for c in cells})
    if len(attentions) > 1 and baseline_attention not in attentions:
        notes.append(f"no attention comparisons: no cell has attention {baseline_attention!r}; pick one of "
                     f"{', '.join(attentions)} with --baseline-attention")
    return notes


def format_comparisons(comparisons: list[dict[str, Any]]) -> list[str]:
    """Markdown: a pivot per comparison kind, rows (dataset, observe, target, attention, against), columns
    K; an entry is P(X > Y) [95% CI] with the seeds × episodes of X / Y."""
    titles = {"context": "### Context: the attention at K against itself at the baseline K",
              "attention": "### Attention: the attention against the baseline attention at equal K"}
    lines = ["", "## Probability of improvement, P(X > Y) [95% CI]", "",
             ("The chance that a training seed of X outscores one of Y (0.5 = no difference); the interval "
              "is rliable's stratified bootstrap over seeds, and the parentheses give seeds × episodes of "
              "X / Y.")]
    for compare, title in titles.items():
        mine = [c for c in comparisons if c["compare"] == compare]
        if not mine:
            continue
        ks = sorted({c["K"] for c in mine})
        lines += ["", title, "",
                  "| dataset | observe | target | attention | against | "
                  + " | ".join(f"K={k}" for k in ks) + " |",
                  "|---|---|---:|---|---|" + "---:|" * len(ks)]
        for (label, observe, target, row, y), members in group_by(
                mine, ("dataset_label", "observe", "target", "row", "y")).items():
            by_k = {c["K"]: c for c in members}
            entries = [f"{format_ci(c['poi'], c['poi_low'], c['poi_high'], 2)} "
                       f"({c['seeds_x']}×{c['episodes_x']} / {c['seeds_y']}×{c['episodes_y']})"
                       if (c := by_k.get(k)) else "" for k in ks]
            lines.append(f"| {label} | {observe} | {target:g} | {row} | {y} | " + " | ".join(entries) + " |")
    return lines
