"""Task variants that need memory (flicker, actuator flips) and noise scales: the dataset transformation is
exactly what the wrapped environment shows a policy, blanked and flipped values as specified, bad specs."""

from __future__ import annotations

import numpy as np
import pytest
from data_utils import make_arrays, write_hdf5

from agents.config import EvalConfig, TrainConfig, run_name
from envs import Episode, ObservationFilter, TrajectoryDataset, load_dataset, make_env, make_vector_env
from experiments.cli import main as cli_main

SEED = 3


def record_plain(seed: int, episodes: int = 2, limit: int = 25) -> list[Episode]:
    """Episodes played in the plain Hopper-v4 with seeded random actions: reset(seed=seed), then unseeded
    resets; each cut after ``limit`` steps (as a timeout) when it has not ended."""
    env = make_env("Hopper-v4")
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(episodes, limit, 3)).astype(np.float32)
    out = []
    try:
        for e in range(episodes):
            obs, _ = env.reset(seed=seed if e == 0 else None)
            rows = {"obs": [], "rew": [], "term": []}
            for t in range(limit):
                rows["obs"].append(obs)
                obs, reward, terminated, truncated, _ = env.step(actions[e, t])
                rows["rew"].append(reward)
                rows["term"].append(terminated)
                if terminated or truncated:
                    break
            n = len(rows["rew"])
            timeouts = np.zeros(n, dtype=bool)
            timeouts[-1] = not rows["term"][-1]
            out.append(Episode(np.asarray(rows["obs"], np.float32), actions[e, :n], np.asarray(rows["rew"],
                               np.float32), np.asarray(rows["term"]), timeouts))
    finally:
        env.close()
    return out


def as_dataset(episodes: list[Episode]) -> TrajectoryDataset:
    return TrajectoryDataset(episodes=episodes, name="recorded", label="recorded (test)", env_name="hopper",
                             env_id="Hopper-v4")


def play_wrapped(spec: str, dataset: TrajectoryDataset, seed: int):
    """What the wrapped environment shows a policy that gives the dataset's (relabelled) actions: the
    observations and rewards of each episode, reset(seed=seed) first, then unseeded resets."""
    env = make_env("Hopper-v4", seed=seed, observe=spec)
    shown = []
    try:
        for e, ep in enumerate(dataset.episodes):
            obs, _ = env.reset(seed=seed if e == 0 else None)
            seen_obs, rewards = [obs], []
            for t in range(len(ep)):
                obs, reward, *_ = env.step(ep.actions[t])
                rewards.append(reward)
                seen_obs.append(obs)
            shown.append((np.asarray(seen_obs[:-1], np.float32), np.asarray(rewards, np.float32)))
    finally:
        env.close()
    return shown


@pytest.mark.parametrize("spec", ["flicker:0.5", "flip:0.5", "flicker:0.7+flip:0.5", "positions+flicker:0.5"])
def test_dataset_transformation_is_what_the_wrapped_env_shows(spec):
    """Two episodes (the second after an unseeded reset): observations, flags and rewards equal bit for bit,
    so the environment was given exactly the logged actions."""
    plain = record_plain(SEED, episodes=2)
    assert all(len(ep) > 3 for ep in plain)
    ds = ObservationFilter.parse(spec).apply_dataset(as_dataset(plain), seed=SEED)
    assert ds.observe == spec
    for ep, (obs, rewards) in zip(ds.episodes, play_wrapped(spec, ds, SEED), strict=True):
        np.testing.assert_array_equal(obs, ep.observations)
        np.testing.assert_array_equal(rewards, ep.rewards)


