"""Environments and offline datasets: D4RL/Minari/stand-in loading, reference scores, filters.

Typical use::

    ds = load_dataset("hopper-medium-replay-standin", observe="positions")
    envs = make_vector_env(ds.env_id, num_envs=4, seed=0, observe=ds.observe)

``load_dataset(observe=...)`` applies the observation filter to the dataset itself; pass the
same ``ds.observe`` to ``make_vector_env`` so evaluation sees the same features.
"""

from envs.catalog import known_datasets, standin_dir
from envs.dataset import DatasetStats, TrajectoryDataset
from envs.episodes import Episode, split_episodes
from envs.errors import DatasetError, DatasetNotFoundError, OptionalDependencyError
from envs.filters import ObservationFilter
from envs.loading import load_dataset
from envs.registry import ENV_SPECS, EnvSpec, get_env_spec, infer_env_name, normalized_score
from envs.vector import make_env, make_vector_env

__all__ = [
    "ENV_SPECS",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetStats",
    "EnvSpec",
    "Episode",
    "ObservationFilter",
    "OptionalDependencyError",
    "TrajectoryDataset",
    "get_env_spec",
    "infer_env_name",
    "known_datasets",
    "load_dataset",
    "make_env",
    "make_vector_env",
    "normalized_score",
    "split_episodes",
    "standin_dir",
]
