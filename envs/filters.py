"""Task variants applied identically to offline datasets and to evaluation environments.

Spec strings (``--observe``): "full" (default), "positions" (drop velocities), "noisy:SCALE" (Gaussian
noise), "flicker:P" (each observation blanked with probability P, plus a seen flag) and "flip:P" (each
actuator's sign flipped with probability P per episode, hidden from the agent), composable with "+", e.g.
"positions+noisy:0.1+flicker:0.9". Applied in that order: positions, then noise, then blanking; the flip
acts on actions alone (see envs.episode_draws for the per-episode draws).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from envs.episode_draws import FlickerWrapper, FlipWrapper, flicker_episode, flip_episode
from envs.registry import ENV_SPECS, env_name_from_gym_id, get_env_spec

_FORMS = ('"full", "positions", "noisy:SCALE" (SCALE > 0), "flicker:P" (0 < P < 1), "flip:P" (0 < P <= 1), '
          'or a "+"-joined combination such as "positions+noisy:0.1"')
_NOISE_SALT = 0x0B5E  # decorrelates the noise stream from the env's own seed use

#: The parts that take a number: part -> (the field it sets, the number's short and full names, an example,
#: the rule and its test).
_NUMERIC_PARTS = {
    "noisy": ("noise_scale", "scale", "noise scale", "noisy:0.1", "> 0 and finite",
              lambda x: 0 < x < math.inf),
    "flicker": ("flicker", "probability", "blanking probability", "flicker:0.9", "in (0, 1)",
                lambda x: 0 < x < 1),
    "flip": ("flip", "probability", "flip probability", "flip:0.5", "in (0, 1]", lambda x: 0 < x <= 1),
}


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


def _number(spec: str, head: str, arg: str) -> float:
    """The number of a ``head:arg`` part, checked against the part's rule."""
    _, short, name, example, rule, valid = _NUMERIC_PARTS[head]
    if not arg.strip():
        raise ValueError(f"observation filter {spec!r}: '{head}' needs a {short}, e.g. {example}")
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"observation filter {spec!r}: {name} {arg.strip()!r} is not a number") from None
    if not valid(value):
        raise ValueError(f"observation filter {spec!r}: {name} must be {rule}, got {arg.strip()}")
    return value


