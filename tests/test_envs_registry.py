"""Environment registry, normalized scores and seeded vector environments."""

from __future__ import annotations

import numpy as np
import pytest

from envs import get_env_spec, infer_env_name, make_vector_env, normalized_score


def test_env_specs():
    hc, hop = get_env_spec("halfcheetah"), get_env_spec("Hopper-v4")
    assert (hc.gym_id_d4rl, hc.gym_id_minari, hc.obs_dim, hc.act_dim) == ("HalfCheetah-v4", "HalfCheetah-v5",
                                                                          17, 6)
    assert (hop.gym_id_d4rl, hop.gym_id_minari, hop.obs_dim, hop.act_dim) == ("Hopper-v4", "Hopper-v5", 11, 3)
    assert (hc.ref_min, hc.ref_max) == (-280.178953, 12135.0)
    assert (hop.ref_min, hop.ref_max) == (-20.272305, 3234.3)
    assert hc.default_targets == (6000.0, 12000.0) and hop.default_targets == (1800.0, 3600.0)
    assert hc.max_episode_steps == hop.max_episode_steps == 1000
    assert get_env_spec("HOPPER") is hop
    with pytest.raises(ValueError, match="unknown environment 'ant'.*halfcheetah"):
        get_env_spec("ant")


def test_infer_env_name():
    assert infer_env_name("hopper-medium-replay-v2") == "hopper"
    assert infer_env_name("halfcheetah_medium_expert-v2.hdf5") == "halfcheetah"
    assert infer_env_name("mujoco/walker2d/medium-v0") == "walker2d"
    assert infer_env_name(None, "HalfCheetah-v5") == "halfcheetah"
    assert infer_env_name("data.hdf5") is None


def test_normalized_score_arithmetic():
    scores, source = normalized_score("hopper", [-20.272305, 3234.3, (3234.3 - 20.272305) / 2])
    np.testing.assert_allclose(scores, [0.0, 100.0, 50.0], atol=1e-9)
    assert source == "D4RL reference returns"
    scores, _ = normalized_score("halfcheetah", 6000.0)
    assert float(scores) == pytest.approx(100 * (6000 + 280.178953) / (12135.0 + 280.178953))
    scores, source = normalized_score("hopper", [100.0, 300.0], ref=(100.0, 300.0, "Minari metadata"))
    np.testing.assert_allclose(scores, [0.0, 100.0])
    assert source == "Minari metadata"
    with pytest.raises(ValueError, match="max > min"):
        normalized_score("hopper", 1.0, ref=(5.0, 5.0, "bad"))


@pytest.mark.parametrize("env_id,obs_dim,act_dim", [("HalfCheetah-v4", 17, 6), ("Hopper-v4", 11, 3)])
def test_vector_env_dims_and_seeding(env_id, obs_dim, act_dim):
    venv = make_vector_env(env_id, num_envs=2, seed=3)
    try:
        assert venv.single_observation_space.shape == (obs_dim,)
        assert venv.single_action_space.shape == (act_dim,)
        obs, _ = venv.reset(seed=3)
        assert obs.shape == (2, obs_dim)
        assert not np.allclose(obs[0], obs[1])  # sub-envs get different seeds (3 and 4)
        obs2, *_ = venv.step(np.zeros((2, act_dim), dtype=np.float32))
        assert obs2.shape == (2, obs_dim)
    finally:
        venv.close()
    again = make_vector_env(env_id, num_envs=2, seed=3)
    try:
        np.testing.assert_array_equal(again.reset(seed=3)[0], obs)
    finally:
        again.close()
    single = make_vector_env(env_id, num_envs=1, seed=4)  # sub-env 1 above was seeded 3 + 1
    try:
        np.testing.assert_array_equal(single.reset(seed=4)[0][0], obs[1])
    finally:
        single.close()


def test_vector_env_accepts_env_name():
    venv = make_vector_env("hopper", num_envs=1, seed=0)
    try:
        assert venv.envs[0].spec.id == "Hopper-v4"
    finally:
        venv.close()
