"""Helpers for tests: write small D4RL-layout HDF5 files, DT .pkl files and Minari datasets."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np

DIMS = {"hopper": (11, 3), "halfcheetah": (17, 6), "walker2d": (17, 6)}


def make_arrays(
    env: str = "hopper",
    lengths: tuple[int, ...] = (5, 3, 4),
    ends: tuple[str, ...] = ("terminal", "timeout", "none"),
    seed: int = 0,
    rewards: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Flat D4RL arrays for episodes of ``lengths``; ``ends[i]`` flags episode i's last step.

    ends: "terminal", "timeout" or "none" (no flag: only meaningful for the last episode).
    Rewards default to episode i's steps all equal to i + 1 (so returns are (i+1) * length).
    """
    obs_dim, act_dim = DIMS[env]
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    rew = []
    pos = 0
    for i, (length, end) in enumerate(zip(lengths, ends)):
        pos += length
        if end == "terminal":
            terminals[pos - 1] = True
        elif end == "timeout":
            timeouts[pos - 1] = True
        rew.append(rewards[i] if rewards is not None else np.full(length, i + 1.0))
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": np.concatenate(rew).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def write_hdf5(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> Path:
    """Write arrays (any subset of keys) as a D4RL-layout HDF5 file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def split_arrays(arrays: dict[str, np.ndarray], lengths: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    """Per-episode dicts (Decision Transformer .pkl layout) cut from flat arrays."""
    out, pos = [], 0
    for length in lengths:
        out.append({k: v[pos:pos + length] for k, v in arrays.items()})
        pos += length
    return out


def write_pkl(path: str | Path, episodes: list) -> Path:
    """Write a Decision Transformer .pkl (a list of per-episode dicts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(episodes, fh)
    return path


def write_minari(
    dataset_id: str,
    env_id: str = "Hopper-v5",
    lengths: tuple[int, ...] = (4, 6),
    ref: tuple[float, float] | None = (-20.0, 3000.0),
    seed: int = 0,
):
    """Create a tiny local Minari dataset (needs minari; respects $MINARI_DATASETS_PATH)."""
    import warnings

    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    env_name = env_id.split("-")[0].lower()
    obs_dim, act_dim = DIMS[env_name]
    rng = np.random.default_rng(seed)
    buffers = []
    for i, length in enumerate(lengths):
        terminations = np.zeros(length, dtype=bool)
        truncations = np.zeros(length, dtype=bool)
        (terminations if i % 2 == 0 else truncations)[-1] = True
        buffers.append(EpisodeBuffer(
            id=i,
            observations=rng.normal(size=(length + 1, obs_dim)),
            actions=rng.uniform(-1, 1, size=(length, act_dim)).astype(np.float32),
            rewards=np.full(length, float(i + 1)),
            terminations=terminations,
            truncations=truncations,
            infos={},
        ))
    kwargs = {"algorithm_name": "test", "author": "test", "author_email": "test@example.org",
                  "code_permalink": "none", "description": "tiny test dataset"}
    if ref is not None:
        kwargs.update(ref_min_score=ref[0], ref_max_score=ref[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minari.create_dataset_from_buffers(dataset_id, buffers, env=env_id, **kwargs)
