"""Faults an outside battery found, each a one-line error (exit code 2) before anything is written or any
rollout runs: output folders that cannot be made, a Ray cluster nobody runs, an old saved config as
--config, a K no cell can take, a cut runs.csv, unwritable video and attend outputs, a lost DDP rank, and
the smaller ones (names, messages, warnings)."""

from __future__ import annotations

import errno
import importlib.util
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from data_utils import make_arrays, write_hdf5
from test_faults import ENV, ROOT, TINY, hold_lock
from test_upgrade import old_run  # noqa: F401 - the format-1 run folder fixture

import agents.evaluation
import agents.runlock
import experiments.commands.attend
from agents.checkpoint import load_checkpoint
from agents.config import run_name
from envs import load_dataset
from experiments.cli import main as cli_main
from experiments.reporting.aggregate import load_rows_csv

SWEEP = ["sweep", "--datasets", "default", "--attentions", "softmax", "--contexts", "2", "--seeds", "0",
         "--steps", "2", "--embed-dim", "8", "--n-layers", "1", "--batch-size", "4", "--eval-episodes", "0",
         "--jobs", "0", "--report", "false"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def tiny_run(tmp_path) -> Path:
    folder = tmp_path / "run"
    assert cli_main(["train", *TINY, "--steps", "2", "--run-dir", str(folder)]) == 0
    return folder


def no_rollouts(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("rolled out before the error")

    monkeypatch.setattr(agents.evaluation, "run_episodes", refuse)
    monkeypatch.setattr(experiments.commands.attend, "SteppedRollout", refuse)


# ------------------------------------------------------------------ output folders that cannot be made
def cli_process(*argv: str) -> subprocess.CompletedProcess:
    """`dt-attn ARGV` in a process of its own (the Ray backend imports ray, which the Ray tests' cluster
    must be the first to configure in this one)."""
    return subprocess.run([sys.executable, "-m", "experiments.cli", *argv], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_sweep_out_dir_under_a_file_is_one_line(tmp_path, backend):
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    (tmp_path / "FILE").write_text("x")
    proc = cli_process(*SWEEP, "--backend", backend, "--out-dir", str(tmp_path / "FILE" / "sub"))
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2
    assert f"{tmp_path / 'FILE'} is a file, not a folder; choose another --out-dir" in line


def test_a_read_only_filesystem_is_one_line_for_sweep_and_train(tmp_path, capsys, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert cli_main([*SWEEP, "--out-dir", str(tmp_path / "ro")]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: could not write {tmp_path / 'ro'}: Read-only file system; choose another --out-dir")
    assert cli_main(["train", *TINY, "--steps", "1", "--run-dir", str(tmp_path / "ro")]) == 2
    assert "Read-only file system; choose another --run-dir" in one_error_line(capsys.readouterr().err)


def test_a_lock_file_that_cannot_be_created_is_one_line(tmp_path, capsys, monkeypatch):
    real_open = agents.runlock.os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith("run.lock"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(agents.runlock.os, "open", read_only)
    assert cli_main(["train", *TINY, "--steps", "1", "--run-dir", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: could not write {tmp_path / 'run' / 'run.lock'}: Read-only file system; choose another "
        "--run-dir")


def test_a_run_dir_that_is_a_regular_file_is_one_line(tmp_path, capsys):
    (tmp_path / "FILE").write_text("x")
    assert cli_main(["train", *TINY, "--steps", "1", "--run-dir", str(tmp_path / "FILE")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "is a file, not a folder; choose another --run-dir" in line and "Errno" not in line


# ------------------------------------------------------------------ Ray: a cluster nobody runs
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_at_an_address_where_nothing_listens_fails_fast(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = cli_process(*SWEEP, "--backend", "ray", "--address", f"127.0.0.1:{port}", "--out-dir",
                       str(tmp_path / "sweep"))
    assert time.monotonic() - start < 60
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: could not join the Ray cluster at 127.0.0.1:{port} (Connection refused)")


def test_connect_timeout_is_validated():
    assert cli_main([*SWEEP, "--backend", "ray", "--address", "127.0.0.1:1", "--connect-timeout", "0"]) == 2


# ------------------------------------------------------------------ a saved config of an older format
def test_a_format1_config_json_is_accepted_as_config_for_a_resume(old_run, capsys):  # noqa: F811
    assert cli_main(["train", "--config", str(old_run / "config.json"), "--resume", "--run-dir", str(old_run),
                     "--steps", "6", "--eval-episodes", "1", "--eval-every", "0"]) == 0
    assert load_checkpoint(old_run)["step"] == 6
    assert "unknown config key" not in capsys.readouterr().err


# ------------------------------------------------------------------ a K no cell can take
def test_a_sweep_refuses_a_context_longer_than_the_episodes_before_writing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli_main([*SWEEP[:6], "20", "5000", *SWEEP[7:], "--out-dir", str(out)]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("error: context length 5000 is outside 1..1000")
    assert not out.exists()


# ------------------------------------------------------------------ a cut runs.csv
def test_a_runs_csv_cut_mid_row_names_the_line(tmp_path):
    header = "dataset,attention,K,seed,target,normalized_mean,steps"
    path = tmp_path / "runs.csv"
    path.write_text(f"{header}\nhopper,softmax,20,0,1800,25.0,100\nhopper,softmax,20,1,18")
    cut = r"runs.csv: line 3 is an incomplete row \(5 fields, the header has 7"
    with pytest.raises(ValueError, match=cut):
        load_rows_csv(path)
    assert cli_main(["report", str(path), "--out", str(tmp_path / "r"), "--no-references"]) == 2


# ------------------------------------------------------------------ outputs checked before rollouts
def test_eval_video_and_attend_out_are_checked_before_any_rollout(tiny_run, tmp_path, capsys, monkeypatch):
    no_rollouts(monkeypatch)
    (tmp_path / "FILE").write_text("x")
    base = ["eval", "--checkpoint", str(tiny_run), "--episodes", "1", "--envs", "1", "--max-steps", "3"]
    assert cli_main([*base, "--video", str(tmp_path / "FILE" / "ep.gif")]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: --video {tmp_path / 'FILE' / 'ep.gif'}: {tmp_path / 'FILE'} is a file, not a folder")
    assert not (tiny_run / "eval.json").exists()
    assert cli_main(["attend", "--checkpoint", str(tiny_run), "--out", str(tmp_path / "FILE"),
                     "--episodes", "1", "--envs", "1", "--max-steps", "3"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: --out {tmp_path / 'FILE'} is a file; give a folder")
    assert cli_main(["attend", "--checkpoint", str(tiny_run), "--out", str(tmp_path / "FILE" / "sub"),
                     "--episodes", "1", "--envs", "1", "--max-steps", "3"]) == 2
    assert "is a file, not a folder" in one_error_line(capsys.readouterr().err)


def test_an_evaluation_refused_by_a_busy_folder_names_eval_s_own_option(tiny_run, capsys):
    holder = hold_lock(tiny_run)
    try:
        assert cli_main(["eval", "--checkpoint", str(tiny_run), "--episodes", "1", "--envs", "1"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.endswith("or choose another --output") and "--run-dir" not in line
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ names, warnings
def test_a_run_folder_named_from_a_dataset_path_uses_the_file_stem():
    assert run_name("/data/sets/hopper-medium-v2.hdf5", "full", "softmax", 20, 0) == \
        "hopper-medium-v2-softmax-K20-s0"
    assert run_name("mujoco/hopper/medium-v0", "full", "softmax", 20, 0) == \
        "mujoco_hopper_medium-v0-softmax-K20-s0"


def test_absurd_magnitudes_in_a_dataset_are_warned_about(tmp_path):
    arrays = make_arrays("hopper")
    scaled = {**arrays, "observations": arrays["observations"] * 1e30}
    path = write_hdf5(tmp_path / "hopper_scaled.hdf5", scaled)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dataset(str(path), env="hopper")
    assert any("key 'observations' holds values up to" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dataset(str(write_hdf5(tmp_path / "hopper_plain.hdf5", arrays)), env="hopper")
    assert not any("holds values up to" in str(w.message) for w in caught)
