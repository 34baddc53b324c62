"""PNG figures of a sweep: normalized score and costs against context length, one line per attention."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API renders with Agg and touches no global backend
from matplotlib.ticker import FuncFormatter, NullFormatter, ScalarFormatter

from agents.atomic import atomic_write
from agents.results import rollout_label
from experiments.reporting.aggregate import DatasetReference, group_by

LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v")


def _looks(cells: list[dict[str, Any]]) -> dict[str, tuple[Any, str]]:
    """(colour, marker) per label: one colour per attention mechanism in every panel and figure,
    and a marker per variant of it (options, steps, batch size) so variants stay apart."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    attention_of = {c["label"]: c["attention"] for c in cells}
    names = sorted(set(attention_of.values()))
    looks = {}
    for label in sorted(attention_of):
        variants = sorted(lbl for lbl, a in attention_of.items() if a == attention_of[label])
        looks[label] = (cmap(names.index(attention_of[label]) % 10),
                        MARKERS[variants.index(label) % len(MARKERS)])
    return looks


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, n)
    return math.ceil(n / cols), cols


def _k_axis(ax, ks: list[int]) -> None:
    """Log-scaled x axis ticked at the context lengths that were run."""
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(ks)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("context length K (timesteps)")


def _log_y(ax) -> None:
    """Log-scaled y axis with plain-number labels; minor ticks labelled when the data span under a decade."""
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    lo, hi = ax.get_ylim()
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if hi / lo < 10 else NullFormatter())


def _finite(xs: list[float], *ys: list[float]) -> tuple[np.ndarray, ...]:
    """Points where every series is finite."""
    arrs = [np.asarray(xs, dtype=float)] + [np.asarray(y, dtype=float) for y in ys]
    keep = np.all([np.isfinite(a) for a in arrs], axis=0)
    return tuple(a[keep] for a in arrs)


def _iqm_band(c: dict[str, Any]) -> tuple[float, float, float]:
    return c["iqm"], c["iqm_low"], c["iqm_high"]


def _no_std_as_zero(std: float) -> float:
    """A point of one seed has no std (NaN): drawn without a band or error bar, but drawn."""
    return 0.0 if math.isnan(std) else std


def _std_band(c: dict[str, Any]) -> tuple[float, float, float]:
    mean, std = c["normalized_mean"], _no_std_as_zero(c["normalized_std"])
    return mean, mean - std, mean + std


def plot_scores(cells: list[dict[str, Any]], refs: dict[str, DatasetReference], path: str | Path) -> Path:
    """Normalized score vs K: a panel per (dataset, observe, target), a line per attention: the IQM over
    seeds with its 95% stratified-bootstrap band."""
    if not cells:
        raise ValueError("no finished runs to plot")
    return _score_panels(cells, "K", lambda ax, mine: _k_axis(ax, [c["K"] for c in mine]), refs,
                         "normalized score vs context length (IQM over seeds, 95% bootstrap CI)", path,
                         _iqm_band)


def plot_curves(curves: list[dict[str, Any]], refs: dict[str, DatasetReference], path: str | Path,
                rollout: str = "exact") -> Path:
    """Normalized score vs training step of one rollout's evaluations: a panel per (dataset, observe,
    target), a line per cell, ± std band."""
    if not curves:
        raise ValueError("no evaluations during training to plot")
    note = "" if rollout == "exact" else f", {rollout_label(rollout)} rollout"
    return _score_panels(curves, "step", lambda ax, _: ax.set_xlabel("training step"), refs,
                         f"normalized score during training{note} (mean ± sample std over seeds)", path,
                         _std_band)