def test_noise_composes_with_flicker_and_flip_on_the_first_episode():
    """The noise is one stream over a dataset's episodes, re-seeded only by a seeded reset, so episode 0 is
    the one that matches; the environment adds it to float64 observations, the dataset to float32 ones, so
    noisy values agree to a float32 rounding, flags, blanks and rewards exactly."""
    spec = "positions+noisy:0.1+flicker:0.5+flip:0.5"
    ds = ObservationFilter.parse(spec).apply_dataset(as_dataset(record_plain(SEED, episodes=1)), seed=SEED)
    ((obs, rewards),) = play_wrapped(spec, ds, SEED)
    ep = ds.episodes[0]
    np.testing.assert_array_equal(obs[:, -1], ep.observations[:, -1])
    np.testing.assert_allclose(obs, ep.observations, rtol=0, atol=3e-7)  # |x| < 2: 2 float32 steps
    np.testing.assert_array_equal(obs == 0, ep.observations == 0)
    np.testing.assert_array_equal(rewards, ep.rewards)


def test_flicker_blanks_exactly_the_drawn_steps_and_flags_them(tmp_path):
    arrays = make_arrays(lengths=(6, 4), ends=("terminal", "timeout"))
    path = write_hdf5(tmp_path / "hopper_small.hdf5", arrays)
    full = load_dataset(path)
    ds = load_dataset(path, observe="flicker:0.5", seed=SEED)
    assert ds.obs_dim == 12 and ds.observe == "flicker:0.5"
    # episode i's mask is episode_rng(3, FLICKER_SALT, i).random(T) >= 0.5, pinned here
    for ep, base, seen in zip(ds.episodes, full.episodes, ([0, 0, 1, 1, 0, 0], [0, 1, 0, 1]), strict=True):
        seen = np.array(seen, dtype=bool)
        np.testing.assert_array_equal(ep.observations[:, -1], seen.astype(np.float32))
        np.testing.assert_array_equal(ep.observations[seen, :11], base.observations[seen])
        assert (ep.observations[~seen] == 0).all()
        np.testing.assert_array_equal(ep.actions, base.actions)
    # adding flip leaves the flicker draws as they were
    both = load_dataset(path, observe="flicker:0.5+flip:0.5", seed=SEED)
    np.testing.assert_array_equal(both.episodes[0].observations, ds.episodes[0].observations)
    other = load_dataset(path, observe="flicker:0.5", seed=SEED + 1)
    assert not all(np.array_equal(a.observations, b.observations)
                   for a, b in zip(other.episodes, ds.episodes, strict=True))


def test_flip_relabels_actions_by_the_drawn_signs(tmp_path):
    path = write_hdf5(tmp_path / "hopper_small.hdf5", make_arrays(lengths=(6, 4), ends=("terminal", "none")))
    full = load_dataset(path)
    ds = load_dataset(path, observe="flip:0.5", seed=SEED)
    assert ds.obs_dim == 11 and ds.act_dim == 3
    for ep, base, signs in zip(ds.episodes, full.episodes, ([-1, 1, -1], [-1, -1, 1]), strict=True):
        np.testing.assert_array_equal(ep.actions, base.actions * np.array(signs, np.float32))
        np.testing.assert_array_equal(ep.observations, base.observations)
        np.testing.assert_array_equal(ep.rewards, base.rewards)
        assert np.abs(ep.actions).max() <= 1  # a flip keeps the bounds
    always = load_dataset(path, observe="flip:1", seed=SEED)
    np.testing.assert_array_equal(always.episodes[1].actions, -full.episodes[1].actions)


def test_flip_wrapper_gives_the_env_the_signed_action():
    env = make_env("Hopper-v4", observe="flip:0.5")
    try:
        env.reset(seed=SEED)
        np.testing.assert_array_equal(env.signs, [-1, 1, -1])  # as the dataset's episode 0 under seed 3
        np.testing.assert_array_equal(env.action(np.array([0.5, 0.25, -1.0], np.float32)), [-0.5, 0.25, 1.0])
        env.reset()
        np.testing.assert_array_equal(env.signs, [-1, -1, 1])  # episode 1
        env.reset(seed=SEED)
        np.testing.assert_array_equal(env.signs, [-1, 1, -1])  # a seeded reset starts over
    finally:
        env.close()


