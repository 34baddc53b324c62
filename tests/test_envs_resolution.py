"""Dataset id resolution: D4RL ids and file names, $D4RL_DATASET_DIR, downloads, stand-ins, Minari."""

from __future__ import annotations

import io
import sys
import urllib.error
from typing import ClassVar

import numpy as np
import pytest
from data_utils import make_arrays, write_hdf5

import envs.download
import envs.minari_source
from envs import DatasetNotFoundError, OptionalDependencyError, load_dataset
from envs.d4rl import d4rl_dir, parse_d4rl_id


@pytest.fixture
def d4rl_home(tmp_path, monkeypatch):
    """An empty $D4RL_DATASET_DIR; the network is replaced by a failing stub."""
    folder = tmp_path / "d4rl"
    folder.mkdir()
    monkeypatch.setenv("D4RL_DATASET_DIR", str(folder))

    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(envs.download, "_urlopen", offline)
    return folder


def test_d4rl_id_to_file_name_and_url():
    did = parse_d4rl_id("hopper-medium-replay-v2")
    assert did.filename == "hopper_medium_replay-v2.hdf5"
    assert did.url == "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium_replay-v2.hdf5"
    assert parse_d4rl_id("halfcheetah-medium-expert-v2").filename == "halfcheetah_medium_expert-v2.hdf5"
    assert parse_d4rl_id("walker2d-random-v1").url.endswith("gym_mujoco_v1/walker2d_random-v1.hdf5")
    assert parse_d4rl_id("mujoco/hopper/medium-v0") is None
    with pytest.raises(ValueError, match="version v0 is not supported"):
        parse_d4rl_id("hopper-medium-v0")


