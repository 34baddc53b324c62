"""Observation filters applied identically to offline datasets and to evaluation environments.

Spec strings: "full" (default), "positions" (drop velocities), "noisy:SCALE" (Gaussian noise),
composable with "+", e.g. "positions+noisy:0.1". Noise is added after the position selection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from envs.registry import ENV_SPECS, env_name_from_gym_id, get_env_spec

_FORMS = ('"full", "positions", "noisy:SCALE" (SCALE > 0), or a "+"-joined combination such as '
          '"positions+noisy:0.1"')
_NOISE_SALT = 0x0B5E  # decorrelates the noise stream from the env's own seed use


def n_positions(obs_dim: int, env: str | None = None) -> int:
    """How many leading observation entries are positions/angles (see EnvSpec.n_positions)."""
    if env is not None:
        spec = get_env_spec(env)
        if spec.obs_dim != obs_dim:
            raise ValueError(f"{spec.name} observations have {spec.obs_dim} features, got {obs_dim}")
        return spec.n_positions
    counts = {s.n_positions for s in ENV_SPECS.values() if s.obs_dim == obs_dim}
    if len(counts) != 1:
        raise ValueError(
            f"cannot tell which entries of a {obs_dim}-feature observation are positions; name the env"
        )
    return counts.pop()


def _env_name_of(env) -> str | None:
    spec = getattr(env, "spec", None)
    gym_id = getattr(spec, "id", None)
    return env_name_from_gym_id(gym_id) if gym_id else None


@dataclass(frozen=True)
class ObservationFilter:
    """Which observation features an agent sees and how much Gaussian noise is added to them."""

    positions: bool = False
    noise_scale: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_scale) and self.noise_scale >= 0):
            raise ValueError(f"noise scale must be a finite number >= 0, got {self.noise_scale}")

    @classmethod
    def parse(cls, spec: str | ObservationFilter | None) -> ObservationFilter:
        """Build a filter from a spec string (None or "" is "full")."""
        if isinstance(spec, ObservationFilter):
            return spec
        if spec is None:
            return cls()
        if not isinstance(spec, str):
            raise TypeError(f"observation filter spec must be a string, got {type(spec).__name__}")
        tokens = [t.strip().lower() for t in spec.split("+")]
        if not spec.strip() or any(not t for t in tokens):
            raise ValueError(f"empty part in observation filter {spec!r}; use {_FORMS}")
        positions, noise, seen = False, 0.0, set()
        for tok in tokens:
            head, _, arg = tok.partition(":")
            head = head.strip()
            if head in seen:
                raise ValueError(f"observation filter {spec!r} names {head!r} twice")
            seen.add(head)
            if head == "full" and not arg:
                continue
            if head == "positions" and not arg:
                positions = True
            elif head == "noisy":
                if not arg.strip():
                    raise ValueError(f"observation filter {spec!r}: 'noisy' needs a scale, e.g. noisy:0.1")
                try:
                    noise = float(arg)
                except ValueError:
                    raise ValueError(f"observation filter {spec!r}: noise scale {arg!r} is not a "
                                     "number") from None
                if not (math.isfinite(noise) and noise > 0):
                    raise ValueError(f"observation filter {spec!r}: noise scale must be > 0 and "
                                     f"finite, got {arg}")
            else:
                raise ValueError(f"unknown observation filter part {tok!r} in {spec!r}; use {_FORMS}")
        if "full" in seen and positions:
            raise ValueError(f"observation filter {spec!r} asks for both 'full' and 'positions'")
        return cls(positions=positions, noise_scale=noise)

    def __str__(self) -> str:
        parts = (["positions"] if self.positions else []) + (
            [f"noisy:{self.noise_scale!r}"] if self.noise_scale > 0 else [])
        return "+".join(parts) or "full"

    @property
    def is_identity(self) -> bool:
        """True for "full": observations pass unchanged."""
        return not self.positions and self.noise_scale == 0

    def keep(self, obs_dim: int, env: str | None = None) -> int:
        """Number of leading features kept from a ``obs_dim``-feature observation."""
        return n_positions(obs_dim, env) if self.positions else obs_dim

    def obs_dim(self, env_obs_dim: int, env: str | None = None) -> int:
        """Observation width after filtering."""
        return self.keep(env_obs_dim, env)

    def transform(self, obs: np.ndarray, keep: int, rng: np.random.Generator | None) -> np.ndarray:
        """Filter an array whose last axis is the feature axis (noise drawn from ``rng``)."""
        out = obs[..., :keep]
        if self.noise_scale > 0:
            if rng is None:
                raise ValueError("a noisy observation filter needs a random generator")
            out = out + rng.normal(0.0, self.noise_scale, size=out.shape).astype(out.dtype, copy=False)
        return out

    def apply_dataset(self, ds, seed: int = 0):
        """A new TrajectoryDataset with filtered observations (noise seeded by ``seed``)."""
        if self.is_identity:
            return ds
        if ds.observe != "full":
            raise ValueError(f"dataset {ds.name} is already filtered with {ds.observe!r}; load "
                             "it with observe=")
        keep = self.keep(ds.obs_dim, ds.env_name)
        rng = np.random.default_rng([seed, _NOISE_SALT])
        episodes = [ep.with_observations(
            np.ascontiguousarray(self.transform(ep.observations, keep, rng), dtype=np.float32))
            for ep in ds.episodes]
        return ds.replace(episodes=episodes, observe=str(self))

    def wrap_env(self, env, seed: int | None = None, env_name: str | None = None):
        """Wrap a gymnasium Env or VectorEnv so its observations go through this filter.

        Noise is re-seeded from every ``reset(seed=...)``; ``seed`` seeds it until then.
        """
        if self.is_identity:
            return env
        name = env_name or _env_name_of(env)
        if isinstance(env, gym.vector.VectorEnv):
            return _VectorObservationFilter(env, self, seed, name)
        return _ObservationFilterWrapper(env, self, seed, name)


def _filtered_box(space: gym.spaces.Box, keep: int) -> gym.spaces.Box:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"observation filters need a 1-D Box observation space, got {space}")
    return gym.spaces.Box(-np.inf, np.inf, shape=(keep,), dtype=space.dtype)


def _noise_rng(seed) -> np.random.Generator:
    return np.random.default_rng(None if seed is None else [int(seed), _NOISE_SALT])


class _ObservationFilterWrapper(gym.ObservationWrapper):
    """ObservationFilter for a single gymnasium env."""

    def __init__(self, env: gym.Env, filt: ObservationFilter, seed: int | None, env_name: str | None):
        super().__init__(env)
        self.filt = filt
        self.keep = filt.keep(env.observation_space.shape[0], env_name)
        self.observation_space = _filtered_box(env.observation_space, self.keep)
        self.rng = _noise_rng(seed)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = _noise_rng(seed)
        return super().reset(seed=seed, options=options)

    def observation(self, observation):
        return self.filt.transform(np.asarray(observation), self.keep, self.rng)


class _VectorObservationFilter(gym.vector.VectorObservationWrapper):
    """ObservationFilter for a gymnasium VectorEnv (batched observations)."""

    def __init__(self, env, filt: ObservationFilter, seed: int | None, env_name: str | None):
        super().__init__(env)
        self.filt = filt
        self.keep = filt.keep(env.single_observation_space.shape[0], env_name)
        self.single_observation_space = _filtered_box(env.single_observation_space, self.keep)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        self.rng = _noise_rng(seed)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = _noise_rng(seed if isinstance(seed, int) else seed[0])
        return super().reset(seed=seed, options=options)

    def observations(self, observations):
        return self.filt.transform(np.asarray(observations), self.keep, self.rng)