def test_vector_env_sub_env_i_draws_as_a_single_env_seeded_seed_plus_i():
    venv = make_vector_env("Hopper-v4", num_envs=2, seed=SEED, observe="positions+flicker:0.5")
    singles = [make_env("Hopper-v4", observe="positions+flicker:0.5") for _ in range(2)]
    try:
        assert venv.single_observation_space.shape == (6,)
        obs, _ = venv.reset(seed=SEED)
        first = [env.reset(seed=SEED + i)[0] for i, env in enumerate(singles)]
        np.testing.assert_array_equal(obs, np.stack(first))
        action = np.zeros((2, 3), np.float32)
        for _ in range(5):
            obs, *_ = venv.step(action)
            np.testing.assert_array_equal(obs, np.stack([env.step(action[0])[0] for env in singles]))
            assert set(obs[:, -1].tolist()) <= {0.0, 1.0}
            assert (obs[obs[:, -1] == 0] == 0).all()
    finally:
        venv.close()
        for env in singles:
            env.close()


def test_per_episode_variants_refuse_an_existing_vector_env():
    venv = make_vector_env("Hopper-v4", num_envs=1, seed=0)
    try:
        with pytest.raises(ValueError, match="wrap each environment"):
            ObservationFilter.parse("flicker:0.9").wrap_env(venv)
    finally:
        venv.close()


@pytest.mark.parametrize("spec,canonical,width", [
    ("flicker:0.9", "flicker:0.9", 12), ("FLIP:1", "flip:1.0", 11),
    ("flip:0.5+positions", "positions+flip:0.5", 5),
    ("flip:0.25 + flicker:0.5 + noisy:0.3 + positions", "positions+noisy:0.3+flicker:0.5+flip:0.25", 6),
    ("noisy:0.03", "noisy:0.03", 11), ("noisy:1", "noisy:1.0", 11),
])
def test_parse_round_trip_width_and_run_name(spec, canonical, width):
    f = ObservationFilter.parse(spec)
    assert str(f) == canonical and ObservationFilter.parse(canonical) == f
    assert f.obs_dim(11, "hopper") == width
    name = run_name("hopper-medium-replay-standin", spec, "softmax", 20, 0)  # one folder per variant
    assert name == ("hopper-medium-replay-standin-" + canonical.replace(":", "").replace("+", "-")
                    + "-softmax-K20-s0")
    assert "/" not in name and ":" not in name and "+" not in name


@pytest.mark.parametrize("spec,message", [
    ("flicker", "'flicker' needs a probability, e.g. flicker:0.9"),
    ("flicker:often", "blanking probability 'often' is not a number"),
    ("flicker:1", "blanking probability must be in \\(0, 1\\), got 1"),
    ("flicker:0", "blanking probability must be in \\(0, 1\\), got 0"),
    ("flip:", "'flip' needs a probability, e.g. flip:0.5"),
    ("flip:1.5", "flip probability must be in \\(0, 1\\], got 1.5"),
    ("flip:nan", "flip probability must be in \\(0, 1\\], got nan"),
    ("flicker:0.5+flicker:0.2", "names 'flicker' twice"),
    ("flick:0.5", "unknown observation filter part 'flick:0.5'.*\"flicker:P\""),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        ObservationFilter.parse(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("argv", [
    ["train", "--observe", "flicker:1.5", "--steps", "1"],
    ["eval", "--checkpoint", "nowhere", "--observe", "flip:2"],
    ["data", "default", "--observe", "flicker:1.5"],
])
def test_bad_specs_through_the_cli_exit_2_with_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "probability must be" in err
    assert not (tmp_path / "runs").exists()  # refused before a run folder is made


def test_configs_refuse_bad_specs_and_keep_the_default():
    assert TrainConfig().observe == "full" and EvalConfig().observe is None
    with pytest.raises(ValueError, match="flip probability"):
        TrainConfig(observe="flip:0")
    with pytest.raises(ValueError, match="blanking probability"):
        EvalConfig(checkpoint="x", observe="flicker:-1")