@dataclass(frozen=True)
class ObservationFilter:
    """A task variant: which observation features an agent sees, how much Gaussian noise is added to them,
    how often a step's observation is blanked (``flicker``), and how likely each actuator's sign is flipped
    for an episode (``flip``)."""

    positions: bool = False
    noise_scale: float = 0.0
    flicker: float = 0.0  # probability that a step's observation is blanked
    flip: float = 0.0  # probability that an actuator's sign is flipped for an episode

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_scale) and self.noise_scale >= 0):
            raise ValueError(f"noise scale must be a finite number >= 0, got {self.noise_scale}")
        if not 0 <= self.flicker < 1:
            raise ValueError(f"blanking probability must be in [0, 1), got {self.flicker}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip probability must be in [0, 1], got {self.flip}")

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
        values: dict[str, float | bool] = {}
        seen = set()
        for tok in tokens:
            head, _, arg = tok.partition(":")
            head = head.strip()
            if head in seen:
                raise ValueError(f"observation filter {spec!r} names {head!r} twice")
            seen.add(head)
            if head == "full" and not arg:
                continue
            if head == "positions" and not arg:
                values["positions"] = True
            elif head in _NUMERIC_PARTS:
                values[_NUMERIC_PARTS[head][0]] = _number(spec, head, arg)
            else:
                raise ValueError(f"unknown observation filter part {tok!r} in {spec!r}; use {_FORMS}")
        if "full" in seen and "positions" in seen:
            raise ValueError(f"observation filter {spec!r} asks for both 'full' and 'positions'")
        return cls(**values)

    def __str__(self) -> str:
        parts = ["positions"] if self.positions else []
        for head, (name, *_) in _NUMERIC_PARTS.items():  # the canonical order: noise, flicker, flip
            if getattr(self, name) > 0:
                parts.append(f"{head}:{getattr(self, name)!r}")
        return "+".join(parts) or "full"

    @property
    def is_identity(self) -> bool:
        """True for "full": observations and actions pass unchanged."""
        return self == ObservationFilter()

    def keep(self, obs_dim: int, env: str | None = None) -> int:
        """Number of leading features kept from a ``obs_dim``-feature observation."""
        return n_positions(obs_dim, env) if self.positions else obs_dim

    def obs_dim(self, env_obs_dim: int, env: str | None = None) -> int:
        """Observation width after filtering (the kept features, plus the seen flag under flicker)."""
        return self.keep(env_obs_dim, env) + (self.flicker > 0)

    def transform(self, obs: np.ndarray, keep: int, rng: np.random.Generator | None) -> np.ndarray:
        """Select and add noise to an array whose last axis is the feature axis (noise drawn from ``rng``);
        flicker and flip draw per episode and are applied by ``apply_dataset`` and ``wrap_env``."""
        out = obs[..., :keep]
        if self.noise_scale > 0:
            if rng is None:
                raise ValueError("a noisy observation filter needs a random generator")
            out = out + rng.normal(0.0, self.noise_scale, size=out.shape).astype(out.dtype, copy=False)
        return out

    def apply_dataset(self, ds, seed: int = 0):
        """A new TrajectoryDataset transformed by this variant, seeded by ``seed``: the noise is one stream
        over the episodes in order; the flicker mask and flip signs of episode i come from
        ``episode_rng(seed, salt, i)`` (envs.episode_draws); a flipped episode's actions are the policy's,
        a = s * a_logged, so that the environment, given s * a, gets the logged action again."""
        if self.is_identity:
            return ds
        if ds.observe != "full":
            raise ValueError(f"dataset {ds.name} is already filtered with {ds.observe!r}; load "
                             "it with observe=")
        keep = self.keep(ds.obs_dim, ds.env_name)
        rng = np.random.default_rng([seed, _NOISE_SALT])
        episodes = [self._episode(ep, i, keep, rng, seed) for i, ep in enumerate(ds.episodes)]
        return ds.replace(episodes=episodes, observe=str(self))

    def _episode(self, ep, index: int, keep: int, rng: np.random.Generator, seed: int):
        """Episode ``index`` of a dataset, transformed (``rng``: the dataset's noise stream)."""
        obs = self.transform(ep.observations, keep, rng)
        if self.flicker > 0:
            obs = flicker_episode(obs, self.flicker, seed, index)
        actions = flip_episode(ep.actions, self.flip, seed, index) if self.flip > 0 else ep.actions
        return dataclasses.replace(ep, observations=np.ascontiguousarray(obs, dtype=np.float32),
                                   actions=np.ascontiguousarray(actions, dtype=np.float32))

    def wrap_env(self, env, seed: int | None = None, env_name: str | None = None):
        """Wrap a gymnasium Env (or, for positions and noise alone, a VectorEnv) in this variant.

        Noise is re-seeded from every ``reset(seed=...)``; ``seed`` seeds it until then. Flicker and flip
        draw per episode (envs.episode_draws): a VectorEnv is refused, wrap each of its environments
        (``make_vector_env`` does).
        """
        if self.is_identity:
            return env
        name = env_name or _env_name_of(env)
        if isinstance(env, gym.vector.VectorEnv):
            if self.flicker > 0 or self.flip > 0:
                raise ValueError(f"{self} draws per episode: wrap each environment of the vector env "
                                 "(make_vector_env(observe=...) does)")
            return _VectorObservationFilter(env, self, seed, name)
        if self.flip > 0:
            env = FlipWrapper(env, self.flip, seed)
        if self.positions or self.noise_scale > 0:
            env = _ObservationFilterWrapper(env, self, seed, name)
        if self.flicker > 0:
            env = FlickerWrapper(env, self.flicker, seed)
        return env


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
