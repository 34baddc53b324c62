"""Environment registry: gymnasium ids, dimensions, reference scores and return-to-go targets."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """What the suite knows about one MuJoCo locomotion task."""

    name: str
    gym_id_d4rl: str  # closest gymnasium env to D4RL's data (collected in gym's v3 envs)
    gym_id_minari: str  # Minari's mujoco datasets were collected in the v5 envs
    obs_dim: int
    act_dim: int
    ref_min: float  # D4RL reference returns (random / expert policy)
    ref_max: float
    default_targets: tuple[float, ...]  # return-to-go targets used by Decision Transformer
    max_episode_steps: int
    # Observation = qpos[1:] followed by qvel (rootx excluded); the first n_positions entries
    # are positions/angles, the rest velocities. Layout from gymnasium 1.4
    # envs/mujoco/{hopper,half_cheetah,walker2d}_v5.py docstrings ("Observation Space": hopper
    # qpos 5 + qvel 6, half_cheetah qpos 8 + qvel 9, walker2d qpos 8 + qvel 9) and the v4
    # envs' _get_obs (concatenate(qpos.flat[1:], qvel.flat)).
    n_positions: int


ENV_SPECS: dict[str, EnvSpec] = {
    "halfcheetah": EnvSpec(
        name="halfcheetah", gym_id_d4rl="HalfCheetah-v4", gym_id_minari="HalfCheetah-v5",
        obs_dim=17, act_dim=6, ref_min=-280.178953, ref_max=12135.0,
        default_targets=(6000.0, 12000.0), max_episode_steps=1000, n_positions=8,
    ),
    "hopper": EnvSpec(
        name="hopper", gym_id_d4rl="Hopper-v4", gym_id_minari="Hopper-v5",
        obs_dim=11, act_dim=3, ref_min=-20.272305, ref_max=3234.3,
        default_targets=(1800.0, 3600.0), max_episode_steps=1000, n_positions=5,
    ),
    "walker2d": EnvSpec(
        name="walker2d", gym_id_d4rl="Walker2d-v4", gym_id_minari="Walker2d-v5",
        obs_dim=17, act_dim=6, ref_min=1.629008, ref_max=4592.3,
        default_targets=(2500.0, 5000.0), max_episode_steps=1000, n_positions=8,
    ),
}

D4RL_REF_SOURCE = "D4RL reference returns"
# gymnasium id prefix (lower case) -> env name
_GYM_PREFIX = {"halfcheetah": "halfcheetah", "hopper": "hopper", "walker2d": "walker2d"}


def env_names() -> list[str]:
    """Names of the registered environments."""
    return list(ENV_SPECS)


def get_env_spec(env: str | EnvSpec) -> EnvSpec:
    """The spec for an env name ("hopper") or gymnasium id ("Hopper-v4"), case-insensitive."""
    if isinstance(env, EnvSpec):
        return env
    name = env_name_from_gym_id(env) or env.strip().lower()
    if name not in ENV_SPECS:
        raise ValueError(
            f"unknown environment {env!r}; known: {', '.join(ENV_SPECS)} "
            f"(or their gymnasium ids such as Hopper-v4)"
        )
    return ENV_SPECS[name]


def env_name_from_gym_id(gym_id: str) -> str | None:
    """"Hopper-v4" -> "hopper"; None when the id is not a registered env's gymnasium id."""
    m = re.fullmatch(r"([A-Za-z0-9]+)-v(\d+)", gym_id.strip())
    if not m:
        return None
    return _GYM_PREFIX.get(m.group(1).lower())


def is_gym_id(text: str) -> bool:
    """True for a gymnasium id of a registered env, e.g. "HalfCheetah-v5"."""
    return env_name_from_gym_id(text) is not None


def infer_env_name(*hints: str | None) -> str | None:
    """First registered env named in the hints (dataset ids, file names, gym ids), else None."""
    for hint in hints:
        if not hint:
            continue
        from_gym = env_name_from_gym_id(str(hint))
        if from_gym:
            return from_gym
        low = str(hint).lower().replace("_", "-")
        # longest names first so "halfcheetah" is not mistaken for anything shorter
        for name in sorted(ENV_SPECS, key=len, reverse=True):
            if re.search(rf"(^|[^a-z0-9]){name}([^a-z0-9]|$)", low):
                return name
    return None


def normalized_score(
    env: str | EnvSpec, returns, ref: tuple | None = None
) -> tuple[np.ndarray, str]:
    """100 * (return - ref_min) / (ref_max - ref_min) and the name of the references used.

    ``ref`` is a dataset's own ``(min, max, source)`` (e.g. from Minari metadata); when None
    the D4RL reference returns of ``env`` are used.
    """
    if ref is not None:
        lo, hi = float(ref[0]), float(ref[1])
        source = str(ref[2]) if len(ref) > 2 else "dataset reference returns"
    else:
        spec = get_env_spec(env)
        lo, hi, source = spec.ref_min, spec.ref_max, D4RL_REF_SOURCE
    if not hi > lo:
        raise ValueError(f"reference returns must satisfy max > min, got min={lo}, max={hi}")
    scores = 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)
    return scores, source
