"""Readers for D4RL-layout HDF5 files and Decision-Transformer-style .pkl files."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from envs.episodes import REQUIRED_KEYS, Episode, episode_from_arrays, split_episodes
from envs.errors import DatasetError, DatasetNotFoundError

HDF5_KEYS = (*REQUIRED_KEYS, "timeouts")


def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_hdf5(path: str | Path) -> tuple[list[Episode], dict[str, Any]]:
    """Episodes and file attributes of a D4RL-layout HDF5 file (errors name the file and key)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file ({exc})") from None
    if not is_hdf5:
        raise DatasetError(f"{path}: not an HDF5 file (bad signature; corrupt or wrong format?)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
            for key in HDF5_KEYS:
                if key not in f:
                    continue
                node = f[key]
                if not isinstance(node, h5py.Dataset):
                    raise DatasetError(f"{path}: key '{key}' is a group, expected an array")
                try:
                    arrays[key] = node[()]
                except (OSError, RuntimeError, ValueError, KeyError) as exc:
                    raise DatasetError(
                        f"{path}: key '{key}' cannot be read; the file is corrupt or truncated ({exc})"
                    ) from None
    except DatasetError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise DatasetError(f"{path}: cannot open as HDF5; the file is corrupt or truncated ({exc})") from None
    return split_episodes(arrays, str(path)), attrs


def read_pkl(path: str | Path) -> tuple[list[Episode], dict[str, Any]]:
    """Episodes of a Decision-Transformer .pkl (a list of per-episode dicts of arrays).

    Only open .pkl files you trust: unpickling can run arbitrary code.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError,
            TypeError) as exc:
        raise DatasetError(f"{path}: cannot unpickle; the file is corrupt or not a DT .pkl ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("trajectories"), list):
        data = data["trajectories"]
    if not isinstance(data, (list, tuple)):
        raise DatasetError(
            f"{path}: expected a list of per-episode dicts (Decision Transformer .pkl), got "
            f"{type(data).__name__}"
        )
    if not data:
        raise DatasetError(f"{path}: dataset is empty (0 episodes)")
    episodes = []
    for i, traj in enumerate(data):
        where = f"{path} episode {i}"
        if not isinstance(traj, dict):
            raise DatasetError(f"{where}: expected a dict of arrays, got {type(traj).__name__}")
        traj = dict(traj)
        if "terminals" not in traj and "dones" in traj:  # some DT exports name it "dones"
            traj["terminals"] = traj["dones"]
        episodes.append(episode_from_arrays(traj, where))
    return episodes, {}
