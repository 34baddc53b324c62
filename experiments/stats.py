"""Bootstrap confidence intervals over seeds: the spread a reader should put around a cell's mean."""

from __future__ import annotations

import numpy as np


def bootstrap_mean_ci(values: np.ndarray, resamples: int = 10_000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one number per seed), resampling seeds
    with replacement; a single value gives the degenerate interval (v, v)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


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
    tail = 100 * (1 - level) / 2
    return float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail))
