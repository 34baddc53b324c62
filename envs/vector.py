"""Seeded vectorized evaluation environments with the observation filter applied."""

from __future__ import annotations

import warnings

import gymnasium as gym

from envs.filters import ObservationFilter
from envs.registry import ENV_SPECS, env_name_from_gym_id, get_env_spec


def resolve_gym_id(env: str) -> str:
    """A gymnasium id from an env name ("hopper" -> "Hopper-v4") or an id passed through."""
    if env.strip().lower() in ENV_SPECS:
        return get_env_spec(env).gym_id_d4rl
    return env


# MuJoCo >= 4 warns on every load of gymnasium's v4 XML files ("compiler attribute 'settotalmass'
# is deprecated"): harmless for these envs, and one line per environment drowns the output.
_SILENCED_MUJOCO_WARNINGS = ("'settotalmass' is deprecated",)


def _quiet_mujoco_warnings() -> None:
    try:
        import mujoco
    except ImportError:
        return
    previous = mujoco.get_mju_user_warning()
    if getattr(previous, "_dt_attn_filter", False):
        return

    def forward(message: str) -> None:
        if not any(s in message for s in _SILENCED_MUJOCO_WARNINGS):
            if previous is not None:
                previous(message)
            else:
                warnings.warn(f"MuJoCo: {message}", stacklevel=2)

    forward._dt_attn_filter = True  # type: ignore[attr-defined]
    mujoco.set_mju_user_warning(forward)


def make_env(env_id: str, seed: int | None = None, observe: str | ObservationFilter = "full",
             **kwargs) -> gym.Env:
    """One gymnasium env with the observation filter (noise seeded by ``seed``)."""
    gym_id = resolve_gym_id(env_id)
    _quiet_mujoco_warnings()
    with warnings.catch_warnings():
        # gymnasium flags v4 MuJoCo envs as out of date; v4 is deliberate (closest to D4RL's v3 data)
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        try:
            env = gym.make(gym_id, **kwargs)
        except gym.error.Error as exc:  # NameNotFound, VersionNotFound, ...: a wrong id, said in one line
            raise ValueError(f"gymnasium cannot make {gym_id!r}: {exc}; use an id such as "
                             "Hopper-v4") from None
    return ObservationFilter.parse(observe).wrap_env(env, seed=seed, env_name=env_name_from_gym_id(gym_id))


def make_vector_env(
    env_id: str, num_envs: int, seed: int, observe: str | ObservationFilter = "full", **kwargs
) -> gym.vector.VectorEnv:
    """A SyncVectorEnv of ``num_envs`` copies, sub-env i seeded ``seed + i`` (already reset once).

    The envs are reset with ``seed`` here, so later unseeded resets are deterministic too; a
    caller may also reset(seed=seed) again to start over from the same states.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    filt = ObservationFilter.parse(observe)
    fns = [lambda i=i: make_env(env_id, seed=seed + i, observe=filt, **kwargs) for i in range(num_envs)]
    venv = gym.vector.SyncVectorEnv(fns)
    venv.reset(seed=seed)
    venv.action_space.seed(seed)
    return venv