def _score_panels(cells: list[dict[str, Any]], x: str, x_axis, refs: dict[str, DatasetReference], title: str,
                  path: str | Path, band) -> Path:
    """A panel per (dataset, observe, target) of normalized score against ``x``, a line per label with the
    band ``band(cell) -> (center, low, high)`` and the dataset's average and best episode; ``x_axis(ax,
    panel_cells)`` labels the x axis. The legend gives each line's seeds (× episodes where known)."""
    panels = sorted({(c["dataset"], c["observe"], c["target"]) for c in cells})
    looks = _looks(cells)
    rows, cols = _grid(len(panels))
    fig = Figure(figsize=(5.0 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (dataset, observe, target) in zip(axes, panels):
        mine = [c for c in cells if (c["dataset"], c["observe"], c["target"]) == (dataset, observe, target)]
        for label in sorted({c["label"] for c in mine}):
            line = sorted((c for c in mine if c["label"] == label), key=lambda c: c[x])
            xs, center, low, high = _finite([c[x] for c in line], *zip(*(band(c) for c in line)))
            seeds = "/".join(str(n) for n in sorted({c["seeds"] for c in line}))
            episodes = "/".join(sorted({str(c["episodes"]) for c in line if "episodes" in c}))
            color, marker = looks[label]
            count = f"{seeds} seeds × {episodes} eps" if episodes else f"n={seeds}"
            ax.plot(xs, center, marker=marker, color=color, label=f"{label} ({count})")
            ax.fill_between(xs, low, high, color=color, alpha=0.2, linewidth=0)
        ref = refs.get(dataset)
        if ref is not None:
            ax.axhline(ref.average, color="0.4", linestyle="--", linewidth=1,
                       label=f"dataset average {ref.average:.1f}")
            ax.axhline(ref.best, color="0.4", linestyle=":", linewidth=1,
                       label=f"dataset best {ref.best:.1f}")
        x_axis(ax, mine)
        ax.set_ylabel("normalized score")
        ax.set_title(f"{mine[0].get('dataset_label') or dataset}\nobserve {observe}, target {target:g}",
                     fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _cost_lines(cells: list[dict[str, Any]]) -> dict[tuple, list[dict[str, float]]]:
    """(dataset, observe, label) -> points by K with costs averaged over evaluation targets."""
    points: dict[tuple, dict[int, list[dict[str, Any]]]] = {}
    for c in cells:
        points.setdefault((c["dataset"], c["observe"], c["label"]), {}).setdefault(c["K"], []).append(c)
    out: dict[tuple, list[dict[str, float]]] = {}
    for key, by_k in points.items():
        out[key] = [
            {"K": k, **{m: float(np.nanmean([c[m] for c in group])) if any(np.isfinite(c[m]) for c in group)
                        else math.nan
                        for m in ("train_s_per_step", "train_s_per_step_std", "peak_memory_mb",
                                  "peak_memory_mb_std", "eval_s_per_step", "eval_s_per_step_std")}}
            for k, group in sorted(by_k.items())
        ]
    return out


def plot_costs(cells: list[dict[str, Any]], path: str | Path) -> Path:
    """Training time per step, peak training memory and evaluation time per env step vs K (log-log)."""
    if not cells:
        raise ValueError("no finished runs to plot")
    lines = _cost_lines(cells)
    looks = _looks(cells)
    groups = sorted({key[:2] for key in lines})
    style = {g: LINESTYLES[i % len(LINESTYLES)] for i, g in enumerate(groups)}
    metrics = [
        ("train_s_per_step", 1e3, "training time per step (ms)"),
        ("peak_memory_mb", 1.0, "peak training memory (MB)"),
        ("eval_s_per_step", 1e3, "evaluation time per env step (ms)"),
    ]
    fig = Figure(figsize=(15.0, 4.0), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
    ks = [c["K"] for c in cells]
    for ax, (metric, scale, ylabel) in zip(axes, metrics):
        for (dataset, observe, label), pts in sorted(lines.items()):
            k, mean, std = _finite([p["K"] for p in pts], [p[metric] for p in pts],
                                   [_no_std_as_zero(p[metric + "_std"]) for p in pts])
            if k.size == 0:
                continue
            if len(groups) == 1:
                name = label
            elif len({d for d, _ in groups}) == 1:
                name = f"{label} ({observe})"
            else:
                name = f"{label} ({dataset}, {observe})"
            color, marker = looks[label]
            ax.errorbar(k, mean * scale, yerr=std * scale, marker=marker, capsize=3, color=color,
                        linestyle=style[(dataset, observe)], label=name)
        _k_axis(ax, ks)
        if ax.has_data():
            _log_y(ax)
            if ax is axes[0]:  # the same lines in every panel: one legend is enough
                ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("cost vs context length (mean ± sample std over seeds; log-log)", fontsize=10)
    return _save(fig, path)


# A performance-profile panel: one trained model kind on one observation, across datasets, targets and K
# (batch sizes differ with K and dataset when a sweep holds the targets per step fixed).
PROFILE_KEY = ("observe", "attention", "attention_options", "activation", "init", "precision", "steps")


def _panel_title(key: tuple) -> str:
    observe, attention, options, activation, init, precision, steps = key
    extra = [options] if options != "{}" else []
    return " ".join([attention, *extra, f"{steps} steps,", activation, init, precision, f"observe {observe}"])


def profile_panels(cells: list[dict[str, Any]]) -> dict[str, dict[int, tuple[np.ndarray, str]]]:
    """Panel title -> {K: ((seeds x tasks) score matrix, episodes label)} for performance profiles, a panel
    per ``PROFILE_KEY``. The tasks are the (dataset, target) pairs that every K of the panel has, and the
    seeds those that every cell of the panel has, so each K's profile rests on the same tasks and seeds."""
    panels: dict[str, dict[int, tuple[np.ndarray, str]]] = {}
    for key, members in sorted(group_by(cells, PROFILE_KEY).items()):
        by_k = group_by(members, ("K",))
        tasks = set.intersection(*({(c["dataset"], c["target"]) for c in group} for group in by_k.values()))
        chosen = [c for c in members if (c["dataset"], c["target"]) in tasks]
        seeds = sorted(set.intersection(*(set(c["scores_by_seed"]) for c in chosen))) if chosen else []
        if not seeds:
            continue
        tasks_sorted = sorted(tasks)
        cell_at = {(c["K"], c["dataset"], c["target"]): c for c in chosen}
        panels[_panel_title(key)] = {
            k: (np.array([[cell_at[(k, *t)]["scores_by_seed"][s] for t in tasks_sorted] for s in seeds]),
                "/".join(sorted({str(c["episodes"]) for c in chosen if c["K"] == k})))
            for (k,) in sorted(by_k)}
    return panels


def plot_profiles(cells: list[dict[str, Any]], path: str | Path, resamples: int = 2_000) -> Path:
    """rliable performance profiles: a panel per (observe, attention), a line per K, the fraction of runs
    (seeds x tasks) whose normalized score exceeds each threshold tau, with a 95% stratified-bootstrap band.
    Needs rliable (the ``[stats]`` extra)."""
    from experiments.reporting.stats import performance_profile

    panels = profile_panels(cells)
    if not panels:
        raise ValueError("no cells with seeds in common to draw performance profiles from")
    rows, cols = _grid(len(panels))
    fig = Figure(figsize=(5.0 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    cmap = _k_colours(sorted({k for by_k in panels.values() for k in by_k}))
    for ax, (title, by_k) in zip(axes, panels.items()):
        everything = np.concatenate([m.ravel() for m, _ in by_k.values()])
        taus = np.linspace(everything.min(), everything.max(), 101)
        profiles = performance_profile({str(k): m for k, (m, _) in by_k.items()}, taus, resamples)
        for k, (matrix, episodes) in by_k.items():
            fractions, band = profiles[str(k)]
            seeds, tasks = matrix.shape
            ax.plot(taus, fractions, color=cmap[k],
                    label=f"K={k} ({seeds} seeds × {tasks} task(s) × {episodes} eps)")
            ax.fill_between(taus, band[0], band[1], color=cmap[k], alpha=0.15, linewidth=0)
        ax.set_xlabel("normalized score τ")
        ax.set_ylabel("fraction of runs with score > τ")
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("performance profiles by context length (tasks: datasets × targets; 95% bootstrap bands)",
                 fontsize=10)
    return _save(fig, path)


def _k_colours(ks: list[int]) -> dict[int, Any]:
    """One colour per context length, light to dark as K grows."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return {k: cmap(0.9 * i / max(1, len(ks) - 1)) for i, k in enumerate(ks)}


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    return path
