"""The `dt-attn data` command: listing and summaries."""

from __future__ import annotations

import urllib.error

import pytest
from data_utils import make_arrays, write_hdf5

import envs.download
from experiments.cli import main


def test_data_lists_known_datasets(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("DT_ATTN_STANDIN_DIR", str(tmp_path / "standin"))
    write_hdf5(tmp_path / "d4rl" / "hopper_medium-v2.hdf5", make_arrays())
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip() and not line.startswith(" ")}
    assert "default" in lines and "yes" in lines["default"].split()
    for env in ("hopper", "halfcheetah"):
        for kind in ("random", "medium", "medium-replay", "medium-expert", "expert"):
            assert f"{env}-{kind}-v2" in lines
    assert "hopper-medium-replay-standin" in lines and "stand-in" in lines["hopper-medium-replay-standin"]
    assert lines["hopper-medium-v2"].split()[2] == "yes"
    assert lines["hopper-expert-v2"].split()[2] == "no"
    assert str(tmp_path / "d4rl" / "hopper_medium_replay-v2.hdf5") in lines["hopper-medium-replay-v2"]
    assert "mujoco/hopper/medium-v0" in lines


def test_data_prints_summary(capsys, tmp_path):
    path = write_hdf5(tmp_path / "hopper_x.hdf5",
                      make_arrays(lengths=(5, 3, 4), ends=("terminal", "timeout", "none")))
    assert main(["data", str(path), "--observe", "positions"]) == 0
    out = capsys.readouterr().out
    assert "12 transitions, 3 episodes" in out and "obs_dim 5" in out and "observe=positions" in out


def test_data_reports_errors_without_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))

    def offline(url, timeout):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(envs.download, "_urlopen", offline)
    assert main(["data", "hopper-medium-v2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: D4RL hopper-medium-v2 is not on this machine")
    assert main(["data", "default", "--observe", "bogus"]) == 2  # a usage error, as in every other command
    assert "unknown observation filter part 'bogus'" in capsys.readouterr().err


def test_data_module_runs_standalone(capsys):
    from experiments.commands.data import COMMAND

    assert COMMAND.main(["default"]) == 0
    assert "hopper medium-replay stand-in sample" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        COMMAND.main(["--help"])
