"""The bridge between ``envs`` datasets and the agent: load, filter, normalize, check limits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs import get_env_spec, load_dataset


@dataclass
class PreparedData:
    """A filtered dataset with what training and evaluation need from it."""

    dataset: object  # envs.TrajectoryDataset
    observe: str
    env_name: str
    env_id: str
    state_dim: int
    act_dim: int
    state_mean: np.ndarray
    state_std: np.ndarray
    max_ep_len: int
    default_targets: tuple[float, ...]


def prepare_data(spec: str, env: str | None, observe: str, seed: int,
                 split_long: bool = False) -> PreparedData:
    """Load ``spec`` (with ``split_long``, episodes longer than the env's step limit cut at it), apply the
    observation filter and compute normalization statistics."""
    ds = load_dataset(spec, env=env, observe=observe, seed=seed, split_long=split_long)
    stats = ds.stats()
    env_spec = get_env_spec(ds.env_name)
    return PreparedData(
        dataset=ds,
        observe=str(ds.observe),
        env_name=ds.env_name,
        env_id=ds.env_id,
        state_dim=ds.obs_dim,
        act_dim=ds.act_dim,
        state_mean=np.asarray(stats.state_mean, dtype=np.float32),
        state_std=np.asarray(stats.state_std, dtype=np.float32),  # already has D4RL's +1e-6
        max_ep_len=env_spec.max_episode_steps,
        default_targets=tuple(float(t) for t in env_spec.default_targets),
    )


def check_context(context: int, max_ep_len: int) -> None:
    """Reject context lengths outside [1, the environment's episode limit]."""
    if context < 1 or context > max_ep_len:
        raise ValueError(
            f"context length {context} is outside 1..{max_ep_len} (the environment's episode length limit); "
            f"use --context {max_ep_len} to condition on whole episodes"
        )
