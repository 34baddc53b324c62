"""Episodes and turning flat transition arrays into episodes, with validation."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np

from envs.errors import DatasetError


@dataclass(frozen=True, eq=False)
class Episode:
    """One trajectory: T observations, actions, rewards and end flags (no final next-observation)."""

    observations: np.ndarray  # (T, obs_dim) float32
    actions: np.ndarray  # (T, act_dim) float32
    rewards: np.ndarray  # (T,) float32
    terminals: np.ndarray  # (T,) bool
    timeouts: np.ndarray  # (T,) bool

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def total_return(self) -> float:
        """Undiscounted return, summed in float64."""
        return float(np.sum(self.rewards, dtype=np.float64))

    def with_observations(self, observations: np.ndarray) -> Episode:
        """A copy with other observations (same length)."""
        return Episode(observations, self.actions, self.rewards, self.terminals, self.timeouts)


REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
#: A value past this in a dataset is warned about: MuJoCo states, actions and rewards stay far below it, and
#: squares of values near 1e19 overflow the float32 statistics.
ABSURD_MAGNITUDE = 1e6


def _as_vector(x: np.ndarray, key: str, where: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DatasetError(f"{where}: key '{key}' must be 1-D (one value per step), got shape {arr.shape}")
    return arr


def _as_matrix(x: np.ndarray, key: str, where: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DatasetError(f"{where}: key '{key}' must be 2-D (steps, dim), got shape {arr.shape}")
    return arr


def _check_finite(arr: np.ndarray, key: str, where: str) -> None:
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise DatasetError(f"{where}: key '{key}' has non-numeric dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = np.argwhere(bad)[0]
            kind = "NaN" if np.isnan(arr[tuple(idx)]) else "Inf"
            raise DatasetError(
                f"{where}: key '{key}' contains {int(bad.sum())} non-finite value(s) "
                f"(first: {kind} at index {tuple(int(i) for i in idx)})"
            )
        largest = float(np.abs(arr).max(initial=0.0))
        if largest > ABSURD_MAGNITUDE:
            warnings.warn(f"{where}: key '{key}' holds values up to {largest:.3g} in magnitude, far beyond "
                          f"any MuJoCo quantity (|x| > {ABSURD_MAGNITUDE:g}); its statistics may overflow "
                          "float32: check how the file was scaled", stacklevel=2)


def validate_arrays(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Check keys, shapes, lengths and finiteness; return canonical float32/bool arrays.

    ``where`` names the file (and episode) in error messages. ``timeouts`` is optional (all False).
    """
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DatasetError(
            f"{where}: missing key(s) {missing}; a D4RL-layout dataset needs "
            f"{list(REQUIRED_KEYS)} (+ optional 'timeouts')"
        )
    obs = _as_matrix(arrays["observations"], "observations", where)
    act = _as_matrix(arrays["actions"], "actions", where)
    rew = _as_vector(arrays["rewards"], "rewards", where)
    term = _as_vector(arrays["terminals"], "terminals", where)
    tout = arrays.get("timeouts")
    tout = np.zeros(len(rew), dtype=bool) if tout is None else _as_vector(tout, "timeouts", where)
    n = len(obs)
    if n == 0:
        raise DatasetError(f"{where}: dataset is empty (0 transitions)")
    for key, arr in (("actions", act), ("rewards", rew), ("terminals", term), ("timeouts", tout)):
        if len(arr) != n:
            raise DatasetError(
                f"{where}: mismatched lengths: 'observations' has {n} steps but '{key}' has {len(arr)}"
            )
    for key, arr in (("observations", obs), ("actions", act), ("rewards", rew),
                     ("terminals", term), ("timeouts", tout)):
        _check_finite(arr, key, where)
    return {
        "observations": obs.astype(np.float32, copy=False),
        "actions": act.astype(np.float32, copy=False),
        "rewards": rew.astype(np.float32, copy=False),
        "terminals": term.astype(bool, copy=False),
        "timeouts": tout.astype(bool, copy=False),
    }


def split_episodes(arrays: dict[str, np.ndarray], where: str) -> list[Episode]:
    """Validate flat D4RL-layout arrays and cut them after every step with terminals | timeouts.

    Steps after the last flagged step form a final episode too (D4RL files often end mid-episode).
    """
    a = validate_arrays(arrays, where)
    ends = np.flatnonzero(a["terminals"] | a["timeouts"]) + 1
    n = len(a["rewards"])
    bounds = [0, *ends.tolist()]
    if bounds[-1] != n:
        bounds.append(n)
    return [
        Episode(*(a[k][s:e] for k in ("observations", "actions", "rewards", "terminals", "timeouts")))
        for s, e in itertools.pairwise(bounds)
    ]


def episode_from_arrays(arrays: dict[str, np.ndarray], where: str) -> Episode:
    """One already-delimited episode (DT .pkl entry, Minari episode), validated."""
    a = validate_arrays(arrays, where)
    return Episode(a["observations"], a["actions"], a["rewards"], a["terminals"], a["timeouts"])


def split_long_episodes(episodes: list[Episode], limit: int) -> list[Episode]:
    """Episodes longer than ``limit`` steps cut into pieces of at most ``limit`` steps, each cut flagged as a
    timeout (as an environment's step limit would have ended it)."""
    out = []
    for ep in episodes:
        for start in range(0, len(ep), limit):
            stop = min(start + limit, len(ep))
            timeouts = ep.timeouts[start:stop].copy()
            if stop < len(ep):
                timeouts[-1] = True
            out.append(Episode(ep.observations[start:stop], ep.actions[start:stop], ep.rewards[start:stop],
                               ep.terminals[start:stop], timeouts))
    return out
