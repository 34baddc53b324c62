"""The one standard deviation of every table, report, CSV and printed summary: the sample std (ddof = 1).

A spread over training seeds, evaluation episodes or a dataset's episodes estimates the spread of what they
were drawn from, so it divides by n - 1 (Bessel's correction):

    s = sqrt( sum_i (x_i - mean)^2 / (n - 1) ).

One value has no sample std: it is NaN (null in JSON, an empty field in CSV) and shown as "–", never 0.
(The per-feature state normalization of ``envs.dataset`` is a property of the data, not an estimate, and
keeps the population std the Decision Transformer's reference code uses.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

#: The delta degrees of freedom of every reported standard deviation.
STD_DDOF = 1
#: How a missing value (a std of one value among them) is shown in a table.
MISSING = "–"


def sample_std(values: Iterable[float]) -> float:
    """s = sqrt(sum_i (x_i - mean)^2 / (n - 1)) of ``values``; NaN for fewer than two values."""
    arr = np.asarray(list(values), dtype=np.float64)
    return float(arr.std(ddof=STD_DDOF)) if arr.size > STD_DDOF else math.nan


def sample_std_from_population(std: float, n: int) -> float:
    """The sample std of n values whose population std (ddof = 0) is ``std``: std * sqrt(n / (n - 1)),
    exact (both share the sum of squared deviations); NaN for n < 2. Converts figures recorded with
    ddof = 0."""
    return float(std) * math.sqrt(n / (n - 1)) if n > 1 else math.nan


def format_std(std: float, digits: int = 1) -> str:
    """A std for a table: ``digits`` decimals, or "–" where there is none (one value)."""
    return MISSING if math.isnan(std) else f"{std:.{digits}f}"
