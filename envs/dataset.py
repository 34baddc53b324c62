"""The trajectory dataset type: episodes plus where they came from and summary statistics."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.episodes import Episode
from envs.errors import DatasetError
from envs.registry import get_env_spec, normalized_score
from envs.spread import format_std, sample_std

# Added to the state standard deviation so constant features do not divide by zero
# (the Decision Transformer reference code uses the same 1e-6).
STATE_STD_EPS = 1e-6


@dataclass(frozen=True)
class DatasetStats:
    """Summary statistics of a dataset (returns are undiscounted per-episode sums)."""

    episodes: int
    transitions: int
    return_mean: float
    return_std: float  # sample std (ddof = 1, envs.spread); NaN for a dataset of one episode
    return_min: float
    return_max: float
    length_mean: float
    length_max: int
    terminals: int
    timeouts: int
    state_mean: np.ndarray  # (obs_dim,) float32
    # (obs_dim,) float32, population std (ddof = 0) + STATE_STD_EPS: the input normalization of the DT
    # reference code, a property of the data rather than a reported spread
    state_std: np.ndarray


@dataclass
class TrajectoryDataset:
    """A list of episodes with their environment, provenance and display label."""

    episodes: list[Episode]
    name: str  # the spec as given to load_dataset
    label: str  # human-readable, printed next to results
    env_name: str  # "hopper", "halfcheetah", "walker2d"
    env_id: str  # gymnasium id to evaluate in, e.g. "Hopper-v4"
    ref_scores: tuple[float, float, str] | None = None  # the dataset's own (min, max, source)
    source: str = ""  # file(s) or Minari path the data was read from
    observe: str = "full"  # observation filter applied (see envs.filters)
    notes: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    _stats: DatasetStats | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.episodes:
            raise DatasetError(f"{self.name}: dataset is empty (no episodes)")
        dims = {(ep.observations.shape[1], ep.actions.shape[1]) for ep in self.episodes}
        if len(dims) != 1:
            raise DatasetError(f"{self.name}: episodes disagree on (obs_dim, act_dim): {sorted(dims)}")

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def obs_dim(self) -> int:
        """Observation width (after the observation filter)."""
        return int(self.episodes[0].observations.shape[1])

    @property
    def act_dim(self) -> int:
        """Action width."""
        return int(self.episodes[0].actions.shape[1])

    @property
    def transitions(self) -> int:
        """Total number of steps over all episodes."""
        return sum(len(ep) for ep in self.episodes)

    @property
    def is_standin(self) -> bool:
        """True when the data are the local stand-ins, not published D4RL/Minari files."""
        return "stand-in" in self.label

    def returns(self) -> np.ndarray:
        """Per-episode undiscounted returns (float64)."""
        return np.array([ep.total_return for ep in self.episodes], dtype=np.float64)

    def stats(self) -> DatasetStats:
        """Summary statistics; state mean/std are over every observation in the dataset."""
        if self._stats is None:
            rets = self.returns()
            lengths = np.array([len(ep) for ep in self.episodes])
            obs = np.concatenate([ep.observations for ep in self.episodes]).astype(np.float64)
            self._stats = DatasetStats(
                episodes=len(self.episodes),
                transitions=int(lengths.sum()),
                return_mean=float(rets.mean()),
                return_std=sample_std(rets),
                return_min=float(rets.min()),
                return_max=float(rets.max()),
                length_mean=float(lengths.mean()),
                length_max=int(lengths.max()),
                terminals=int(sum(int(ep.terminals.sum()) for ep in self.episodes)),
                timeouts=int(sum(int(ep.timeouts.sum()) for ep in self.episodes)),
                state_mean=obs.mean(axis=0).astype(np.float32),
                state_std=(obs.std(axis=0) + STATE_STD_EPS).astype(np.float32),
            )
        return self._stats

    @property
    def state_mean(self) -> np.ndarray:
        """Per-feature observation mean (of the filtered observations)."""
        return self.stats().state_mean

    @property
    def state_std(self) -> np.ndarray:
        """Per-feature observation std + 1e-6 (of the filtered observations)."""
        return self.stats().state_std

    def fingerprint(self) -> str:
        """A hash of every episode's arrays (observations as filtered, actions, rewards, end flags): the same
        for the same data, different when any value or episode boundary differs."""
        digest = hashlib.blake2b(digest_size=16)
        for ep in self.episodes:
            for arr in (ep.observations, ep.actions, ep.rewards, ep.terminals, ep.timeouts):
                arr = np.ascontiguousarray(arr)
                digest.update(f"{arr.dtype.str}{arr.shape}".encode())
                digest.update(memoryview(arr).cast("B"))
        return digest.hexdigest()

    def normalized_score(self, returns) -> tuple[np.ndarray, str]:
        """Normalized scores of ``returns`` with this dataset's references (else D4RL's)."""
        return normalized_score(self.env_name, returns, ref=self.ref_scores)

    def replace(self, **changes: Any) -> TrajectoryDataset:
        """A copy with some fields changed (statistics are recomputed)."""
        return dataclasses.replace(self, **changes)

    def summary(self) -> str:
        """A short multi-line printable summary."""
        s = self.stats()
        spec = get_env_spec(self.env_name)
        norm, _ = self.normalized_score([s.return_mean, s.return_max])
        if self.ref_scores is not None:
            ref_text = f"{self.ref_scores[0]:g} / {self.ref_scores[1]:g} ({self.ref_scores[2]})"
        elif self.is_standin:
            # stand-ins are normalized with the published references but are not D4RL data
            ref_text = f"{spec.ref_min:g} / {spec.ref_max:g} (published {self.env_name} references)"
        else:
            ref_text = f"{spec.ref_min:g} / {spec.ref_max:g} (D4RL)"
        lines = [
            f"dataset      {self.label}",
            f"spec         {self.name}",
            f"source       {self.source}" if self.source else None,
            (f"environment  {self.env_name} (evaluate in {self.env_id}); "
             f"obs_dim {self.obs_dim}, act_dim {self.act_dim}, observe={self.observe}"),
            (f"size         {s.transitions:,} transitions, {s.episodes:,} episodes "
             f"(length mean {s.length_mean:.1f}, max {s.length_max}; "
             f"{s.terminals} terminals, {s.timeouts} timeouts)"),
            (f"return       mean {s.return_mean:.1f} ± {format_std(s.return_std)}, "
             f"min {s.return_min:.1f}, max {s.return_max:.1f}"),
            f"normalized   mean {norm[0]:.1f}, max {norm[1]:.1f}; reference returns {ref_text}",
        ]
        lines += [f"note         {n}" for n in self.notes]
        return "\n".join(line for line in lines if line is not None)

    def __str__(self) -> str:
        return self.summary()
