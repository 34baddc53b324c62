"""Episode splitting, statistics, summaries and validation errors of the dataset loaders."""

from __future__ import annotations

import numpy as np
import pytest
from data_utils import make_arrays, split_arrays, write_hdf5, write_pkl

from envs import DatasetError, DatasetNotFoundError, load_dataset, split_episodes


def test_split_terminal_timeout_and_trailing_unflagged_episode():
    arrays = make_arrays(lengths=(5, 3, 4), ends=("terminal", "timeout", "none"))
    eps = split_episodes(arrays, "mem")
    assert [len(e) for e in eps] == [5, 3, 4]
    assert eps[0].terminals[-1] and not eps[0].timeouts.any()
    assert eps[1].timeouts[-1] and not eps[1].terminals.any()
    assert not eps[2].terminals.any() and not eps[2].timeouts.any()  # trailing episode is kept
    np.testing.assert_array_equal(eps[1].observations, arrays["observations"][5:8])
    assert [e.total_return for e in eps] == [5.0, 6.0, 12.0]


def test_split_without_trailing_episode_and_without_timeouts_key():
    arrays = make_arrays(lengths=(2, 3), ends=("timeout", "terminal"))
    assert [len(e) for e in split_episodes(arrays, "mem")] == [2, 3]
    del arrays["timeouts"]  # older files: only terminals delimit episodes
    assert [len(e) for e in split_episodes(arrays, "mem")] == [5]


def test_hdf5_stats_and_dtypes(tmp_path):
    arrays = make_arrays(lengths=(5, 3, 4), ends=("terminal", "timeout", "none"))
    path = write_hdf5(tmp_path / "hopper_small.hdf5", arrays, attrs={"env_id": "Hopper-v4"})
    ds = load_dataset(path)
    ep = ds.episodes[0]
    assert ep.observations.dtype == np.float32 and ep.actions.dtype == np.float32
    assert ep.rewards.dtype == np.float32 and ep.terminals.dtype == bool and ep.timeouts.dtype == bool
    s = ds.stats()
    assert (s.episodes, s.transitions, s.terminals, s.timeouts) == (3, 12, 1, 1)
    rets = np.array([5.0, 6.0, 12.0])
    assert s.return_mean == pytest.approx(rets.mean())
    assert s.return_std == pytest.approx(rets.std(ddof=1))  # the sample std, as every reported std
    assert (s.return_min, s.return_max) == (5.0, 12.0)
    np.testing.assert_allclose(s.state_mean, arrays["observations"].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.state_std, arrays["observations"].std(0) + 1e-6, rtol=1e-5)
    assert ds.state_mean.shape == (11,)
    assert (ds.obs_dim, ds.act_dim, ds.env_name, ds.env_id) == (11, 3, "hopper", "Hopper-v4")
    text = ds.summary()
    assert "12 transitions, 3 episodes" in text and "mean 7.7 ± 3.8" in text and "max 12.0" in text


def test_pkl_loads_per_episode_dicts(tmp_path):
    lengths = (4, 6)
    arrays = make_arrays(env="halfcheetah", lengths=lengths, ends=("timeout", "timeout"))
    eps = split_arrays(arrays, lengths)
    for e in eps:
        del e["timeouts"]  # DT's .pkl files carry terminals only
    ds = load_dataset(write_pkl(tmp_path / "halfcheetah-medium-v2.pkl", eps))
    assert [len(e) for e in ds.episodes] == [4, 6]
    assert ds.env_name == "halfcheetah" and ds.env_id == "HalfCheetah-v4"
    assert ds.stats().return_max == pytest.approx(12.0)


# --- validation errors: each names the file, the key and the problem ---------------------------

def _write(tmp_path, arrays, name="hopper_test.hdf5"):
    return write_hdf5(tmp_path / name, arrays)


def test_missing_key(tmp_path):
    arrays = make_arrays()
    del arrays["actions"]
    path = _write(tmp_path, arrays)
    with pytest.raises(DatasetError, match=r"hopper_test\.hdf5.*missing key\(s\) \['actions'\]"):
        load_dataset(path)


def test_mismatched_lengths(tmp_path):
    arrays = make_arrays()
    arrays["rewards"] = arrays["rewards"][:-2]
    with pytest.raises(DatasetError, match=r"hopper_test\.hdf5.*mismatched lengths.*'rewards' has 10"):
        load_dataset(_write(tmp_path, arrays))


