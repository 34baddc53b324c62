"""Faults a new user meets: shared run folders, NaN, bad values, kills, full disks, changed data, modes.

Subprocess tests launch the CLI of this tree (``python -m experiments.cli``) with a tiny model on the
embedded dataset, so that kills and signals hit a real process.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from data_utils import make_arrays, write_hdf5

from agents import atomic
from agents.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from agents.config import TrainConfig
from agents.runlock import LOCK_NAME, lock_owner
from agents.trainer import NonFiniteLossError, Trainer, default_run_dir
from envs import load_dataset
from experiments.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
TINY = ["--dataset", "default", "--attention", "softmax", "--context", "2", "--embed-dim", "8", "--n-layers",
        "1", "--batch-size", "4", "--warmup-steps", "1", "--eval-episodes", "0", "--threads", "1",
        "--log-every", "1000"]
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="reads process states from /proc")


def tiny(run_dir: Path, **over) -> TrainConfig:
    values = {"dataset": "default", "attention": "softmax", "context": 2, "embed_dim": 8, "n_layers": 1,
              "batch_size": 4, "warmup_steps": 1, "steps": 2, "checkpoint_every": 1, "eval_episodes": 0,
              "threads": 1, "run_dir": str(run_dir)}
    values.update(over)
    return TrainConfig(**values)


def train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.cli", "train", *TINY, "--run-dir", str(run_dir), *extra]


def popen(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False,
                          **kw)


def wait_for(condition, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}): {proc.stderr.read()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """A live process holding ``run_dir``'s lock until killed."""
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from agents.runlock import acquire; "
            f"acquire({str(run_dir)!r}); print('held', flush=True); time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# ------------------------------------------------------------------ 1. one process per run folder