def test_default_d4rl_dir_is_home(monkeypatch, tmp_path):
    monkeypatch.delenv("D4RL_DATASET_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert d4rl_dir() == tmp_path / ".d4rl" / "datasets"


def test_d4rl_id_resolved_from_env_dir(d4rl_home):
    arrays = make_arrays(lengths=(3, 4), ends=("terminal", "timeout"))
    write_hdf5(d4rl_home / "hopper_medium_replay-v2.hdf5", arrays)
    ds = load_dataset("hopper-medium-replay-v2")
    assert ds.name == "hopper-medium-replay-v2"
    assert ds.label == "D4RL hopper-medium-replay-v2"
    assert (ds.env_name, ds.env_id) == ("hopper", "Hopper-v4")
    assert ds.ref_scores is None  # D4RL references come from the registry
    assert [len(e) for e in ds.episodes] == [3, 4]
    assert str(d4rl_home / "hopper_medium_replay-v2.hdf5") in ds.source


def test_medium_expert_concatenates_medium_and_expert(d4rl_home):
    write_hdf5(d4rl_home / "halfcheetah_medium-v2.hdf5",
               make_arrays("halfcheetah", lengths=(3, 2), ends=("timeout", "none"), seed=1))
    write_hdf5(d4rl_home / "halfcheetah_expert-v2.hdf5",
               make_arrays("halfcheetah", lengths=(4,), ends=("timeout",), seed=2))
    ds = load_dataset("halfcheetah-medium-expert-v2")
    # medium's unflagged tail stays its own episode rather than merging into expert's first
    assert [len(e) for e in ds.episodes] == [3, 2, 4]
    assert "concatenated" in ds.summary()
    # an actual medium_expert file takes precedence
    write_hdf5(d4rl_home / "halfcheetah_medium_expert-v2.hdf5",
               make_arrays("halfcheetah", lengths=(7,), ends=("timeout",)))
    assert [len(e) for e in load_dataset("halfcheetah-medium-expert-v2").episodes] == [7]


def test_offline_download_failure_says_where_to_put_the_file(d4rl_home):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("hopper-medium-v2")
    msg = str(info.value)
    assert "could not be downloaded" in msg and "Temporary failure in name resolution" in msg
    assert "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium-v2.hdf5" in msg
    assert str(d4rl_home / "hopper_medium-v2.hdf5") in msg
    assert "D4RL_DATASET_DIR" in msg
    assert not list(d4rl_home.iterdir())  # no partial file left behind
    with pytest.raises(DatasetNotFoundError, match="downloads disabled"):
        load_dataset("hopper-medium-v2", download=False)


def test_download_writes_file_then_loads(d4rl_home, tmp_path, monkeypatch):
    payload = write_hdf5(tmp_path / "src.hdf5",
                         make_arrays(lengths=(2, 5), ends=("terminal", "none"))).read_bytes()
    urls = []

    class Response(io.BytesIO):
        headers: ClassVar[dict] = {"Content-Length": str(len(payload))}

    def fake_urlopen(url, timeout):
        urls.append(url)
        return Response(payload)

    monkeypatch.setattr(envs.download, "_urlopen", fake_urlopen)
    ds = load_dataset("hopper-expert-v2")
    assert urls == ["http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_expert-v2.hdf5"]
    assert (d4rl_home / "hopper_expert-v2.hdf5").read_bytes() == payload
    assert [len(e) for e in ds.episodes] == [2, 5]


def test_interrupted_download_is_an_error(d4rl_home, monkeypatch):
    class Short(io.BytesIO):
        headers: ClassVar[dict] = {"Content-Length": "1000"}

    monkeypatch.setattr(envs.download, "_urlopen", lambda url, timeout: Short(b"x" * 10))
    with pytest.raises(DatasetNotFoundError, match="stopped after 10 of 1000 bytes"):
        load_dataset("hopper-random-v2")
    assert not list(d4rl_home.iterdir())


def test_standin_ids_from_env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DT_ATTN_STANDIN_DIR", str(tmp_path))
    write_hdf5(tmp_path / "hopper-medium-standin.hdf5", make_arrays(lengths=(3,), ends=("timeout",)),
               attrs={"env_id": "Hopper-v4"})
    write_hdf5(tmp_path / "hopper-expert-standin.hdf5", make_arrays(lengths=(5,), ends=("terminal",)),
               attrs={"env_id": "Hopper-v4"})
    ds = load_dataset("hopper-medium-standin")
    assert ds.label == "hopper medium stand-in" and ds.is_standin
    assert "D4RL" not in ds.label and "D4RL" not in ds.summary()
    me = load_dataset("hopper-medium-expert-standin")
    assert [len(e) for e in me.episodes] == [3, 5] and "stand-in" in me.label
    with pytest.raises(DatasetNotFoundError,
                       match=r"(?s)halfcheetah-medium-standin not found.*available there: "
                                                    r"hopper-expert-standin, hopper-medium-standin"):
        load_dataset("halfcheetah-medium-standin")


def test_standin_file_by_path_or_d4rl_name_is_labelled_standin(tmp_path, monkeypatch):
    arrays = make_arrays(lengths=(3,), ends=("timeout",))
    attrs = {"env_id": "Hopper-v4", "protocol": "D4RL medium stand-in"}
    path = write_hdf5(tmp_path / "hopper-medium-standin.hdf5", arrays, attrs=attrs)
    assert "stand-in" in load_dataset(path).label
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    write_hdf5(tmp_path / "hopper_medium-v2.hdf5", arrays, attrs=attrs)
    ds = load_dataset("hopper-medium-v2")
    assert "stand-in" in ds.label and "D4RL" not in ds.label


def test_default_is_the_embedded_standin_sample():
    ds = load_dataset("default")
    assert ds.label == "hopper medium-replay stand-in sample (embedded)"
    assert (ds.env_name, ds.env_id, ds.obs_dim, ds.act_dim) == ("hopper", "Hopper-v4", 11, 3)
    s = ds.stats()
    assert 25_000 <= s.transitions <= 35_000 and s.episodes > 100
    assert "D4RL" not in ds.summary() and "stand-in" in ds.summary()
    assert len(ds.metadata["source_sha256"]) == 64 and "selection_rule" in ds.metadata
    same = load_dataset("hopper-medium-replay-standin-sample")
    assert same.stats().transitions == s.transitions


# --- Minari --------------------------------------------------------------------------------------

def test_minari_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari -> ImportError
    with pytest.raises(OptionalDependencyError, match=r'pip install -e "\.\[minari\]"'):
        load_dataset("mujoco/hopper/medium-v0")


@pytest.fixture
def minari_home(tmp_path, monkeypatch):
    pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def test_minari_local_dataset(minari_home):
    from data_utils import write_minari

    write_minari("mujoco/hopper/tiny-v0", lengths=(4, 6), ref=(-20.0, 3000.0))
    ds = load_dataset("mujoco/hopper/tiny-v0")
    assert ds.label == "Minari mujoco/hopper/tiny-v0"
    assert (ds.env_name, ds.env_id) == ("hopper", "Hopper-v5")
    assert [len(e) for e in ds.episodes] == [4, 6]  # T+1 observations -> T steps
    assert ds.episodes[0].observations.shape == (4, 11)
    assert ds.episodes[0].terminals[-1] and ds.episodes[1].timeouts[-1]
    assert ds.ref_scores[:2] == (-20.0, 3000.0)
    scores, source = ds.normalized_score([1490.0])
    assert scores[0] == pytest.approx(50.0) and "Minari" in source


def test_minari_without_reference_scores_falls_back_to_d4rl(minari_home):
    from data_utils import write_minari

    write_minari("mujoco/halfcheetah/tiny-v0", env_id="HalfCheetah-v5", lengths=(3,), ref=None)
    ds = load_dataset("mujoco/halfcheetah/tiny-v0")
    assert ds.ref_scores is None and ds.env_id == "HalfCheetah-v5"
    assert "carries no reference returns" in ds.summary()
    assert ds.normalized_score([0.0])[1] == "D4RL reference returns"


def test_minari_not_local_and_download_fails(minari_home, monkeypatch):
    def offline(minari, dataset_id):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(envs.minari_source, "_minari_download", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mujoco/hopper/medium-v0")
    msg = str(info.value)
    assert "could not be downloaded" in msg and "network is unreachable" in msg
    assert "minari download mujoco/hopper/medium-v0" in msg and str(minari_home) in msg


def test_observations_stay_float32_in_minari(minari_home):
    from data_utils import write_minari

    write_minari("mujoco/hopper/tiny-v1", lengths=(2,))
    assert load_dataset("mujoco/hopper/tiny-v1").episodes[0].observations.dtype == np.float32