@pytest.mark.parametrize("key,value,kind", [("observations", np.nan, "NaN"), ("rewards", np.inf, "Inf"),
                                            ("actions", -np.inf, "Inf")])
def test_non_finite_values(tmp_path, key, value, kind):
    arrays = make_arrays()
    arrays[key][3] = value
    with pytest.raises(DatasetError, match=rf"hopper_test\.hdf5.*'{key}' contains .*{kind} at index \(3"):
        load_dataset(_write(tmp_path, arrays))


def test_empty_dataset(tmp_path):
    arrays = {k: v[:0] for k, v in make_arrays().items()}
    with pytest.raises(DatasetError, match=r"hopper_test\.hdf5.*empty"):
        load_dataset(_write(tmp_path, arrays))
    with pytest.raises(DatasetError, match=r"empty"):
        load_dataset(write_pkl(tmp_path / "hopper.pkl", []))


def test_dimension_mismatch_with_environment(tmp_path):
    arrays = make_arrays(env="halfcheetah")  # 17-dim observations in a file named for hopper
    with pytest.raises(DatasetError, match=r"'observations' has 17 features but hopper \(Hopper-v4\).* 11"):
        load_dataset(_write(tmp_path, arrays))
    arrays = make_arrays(env="hopper")
    arrays["actions"] = np.zeros((len(arrays["rewards"]), 4), np.float32)
    with pytest.raises(DatasetError, match=r"'actions' has 4 features but hopper"):
        load_dataset(_write(tmp_path, arrays))


def test_explicit_env_overrides_and_unknown_env_is_an_error(tmp_path):
    path = write_hdf5(tmp_path / "data.hdf5", make_arrays(env="halfcheetah"))
    with pytest.raises(DatasetError, match="cannot tell which environment"):
        load_dataset(path)
    ds = load_dataset(path, env="halfcheetah")
    assert ds.env_id == "HalfCheetah-v4"
    assert load_dataset(path, env="HalfCheetah-v5").env_id == "HalfCheetah-v5"
    with pytest.raises(ValueError, match="unknown environment 'ant'"):
        load_dataset(path, env="ant")


def test_corrupt_and_truncated_files_give_clear_errors(tmp_path):
    good = write_hdf5(tmp_path / "hopper_good.hdf5",
                      make_arrays(lengths=(400, 300), ends=("terminal", "none")))
    data = good.read_bytes()
    truncated = tmp_path / "hopper_truncated.hdf5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"hopper_truncated\.hdf5.*(corrupt or truncated)"):
        load_dataset(truncated)
    garbage = tmp_path / "hopper_garbage.hdf5"
    garbage.write_bytes(b"this is not an hdf5 file" * 10)
    with pytest.raises(DatasetError, match=r"hopper_garbage\.hdf5: not an HDF5 file"):
        load_dataset(garbage)
    bad_pkl = tmp_path / "hopper_bad.pkl"
    bad_pkl.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match=r"hopper_bad\.pkl: cannot unpickle"):
        load_dataset(bad_pkl)


def test_pkl_episode_errors_name_the_episode(tmp_path):
    eps = split_arrays(make_arrays(), (5, 3, 4))
    del eps[1]["rewards"]
    with pytest.raises(DatasetError, match=r"hopper\.pkl episode 1: missing key\(s\) \['rewards'\]"):
        load_dataset(write_pkl(tmp_path / "hopper.pkl", eps))
    with pytest.raises(DatasetError, match="expected a list of per-episode dicts"):
        load_dataset(write_pkl(tmp_path / "hopper2.pkl", {"a": 1}))


def test_missing_file_and_unknown_spec():
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        load_dataset("/nonexistent/hopper.hdf5")
    with pytest.raises(DatasetNotFoundError, match="unrecognised dataset spec 'hopper-meduim'"):
        load_dataset("hopper-meduim")


def test_a_dataset_of_one_episode_has_no_return_std(tmp_path):
    """One episode: no sample std (NaN), shown as a dash in the summary, never 0."""
    path = write_hdf5(tmp_path / "hopper_one.hdf5", make_arrays(lengths=(4,), ends=("terminal",)),
                      attrs={"env_id": "Hopper-v4"})
    ds = load_dataset(path)
    assert ds.stats().episodes == 1 and np.isnan(ds.stats().return_std)
    assert " ± –, min" in ds.summary()
