"""Observation filters: parsing, index choice, dataset and environment application, seeding."""

from __future__ import annotations

import numpy as np
import pytest
from data_utils import make_arrays, write_hdf5

from envs import ObservationFilter, load_dataset, make_env, make_vector_env


@pytest.mark.parametrize("spec,canonical", [
    ("full", "full"), ("", None), ("positions", "positions"), ("noisy:0.1", "noisy:0.1"),
    ("positions+noisy:0.1", "positions+noisy:0.1"), ("noisy:0.25 + positions", "positions+noisy:0.25"),
    ("full+noisy:1e-3", "noisy:0.001"),
])
def test_parse_and_round_trip(spec, canonical):
    if canonical is None:
        with pytest.raises(ValueError, match="empty part"):
            ObservationFilter.parse(spec)
        return
    f = ObservationFilter.parse(spec)
    assert str(f) == canonical
    assert ObservationFilter.parse(str(f)) == f
    assert ObservationFilter.parse(None) == ObservationFilter()


@pytest.mark.parametrize("spec,message", [
    ("velocity", "unknown observation filter part 'velocity'"),
    ("noisy", "'noisy' needs a scale"),
    ("noisy:abc", "noise scale 'abc' is not a number"),
    ("noisy:-0.1", "noise scale must be > 0"),
    ("noisy:nan", "noise scale must be > 0"),
    ("positions+positions", "names 'positions' twice"),
    ("full+positions", "both 'full' and 'positions'"),
    ("positions+", "empty part"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        ObservationFilter.parse(spec)


def test_position_indices_for_both_envs():
    f = ObservationFilter.parse("positions")
    assert f.obs_dim(17, "halfcheetah") == 8 and f.obs_dim(11, "hopper") == 5
    assert f.obs_dim(17, "walker2d") == 8
    assert f.obs_dim(11) == 5  # unambiguous from the width alone
    assert ObservationFilter.parse("noisy:0.1").obs_dim(17) == 17
    x = np.arange(11 * 2, dtype=np.float32).reshape(2, 11)
    np.testing.assert_array_equal(f.transform(x, f.keep(11, "hopper"), None), x[:, :5])


@pytest.mark.parametrize("gym_id,name", [("Hopper-v4", "hopper"), ("HalfCheetah-v4", "halfcheetah")])
def test_positions_are_qpos_without_rootx(gym_id, name):
    """The kept entries are exactly qpos[1:] of the simulator (velocities dropped)."""
    full = make_env(gym_id)
    pos = make_env(gym_id, observe="positions")
    try:
        obs_full, _ = full.reset(seed=7)
        obs_pos, _ = pos.reset(seed=7)
        qpos = full.unwrapped.data.qpos
        np.testing.assert_allclose(obs_pos, qpos[1:])
        np.testing.assert_allclose(obs_pos, obs_full[: len(qpos) - 1])
        assert pos.observation_space.shape == (len(qpos) - 1,)
    finally:
        full.close()
        pos.close()


def _dataset(tmp_path, env="hopper", **kw):
    path = write_hdf5(tmp_path / f"{env}_small.hdf5",
                      make_arrays(env=env, lengths=(6, 4), ends=("terminal", "none")))
    return load_dataset(path, **kw)


@pytest.mark.parametrize("env,kept", [("hopper", 5), ("halfcheetah", 8)])
def test_dataset_filter_shapes_and_stats(tmp_path, env, kept):
    full = _dataset(tmp_path, env)
    ds = _dataset(tmp_path, env, observe="positions")
    assert ds.observe == "positions" and ds.obs_dim == kept
    assert all(ep.observations.shape == (len(ep), kept) for ep in ds.episodes)
    np.testing.assert_array_equal(ds.episodes[1].observations, full.episodes[1].observations[:, :kept])
    assert ds.state_mean.shape == ds.state_std.shape == (kept,)
    np.testing.assert_allclose(ds.state_mean, full.state_mean[:kept], rtol=1e-6)
    # apply_dataset on an already-loaded dataset gives the same thing
    again = ObservationFilter.parse("positions").apply_dataset(full)
    np.testing.assert_array_equal(again.episodes[0].observations, ds.episodes[0].observations)
    assert full.obs_dim == {"hopper": 11, "halfcheetah": 17}[env]  # the original is untouched


def test_noisy_dataset_is_seeded_and_reproducible(tmp_path):
    full = _dataset(tmp_path)
    a = _dataset(tmp_path, observe="positions+noisy:0.5", seed=1)
    b = _dataset(tmp_path, observe="positions+noisy:0.5", seed=1)
    c = _dataset(tmp_path, observe="positions+noisy:0.5", seed=2)
    np.testing.assert_array_equal(a.episodes[0].observations, b.episodes[0].observations)
    assert not np.allclose(a.episodes[0].observations, c.episodes[0].observations)
    noise = np.concatenate([x.observations - f.observations[:, :5]
                            for x, f in zip(a.episodes, full.episodes)])
    assert abs(noise.std() - 0.5) < 0.15 and abs(noise.mean()) < 0.2
    assert a.episodes[0].observations.dtype == np.float32
    with pytest.raises(ValueError, match="already filtered"):
        ObservationFilter.parse("noisy:0.1").apply_dataset(a)


@pytest.mark.parametrize("gym_id,kept", [("Hopper-v4", 5), ("HalfCheetah-v4", 8)])
def test_vector_rollout_first_observation_has_filtered_dim(gym_id, kept):
    venv = make_vector_env(gym_id, num_envs=2, seed=0, observe="positions")
    try:
        assert venv.single_observation_space.shape == (kept,)
        assert venv.observation_space.shape == (2, kept)
        obs, _ = venv.reset(seed=0)
        assert obs.shape == (2, kept)
        obs, *_ = venv.step(venv.action_space.sample())
        assert obs.shape == (2, kept)
    finally:
        venv.close()


def test_noisy_env_is_seeded_and_reproducible():
    def first_obs(observe, seed):
        venv = make_vector_env("Hopper-v4", num_envs=2, seed=seed, observe=observe)
        try:
            obs, _ = venv.reset(seed=seed)
            step_obs, *_ = venv.step(np.zeros((2, 3), dtype=np.float32))
            return obs, step_obs
        finally:
            venv.close()

    clean, _clean_step = first_obs("full", 5)
    a, a_step = first_obs("noisy:0.1", 5)
    b, b_step = first_obs("noisy:0.1", 5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a_step, b_step)
    assert a.shape == clean.shape and not np.allclose(a, clean)
    assert 0.02 < np.std(a - clean) < 0.3
    c, _ = first_obs("noisy:0.1", 6)
    assert not np.allclose(c, a)


def test_wrap_existing_vector_env():
    venv = make_vector_env("HalfCheetah-v4", num_envs=2, seed=0)
    wrapped = ObservationFilter.parse("positions+noisy:0.01").wrap_env(venv, seed=0)
    try:
        assert wrapped.single_observation_space.shape == (8,)
        obs, _ = wrapped.reset(seed=0)
        assert obs.shape == (2, 8)
    finally:
        wrapped.close()
    assert ObservationFilter.parse("full").wrap_env(venv) is venv
