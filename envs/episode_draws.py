"""Task variants drawn afresh each episode, in a dataset and in an environment alike: flicker, actuator flips.

Every per-episode draw comes from its own generator, ``episode_rng(seed, salt, index)``: in a dataset
transformed with ``seed``, episode ``index`` is its position in the dataset; in an environment, the episode
started by ``reset(seed=seed)`` is index 0 and each later reset without a seed adds one. So episode ``i`` of a
dataset transformed with seed ``s`` is blanked and flipped exactly as the ``i``-th episode an environment
plays after ``reset(seed=s)``, whatever the lengths of the episodes before it. Each variant has its own salt,
so adding one to a spec leaves the other's draws as they were.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

FLICKER_SALT = 0xF11C  # one stream per variant: flicker and flip draw independently
FLIP_SALT = 0xF119


def episode_rng(seed: int, salt: int, index: int) -> np.random.Generator:
    """The generator of episode ``index`` under ``seed`` for the variant named by ``salt``."""
    return np.random.default_rng([int(seed), salt, int(index)])


def flicker_seen(rng: np.random.Generator, steps: int, p: float) -> np.ndarray:
    """(steps,) bool: step t's observation is seen unless u_t < p, u_t ~ U[0, 1) drawn in step order (one
    draw per step, so an environment drawing one at a time gets the same mask)."""
    return rng.random(steps) >= p


def blank_unseen(obs: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Observations (..., D) with unseen steps set to 0 and the flag feature (1 seen, 0 blanked) appended:
    (..., D + 1), in the observations' dtype."""
    seen = np.asarray(seen, dtype=bool)
    blanked = np.where(seen[..., None], obs, np.zeros((), dtype=obs.dtype))
    return np.concatenate([blanked, seen[..., None].astype(obs.dtype)], axis=-1)


def flip_signs(rng: np.random.Generator, act_dim: int, p: float) -> np.ndarray:
    """(act_dim,) float32 of +1 and -1: each actuator's sign is flipped (-1) with probability ``p``."""
    return np.where(rng.random(act_dim) < p, np.float32(-1.0), np.float32(1.0))


def flicker_episode(obs: np.ndarray, p: float, seed: int, index: int) -> np.ndarray:
    """Episode ``index``'s observations (T, D) under ``seed``, blanked with a seen flag: (T, D + 1)."""
    return blank_unseen(obs, flicker_seen(episode_rng(seed, FLICKER_SALT, index), len(obs), p))


def flip_episode(actions: np.ndarray, p: float, seed: int, index: int) -> np.ndarray:
    """Episode ``index``'s logged actions (T, A) under ``seed`` as the policy gave them: s * a, so that the
    environment, which applies s * a_policy, gets the logged action again (s * s = 1, exactly)."""
    return actions * flip_signs(episode_rng(seed, FLIP_SALT, index), actions.shape[1], p)


def check_symmetric_actions(space: gym.spaces.Space) -> None:
    """A sign flip maps an action inside the bounds to one inside them only when low == -high."""
    if not isinstance(space, gym.spaces.Box) or not np.array_equal(space.low, -space.high):
        raise ValueError(f"an actuator flip needs a Box action space with bounds low == -high, got {space}")


class _EpisodeCounter:
    """Which episode an environment is in, for ``episode_rng``: reset(seed=s) starts over at index 0 of seed
    s, an unseeded reset moves to the next index; until a seeded reset, the construction ``seed`` holds (None:
    one drawn from the operating system), its first episode being index 0."""

    def __init__(self, seed: int | None, salt: int) -> None:
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self.salt = salt
        self.index = -1

    def next_rng(self, seed: int | None) -> np.random.Generator:
        if seed is not None:
            self.seed, self.index = int(seed), 0
        else:
            self.index += 1
        return episode_rng(self.seed, self.salt, self.index)


class FlickerWrapper(gym.Wrapper):
    """Each observation blanked (zeros) with probability ``p``, a seen flag appended as the last feature."""

    def __init__(self, env: gym.Env, p: float, seed: int | None) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"flicker needs a 1-D Box observation space, got {space}")
        self.p = p
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(space.shape[0] + 1,),
                                                dtype=space.dtype)
        self._episodes = _EpisodeCounter(seed, FLICKER_SALT)
        self._rng: np.random.Generator | None = None  # drawn at every reset (gymnasium resets before a step)

    def _show(self, obs):
        obs = np.asarray(obs)
        return blank_unseen(obs, flicker_seen(self._rng, 1, self.p)[0])

    def reset(self, *, seed=None, options=None):
        self._rng = self._episodes.next_rng(seed)
        obs, info = self.env.reset(seed=seed, options=options)
        return self._show(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._show(obs), reward, terminated, truncated, info


class FlipWrapper(gym.ActionWrapper):
    """The policy's action times per-episode signs (``flip_signs``) is what the environment is given; the
    signs are drawn at every reset and never shown."""

    def __init__(self, env: gym.Env, p: float, seed: int | None) -> None:
        super().__init__(env)
        check_symmetric_actions(env.action_space)
        self.p = p
        self._episodes = _EpisodeCounter(seed, FLIP_SALT)
        self.signs: np.ndarray | None = None  # drawn at every reset (gymnasium resets before a step)

    def _draw(self, seed: int | None) -> np.ndarray:
        return flip_signs(self._episodes.next_rng(seed), self.action_space.shape[0], self.p)

    def reset(self, *, seed=None, options=None):
        self.signs = self._draw(seed)
        return self.env.reset(seed=seed, options=options)

    def action(self, action):
        action = np.asarray(action)
        return action * self.signs.astype(action.dtype, copy=False)  # multiplying by +-1 is exact