@needs_proc
def test_a_second_run_in_a_busy_run_folder_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    folder = tmp_path / "run"
    first = popen(train_cmd(folder, "--steps", "1000000", "--checkpoint-every", "1000000"))
    try:
        wait_for(lambda: lock_owner(folder) is not None, proc=first)  # before its first checkpoint
        assert lock_owner(folder).startswith(f"process {first.pid} on ")
        second = run(train_cmd(folder, "--steps", "2", "--lr", "0.001"))
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"error: {folder} is in use by process {first.pid} on " in second.stderr
        assert not (folder / CHECKPOINT_NAME).exists()
        first.kill()
        first.wait(30)
    finally:
        first.kill()
        first.communicate()
    assert (folder / LOCK_NAME).exists() and lock_owner(folder) is None  # stale: nobody holds it
    assert cli_main(["train", *TINY, "--run-dir", str(folder), "--steps", "2"]) == 0
    assert not (folder / LOCK_NAME).exists() and load_checkpoint(folder)["step"] == 2
    holder = hold_lock(folder)  # an evaluation writing into a busy folder is refused too
    try:
        capsys.readouterr()
        code = cli_main(["eval", "--checkpoint", str(folder), "--episodes", "1", "--envs", "1", "--max-steps",
                         "3"])
        assert code == 2 and f"in use by process {holder.pid}" in capsys.readouterr().err
        assert not (folder / "eval.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_default_run_folders_tell_apart_runs_with_other_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = TrainConfig()
    assert default_run_dir(base) == Path("runs/default-softmax-K20-s0")
    lr, size = default_run_dir(TrainConfig(lr=1e-3)), default_run_dir(TrainConfig(embed_dim=64))
    assert lr.name.startswith("default-softmax-K20-s0-") and len({lr, size, default_run_dir(base)}) == 3
    assert default_run_dir(TrainConfig(lr=1e-3)) == lr  # stable
    # resumable
    assert default_run_dir(TrainConfig(steps=10, threads=2, eval_episodes=3)) == default_run_dir(base)
    old = Path("runs/default-softmax-K20-s0")  # a run begun before the suffix existed is still resumed
    old.mkdir(parents=True)
    (old / CHECKPOINT_NAME).write_bytes(b"x")
    assert default_run_dir(TrainConfig(lr=1e-3, resume=True)) == old
    assert default_run_dir(TrainConfig(lr=1e-3)) == lr


# ------------------------------------------------------------------ 2. NaN gradients
def test_nan_gradients_are_never_applied_and_the_kept_checkpoint_is_finite(tmp_path):
    cfg = tiny(tmp_path / "run", steps=5, checkpoint_every=1)
    trainer = Trainer(cfg, progress=False)
    calls = {"n": 0}

    def poison_third_backward(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 3 else grad

    next(trainer.model.parameters()).register_hook(poison_third_backward)
    with pytest.raises(NonFiniteLossError, match=r"gradients became non-finite at step 3.*step 2\) is kept"):
        trainer.train()
    kept = load_checkpoint(cfg.run_dir)
    assert kept["step"] == 2
    assert all(bool(torch.isfinite(t).all()) for t in kept["model"].values() if t.is_floating_point())
    for name, p in trainer.model.named_parameters():  # the update was not applied
        torch.testing.assert_close(p.detach(), kept["model"][name], rtol=0, atol=0)
    resumed = Trainer(tiny(tmp_path / "run", steps=5, checkpoint_every=1, resume=True), progress=False)
    assert resumed.step == 2 and resumed.train()["steps"] == 5
    with torch.no_grad():  # weights that are not finite are never written
        next(resumed.model.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="not saved"):
        resumed.save()
    assert load_checkpoint(cfg.run_dir)["step"] == 5


# ------------------------------------------------------------------ 3. NaN runs in a report; eval of NaN
# weights
def test_report_lists_a_nan_run_as_failed_and_reports_the_rest(tmp_path, capsys):
    from test_report import write_run

    for seed in range(2):
        write_run(tmp_path, "softmax", 5, seed, {1800.0: 10.0 + seed})
    nan_run = write_run(tmp_path, "softmax", 5, 0, {1800.0: 0.0}, dataset="halfcheetah-medium-standin")
    ev = json.loads((nan_run / "eval.json").read_text())
    ev["results"][0].update(return_mean=float("nan"), normalized_mean=float("nan"))
    (nan_run / "eval.json").write_text(json.dumps(ev))  # Python writes the bare NaN literal older runs hold
    out = tmp_path / "report"
    assert cli_main(["report", str(tmp_path), "--out", str(out), "--no-references"]) == 0
    md = (out / "report.md").read_text()
    assert f"* {nan_run}: failed: non-finite score at target(s) 1800" in md
    assert "| 10.5 ± 0.7 |" in md and (out / "scores.png").stat().st_size > 0 and (out / "costs.png").exists()
    assert "halfcheetah" not in (out / "runs.csv").read_text()


def test_eval_refuses_a_checkpoint_with_non_finite_weights(tmp_path, capsys):
    cfg = tiny(tmp_path / "run")
    Trainer(cfg, progress=False).train()
    payload = load_checkpoint(cfg.run_dir)
    key = next(k for k, v in payload["model"].items() if v.is_floating_point())
    payload["model"][key] = payload["model"][key] * float("nan")
    save_checkpoint(tmp_path / "run" / CHECKPOINT_NAME, payload)
    code = cli_main(["eval", "--checkpoint", cfg.run_dir, "--episodes", "1", "--envs", "1", "--max-steps",
                     "3"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite weights" in err and key in err and "Traceback" not in err
    assert not (tmp_path / "run" / "eval.json").exists()


# ------------------------------------------------------------------ 4. value ranges
@pytest.mark.parametrize("flags,named", [
    (["--grad-clip", "-1"], "grad_clip=-1.0"), (["--grad-clip", "0"], "grad_clip=0.0"),
    (["--steps", "0"], "steps=0"), (["--threads", "-1"], "threads=-1"),
    (["--eval-targets", "nan"], "eval_targets=[nan]"), (["--lr", "inf"], "lr=inf"),
])
def test_out_of_range_training_values_are_refused(tmp_path, capsys, flags, named):
    folder = tmp_path / "run"
    assert cli_main(["train", *TINY, "--run-dir", str(folder), "--steps", "3", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid training config value(s): ") and named in err and "must be" in err
    assert not folder.exists()


# ------------------------------------------------------------------ 5. kill -9 during an evaluation
def test_an_evaluation_killed_midway_is_run_when_the_run_resumes(tmp_path, capsys):
    folder, marker = tmp_path / "run", tmp_path / "evaluating"
    argv = ["train", *TINY, "--run-dir", str(folder), "--steps", "4", "--checkpoint-every", "2",
            "--eval-every", "2", "--eval-episodes", "1", "--eval-envs", "1", "--eval-targets", "1800"]
    script = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
              "import agents.evaluation as ev\n"
              f"def stuck(*a, **k):\n    open({str(marker)!r}, 'w').close(); time.sleep(300)\n"
              "ev.evaluate = stuck\n"
              f"from experiments.cli import main; sys.exit(main({argv!r}))\n")
    proc = popen([sys.executable, "-c", script])
    try:
        wait_for(marker.exists, proc=proc)
        proc.kill()
        proc.wait(30)
    finally:
        proc.kill()
        proc.communicate()
    assert load_checkpoint(folder)["step"] == 2 and not (folder / "evals" / "step-0000002.json").exists()
    assert cli_main([*argv, "--resume"]) == 0
    periodic = json.loads((folder / "evals" / "step-0000002.json").read_text())
    assert periodic["train_steps"] == 2 and periodic["results"][0]["episodes"] == 1
    assert json.loads((folder / "eval.json").read_text())["train_steps"] == 4
    assert "step 2: normalized target 1800" in capsys.readouterr().out


# ------------------------------------------------------------------ 6. kill -9 of a sweep's parent
@needs_proc
def test_workers_die_with_a_killed_sweep_and_a_rerun_leaves_busy_cells_alone(tmp_path, capsys):
    from test_sweep import calls, fake_train

    from experiments.commands.sweep import SweepConfig, run_sweep

    out = tmp_path / "sweep"
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from agents.config import TrainConfig
from experiments.commands.sweep import SweepConfig, run_sweep
from tests.test_sweep import sleepy_train
cfg = SweepConfig(datasets=["hopper-medium-standin"], attentions=["softmax"], contexts=[5], seeds=[0, 1],
                  train=TrainConfig(steps=4), out_dir={str(out)!r}, jobs=2, threads_per_job=1, report=False)
run_sweep(cfg, train_fn=sleepy_train, reference_fn=None, progress=False)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    workers = []
    try:
        wait_for(lambda: len(calls(out)) == 2, proc=parent)
        workers = [c["pid"] for c in calls(out)]
        assert all(alive(pid) for pid in workers)
        parent.kill()
        parent.wait(30)
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers)
    finally:
        parent.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    busy = out / "hopper-medium-standin-softmax-K5-s1"
    assert lock_owner(busy) is None  # the killed workers' locks are stale
    holder = hold_lock(busy)
    try:
        (out / "calls.jsonl").unlink()
        capsys.readouterr()
        cfg = SweepConfig(datasets=["hopper-medium-standin"], attentions=["softmax"], contexts=[5],
                          seeds=[0, 1], train=TrainConfig(steps=4), out_dir=str(out), jobs=0,
                          threads_per_job=1, report=False)
        assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 1
        printed = capsys.readouterr().out
        assert f"{busy} (in use by process {holder.pid} on " in printed
        assert f"{busy} is in use by process {holder.pid}" in printed
        assert "1 of 2 cell(s) done, 1 failed" in printed
        assert [c["run"] for c in calls(out)] == ["hopper-medium-standin-softmax-K5-s0"]
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ 7. one-line errors
@pytest.mark.parametrize("command,content,message", [
    ("train", '{"steps": "twenty"}', "config value steps='twenty' has the wrong type: expected an integer"),
    ("train", '{"context": 10.5}', "config value context=10.5 has the wrong type: expected an integer"),
    ("train", '{"eval_targets": 1800}',
     "config value eval_targets=1800 has the wrong type: expected a list of numbers or null"),
    ("train", '{"attention_options": "chunk"}', "attention_options must be a JSON object such as"),
    ("sweep", '{"contexts": 20}', "config value contexts=20 has the wrong type: expected a list of integers"),
])
def test_wrong_typed_config_values_are_one_line_errors(tmp_path, capsys, command, content, message):
    config = tmp_path / "c.json"
    config.write_text(content)
    assert cli_main([command, "--config", str(config),
                     "--dry-run" if command == "sweep" else "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_a_config_file_that_is_not_an_object_of_settings_is_refused(tmp_path):
    config = tmp_path / "c.json"
    config.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="holds a list; it must hold one object of settings"):
        cli_main(["train", "--config", str(config)])


def test_eval_checks_the_environment_and_output_before_rolling_out(tmp_path, capsys, monkeypatch):
    import agents.evaluation

    cfg = tiny(tmp_path / "run")
    Trainer(cfg, progress=False).train()

    def no_rollouts(*args, **kwargs):
        raise AssertionError("rolled out before the error")

    monkeypatch.setattr(agents.evaluation, "run_episodes", no_rollouts)
    base = ["eval", "--checkpoint", cfg.run_dir, "--episodes", "1", "--envs", "1", "--max-steps", "3"]
    assert cli_main([*base, "--env-id", "Foo-v9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: gymnasium cannot make 'Foo-v9'") and err.count("\n") == 1
    assert cli_main([*base, "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: --output {tmp_path} is a folder; give a file path such as "
                                       f"{tmp_path / 'eval.json'}\n")


def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "run"
    assert cli_main(["train", *TINY, "--run-dir", str(folder), "--steps", "2", "--checkpoint-every",
                     "1"]) == 0
    size = (folder / CHECKPOINT_NAME).stat().st_size
    before = (folder / CHECKPOINT_NAME).read_bytes()

    def small_files():  # writes past half a checkpoint fail, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    res = run(train_cmd(folder, "--steps", "4", "--checkpoint-every", "1", "--resume"),
              preexec_fn=small_files)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert (f"error: could not write {folder / CHECKPOINT_NAME}: File too large; the last good checkpoint "
            f"({folder / CHECKPOINT_NAME}, step 2) is kept; free disk space, then rerun with "
            "--resume") in res.stderr
    assert (folder / CHECKPOINT_NAME).read_bytes() == before and not list(folder.glob(".*.tmp"))


def test_a_write_error_survives_pickling_with_its_message():
    """DDP's ranks receive rank 0's failed write pickled (agents.distributed.on_main)."""
    err = atomic.WriteError("runs/a/checkpoint.pt", "No space left on device", "the previous one is intact")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is atomic.WriteError and str(back) == str(err) == (
        "could not write runs/a/checkpoint.pt: No space left on device; the previous one is intact")
    assert (back.path, back.reason, back.note) == (Path("runs/a/checkpoint.pt"), err.reason, err.note)


@needs_proc
def test_sigterm_stops_training_like_ctrl_c(tmp_path):
    folder = tmp_path / "run"
    proc = popen(train_cmd(folder, "--steps", "1000000", "--checkpoint-every", "5"))
    try:
        wait_for((folder / CHECKPOINT_NAME).exists, proc=proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in err, err  # what the process said, should it fail
    assert "interrupted: the last checkpoint is kept; rerun with --resume to continue" in err
    step = load_checkpoint(folder)["step"]
    assert step % 5 == 0 and not (folder / LOCK_NAME).exists()
    assert cli_main(["train", *TINY, "--run-dir", str(folder), "--steps", str(step + 1), "--resume"]) == 0


# ------------------------------------------------------------------ 8. temp files of killed writes
def test_temp_files_of_killed_writes_are_removed_at_start_and_on_resume(tmp_path):
    folder = tmp_path / "run"

    def plant() -> list[Path]:
        (folder / "evals").mkdir(parents=True, exist_ok=True)
        tmps = [folder / ".checkpoint.pt.k1ll3d.tmp", folder / "evals" / ".step-0000002.json.x.tmp"]
        for t in tmps:
            t.write_bytes(b"\0" * 100_000)
        return tmps

    tmps = plant()
    Trainer(tiny(folder), progress=False).train()
    assert not any(t.exists() for t in tmps)
    tmps = plant()
    Trainer(tiny(folder, steps=3, resume=True), progress=False)
    assert not any(t.exists() for t in tmps) and (folder / CHECKPOINT_NAME).exists()


def test_a_file_written_by_path_replaces_the_old_one_only_when_complete(tmp_path):
    """atomic_path, for writers that open a path themselves (videos): a temp file named with the target's
    suffix, the old file intact when the writer dies, the temp file found by remove_temp_files if killed."""
    target = tmp_path / "ep.mp4"
    target.write_bytes(b"old")
    dies = pytest.raises(RuntimeError, match="writer died")
    with dies, atomic.atomic_path(target, keep_suffix=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".ep.mp4.") and tmp.name.endswith(".tmp.mp4")
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ep.mp4"]
    with atomic.atomic_path(target, keep_suffix=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["ep.mp4"]
    killed = [tmp_path / ".eval.json.x1.tmp", tmp_path / ".ep.mp4.x2.tmp.mp4"]
    for t in killed:
        t.write_bytes(b"")
    assert sorted(atomic.remove_temp_files(tmp_path)) == sorted(killed) and target.exists()


# ------------------------------------------------------------------ 9. silent wrong input
def test_resume_refuses_a_dataset_that_changed_under_the_same_path(tmp_path):
    data = tmp_path / "hopper-data.hdf5"
    arrays = make_arrays("hopper", lengths=(30, 30), ends=("terminal", "timeout"), seed=0)
    write_hdf5(data, arrays)
    cfg = tiny(tmp_path / "run", dataset=str(data))
    Trainer(cfg, progress=False).train()
    original, stamp = data.read_bytes(), data.stat().st_mtime_ns
    with h5py.File(data, "r+") as f:  # same size, same shapes, one value changed
        f["rewards"][3] = f["rewards"][3] + 1.0
    os.utime(data, ns=(stamp, stamp))
    assert data.stat().st_size == len(original)
    with pytest.raises(ValueError, match="is not the data this run was trained on"):
        Trainer(tiny(tmp_path / "run", dataset=str(data), steps=4, resume=True), progress=False)
    data.write_bytes(original)
    assert Trainer(tiny(tmp_path / "run", dataset=str(data), steps=4, resume=True), progress=False).step == 2
    payload = load_checkpoint(cfg.run_dir)  # a checkpoint from before fingerprints still resumes
    del payload["data"]["fingerprint"]
    save_checkpoint(Path(cfg.run_dir) / CHECKPOINT_NAME, payload)
    assert Trainer(tiny(tmp_path / "run", dataset=str(data), steps=4, resume=True), progress=False).step == 2


def test_episodes_past_the_step_limit_warn_or_are_split(tmp_path, capsys):
    data = tmp_path / "hopper-flat.hdf5"
    write_hdf5(data, make_arrays("hopper", lengths=(2500,), ends=("none",)))
    with pytest.warns(UserWarning, match="1 episode.* past hopper's step limit of 1000 steps .longest 2500"):
        assert [len(e) for e in load_dataset(data).episodes] == [2500]
    split = load_dataset(data, split_long=True)
    assert [len(e) for e in split.episodes] == [1000, 1000, 500]
    assert [bool(e.timeouts[-1]) for e in split.episodes] == [True, True, False]
    with pytest.warns(UserWarning):
        whole = load_dataset(data).episodes[0]
    for key in ("observations", "actions", "rewards"):
        np.testing.assert_array_equal(np.concatenate([getattr(e, key) for e in split.episodes]),
                                      getattr(whole, key))
    assert cli_main(["data", str(data), "--split-long-episodes"]) == 0
    assert "3 episodes" in capsys.readouterr().out
    trainer = Trainer(tiny(tmp_path / "run", dataset=str(data), split_long_episodes=True), progress=False)
    assert len(trainer.data.dataset.episodes) == 3


def test_resume_below_the_checkpoint_and_evaluating_nothing_are_refused(tmp_path):
    Trainer(tiny(tmp_path / "run", steps=4), progress=False).train()
    with pytest.raises(ValueError, match="already at step 4; pass --steps 4 or more"):
        Trainer(tiny(tmp_path / "run", steps=2, resume=True), progress=False)
    with pytest.raises(ValueError, match="eval_every=5 .must be >= 0, and 0 when eval_episodes is 0"):
        tiny(tmp_path / "run", eval_every=5, eval_episodes=0)


# ------------------------------------------------------------------ 10. file modes
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o007, 0o660)])
def test_written_files_take_the_umask_mode(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic.write_json(tmp_path / "a.json", {"x": 1})
        save_checkpoint(tmp_path / CHECKPOINT_NAME, {"model": {}, "config": {}})
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / CHECKPOINT_NAME).stat().st_mode & 0o777 == mode


# ------------------------------------------------------------------ 11. small messages
def test_config_path_messages_and_the_dimension_mismatch_name_the_flag(tmp_path):
    with pytest.raises(SystemExit, match="is a folder; pass a .json or .toml file"):
        cli_main(["train", "--config", str(tmp_path)])
    yaml = tmp_path / "c.yaml"
    yaml.write_text("steps: 10\n")
    with pytest.raises(SystemExit, match=r"\.yaml files are not read; write the config as JSON"):
        cli_main(["train", "--config", str(yaml)])
    data = tmp_path / "cheetah.hdf5"
    write_hdf5(data, make_arrays("halfcheetah", lengths=(5,), ends=("terminal",)))
    with pytest.raises(ValueError, match=r"--env") as info:
        load_dataset(data, env="hopper")
    assert "env=?" not in str(info.value)


def test_json_files_hold_null_for_nan(tmp_path):
    atomic.write_json(tmp_path / "a.json",
                      {"x": float("nan"), "y": [float("inf"), 1.5], "z": np.float32("nan")})

    def refuse(name):
        raise AssertionError(f"bare {name} literal")

    written = json.loads((tmp_path / "a.json").read_text(), parse_constant=refuse)
    assert written == {"x": None, "y": [None, 1.5], "z": None}
    assert not math.isnan(json.loads((tmp_path / "a.json").read_text())["y"][1])
