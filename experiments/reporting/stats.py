"""Statistics over training seeds: bootstrap intervals of means and differences, and rliable's
interquartile mean, probability of improvement and performance profiles."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.errors import optional_import


def trim_mean(values: np.ndarray, proportion: float, axis: int | None = None) -> np.ndarray | float:
    """The mean after cutting ``int(proportion * n)`` of the lowest and as many of the highest values along
    ``axis`` (all values when None): 0.25 gives the interquartile mean. scipy.stats.trim_mean's rule, in
    numpy alone so that the base install can report."""
    values = np.asarray(values, dtype=float)
    if axis is None:
        values, axis = values.reshape(-1), 0
    n = values.shape[axis]
    cut = int(proportion * n)
    kept = np.sort(values, axis=axis).take(np.arange(cut, n - cut), axis=axis)
    return kept.mean(axis=axis)


def _percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap draws."""
    tail = 100 * (1 - level) / 2
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def _stratified_draws(matrix: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """(resamples, runs, tasks) resamples of a (runs x tasks) matrix, runs drawn with replacement within each
    task (rliable's stratified bootstrap)."""
    runs, tasks = matrix.shape
    return matrix[rng.integers(0, runs, size=(resamples, runs, tasks)), np.arange(tasks)]


def bootstrap_mean_ci(values: np.ndarray, resamples: int = 10_000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one number per seed), resampling seeds
    with replacement; a single value gives the degenerate interval (v, v)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    return _percentile_interval(means, level)


def bootstrap_diff_ci(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), the two groups resampled independently
    (seeds of two models are independent draws, not pairs)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_diff_ci needs at least one value in each group")
    rng = np.random.default_rng(seed)
    diffs = (a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
             - b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1))
    return _percentile_interval(diffs, level)


# ----------------------------------------------------------------------------------------------------
# rliable (Agarwal et al. 2021): interquartile mean, probability of improvement, performance profiles.
# Score matrices are (runs x tasks): one row per training seed, one column per task (a dataset, or a
# target return of one dataset); the stratified bootstrap resamples runs within each task.


def _rliable() -> tuple[Any, Any]:
    purpose = "performance profiles"
    return (optional_import("rliable.library", "stats", purpose),
            optional_import("rliable.metrics", "stats", purpose))


def _matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    scores = scores[:, None] if scores.ndim == 1 else scores
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty (runs x tasks) matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values; leave failed runs out before aggregating")
    return scores


def iqm_ci(scores: np.ndarray, resamples: int = 10_000, level: float = 0.95,
           seed: int = 0) -> tuple[float, float, float]:
    """Interquartile mean of a (runs x tasks) score matrix (the mean of the middle 50% of all scores: less
    sensitive to one outlying seed than the mean, less wasteful than the median) and its stratified-
    bootstrap percentile interval: (iqm, low, high). rliable's definitions (``metrics.aggregate_iqm``,
    runs resampled within each task), computed in one vectorized pass: rliable's own bootstrap loops in
    Python and takes seconds per cell. The point estimate is ``metrics.aggregate_iqm``'s formula (a 25%
    trimmed mean of every score), so it needs no rliable."""
    matrix = _matrix(scores)
    drawn = _stratified_draws(matrix, np.random.default_rng(seed), resamples)
    iqms = trim_mean(drawn.reshape(resamples, -1), 0.25, axis=1)
    return (float(trim_mean(matrix, 0.25, axis=None)), *_percentile_interval(iqms, level))


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) of (..., runs, tasks) score stacks: the share of run pairs of one task that X wins, a tie
    counting half, averaged over tasks (rliable's ``metrics.probability_of_improvement``)."""
    diff = x[..., :, None, :] - y[..., None, :, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-3, -2)).mean(axis=-1)


def probability_of_improvement(x: np.ndarray, y: np.ndarray, resamples: int = 10_000, level: float = 0.95,
                               seed: int = 0) -> tuple[float, float, float]:
    """P(X > Y): the chance that a run of X beats a run of Y on the same task (Mann-Whitney U over runs,
    averaged over tasks; 0.5 = no difference), with its stratified-bootstrap percentile interval (the runs of
    X and of Y resampled independently within each task, as rliable does), in one vectorized pass:
    (p, low, high)."""
    x, y = _matrix(x), _matrix(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must score the same tasks (got {x.shape[1]} and {y.shape[1]})")
    rng = np.random.default_rng(seed)
    draws = _poi(_stratified_draws(x, rng, resamples), _stratified_draws(y, rng, resamples))
    return (float(_poi(x, y)), *_percentile_interval(draws, level))


def performance_profile(scores: dict[str, np.ndarray], taus: np.ndarray, resamples: int = 2000,
                        level: float = 0.95, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Score distributions: for every threshold tau, the fraction of runs (over all tasks) scoring above it,
    per entry of ``scores``, with a stratified-bootstrap band: {name: (fractions, (2, len(taus)) band)}."""
    library, _ = _rliable()
    matrices = {name: _matrix(m) for name, m in scores.items()}
    np.random.seed(seed)  # create_performance_profile draws its bootstrap from numpy's global generator
    profiles, bands = library.create_performance_profile(matrices, np.asarray(taus, dtype=float),
                                                        reps=resamples, confidence_interval_size=level)
    return {name: (np.asarray(profiles[name]), np.asarray(bands[name])) for name in matrices}
