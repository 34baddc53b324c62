"""`dt-attn sweep --backend ray`: cells as Ray tasks on a Ray cluster the tests start themselves: the local
pool's results, skip/resume across backends, failures reported, an output root a worker cannot see, and
SIGTERM cancelling the tasks of a sweep that started its own Ray instance."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from proc_utils import HAS_PROC, alive, free_port, kill_pids, process_tree
from test_sweep import calls, fake_train, small

from agents.checkpoint import load_checkpoint
from experiments.commands import sweep_ray
from experiments.commands.sweep import SweepConfig, expand_grid, run_sweep
from experiments.config import config_from_dict

# ray is not imported here: it reads its authentication settings when first imported, after ray_head set them.
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="the Ray backend needs the ray package (pip install 'dt-attn[ray]')"),
    pytest.mark.skipif(not HAS_PROC, reason="stops the Ray processes it starts, found in /proc"),
]

ROOT = Path(__file__).resolve().parents[1]


def ray_env() -> dict[str, str]:
    """Ray's token authentication with a token of this test run's own (in the environment, so that nothing is
    written to ~/.ray), and this tree's code on the workers' path."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"),
                                                        os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """The address of a one-node Ray cluster with 2 CPUs (`ray start --head --block`), stopped with its whole
    process tree at the end. Its workers find this tree's code, tests included, on their PYTHONPATH."""
    temp = tmp_path_factory.mktemp("ray")
    port = free_port()
    cmd = [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--head", "--block",
           "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--ray-client-server-port", str(free_port()), "--dashboard-port", str(free_port()),
           "--dashboard-agent-listen-port", str(free_port()), "--include-dashboard", "false",
           "--disable-usage-stats", "--temp-dir", str(temp)]
    log = temp / "head.log"
    env = ray_env()
    with open(log, "w") as out:
        head = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                start_new_session=True)
    # The sweeps' driver, in this process, connects with the head's token (ray reads it when first imported).
    assert "ray" not in sys.modules, "ray was imported before its authentication settings were made"
    patch = pytest.MonkeyPatch()
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        patch.setenv(key, env[key])
    try:
        deadline = time.monotonic() + 180
        while ("Ray runtime started" not in log.read_text() and head.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.5)
        assert head.poll() is None and "Ray runtime started" in log.read_text(), log.read_text()[-3000:]
        yield f"127.0.0.1:{port}"
    finally:
        patch.undo()
        tree = process_tree(head.pid)
        kill_pids([head.pid], signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            pass
        kill_pids(tree)
        head.wait()
        deadline = time.monotonic() + 20
        while any(alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in tree), "Ray processes left behind"


def _tiny_real(out: Path, **kw) -> SweepConfig:
    """A 2x2 grid (2 attentions x 2 seeds) of real, tiny train + evaluate cells."""
    values = {"datasets": ["default"], "attentions": ["softmax", "cosformer"], "contexts": [3],
              "seeds": [0, 1], "steps": 4, "embed_dim": 16, "n_layers": 1, "batch_size": 4, "warmup_steps": 1,
              "checkpoint_every": 2, "eval_episodes": 1, "eval_envs": 1, "eval_targets": [1800.0],
              "threads_per_job": 1, "report": False, "out_dir": str(out)}
    return config_from_dict(SweepConfig, {**values, **kw})


def test_ray_cells_reach_the_local_pools_weights_and_scores(tmp_path, ray_head):
    # the local backend one cell after another in this process: the pool's processes run the same run_cell
    local, on_ray = _tiny_real(tmp_path / "local", jobs=0), _tiny_real(tmp_path / "ray", backend="ray",
                                                                      address=ray_head)
    assert run_sweep(local, reference_fn=None, progress=False) == 0
    assert run_sweep(on_ray, reference_fn=None, progress=False) == 0
    names = [c.run_dir.name for c in expand_grid(local)]
    assert len(names) == 4 and [c.status for c in expand_grid(on_ray)] == ["done"] * 4
    for name in names:
        a, b = (load_checkpoint(tmp_path / side / name) for side in ("local", "ray"))
        assert a["step"] == b["step"] == 4
        for key, w in a["model"].items():
            assert torch.equal(w, b["model"][key]), (name, key)
        ev_a, ev_b = (json.loads((tmp_path / side / name / "eval.json").read_text())
                      for side in ("local", "ray"))
        assert [r["returns"] for r in ev_a["results"]] == [r["returns"] for r in ev_b["results"]]
        scores = [[r["normalized_mean"] for r in ev["results"]] for ev in (ev_a, ev_b)]
        assert scores[0] == scores[1]
    results = json.loads((tmp_path / "ray" / "sweep_results.json").read_text())
    assert all(r["ok"] for r in results)
    assert not list((tmp_path / "ray").glob(f"{sweep_ray.ROOT_TOKEN_PREFIX}*"))


def _interrupt(out: Path, resume: list[str], lost: list[str]) -> None:
    """Make cells look killed mid-training (checkpoint, no summary) or never started."""
    for name in resume:
        (out / name / "train_summary.json").unlink()
        (out / name / "eval.json").unlink()
    for name in lost:
        for f in (out / name).iterdir():
            f.unlink()
        (out / name).rmdir()


def test_a_grid_started_on_one_backend_is_finished_on_the_other(tmp_path, ray_head):
    out = tmp_path / "sweep"
    cfg = small(out, report=False)  # 8 cells, local backend, in this process
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 0
    names = sorted(c.run_dir.name for c in expand_grid(cfg))
    kept = {n: (out / n / "eval.json").stat().st_mtime_ns for n in names[3:]}
    _interrupt(out, resume=names[:2], lost=names[2:3])
    on_ray = dataclasses.replace(cfg, backend="ray", address=ray_head)
    assert [c.status for c in expand_grid(on_ray)].count("done") == 5
    assert run_sweep(on_ray, train_fn=fake_train, reference_fn=None, progress=False) == 0
    again = calls(out)[8:]
    assert sorted((c["run"], c["resume"]) for c in again) == [(names[0], True), (names[1], True),
                                                              (names[2], False)]
    assert os.getpid() not in {c["pid"] for c in again}  # ran in Ray's worker processes
    assert {n: (out / n / "eval.json").stat().st_mtime_ns for n in names[3:]} == kept  # finished: skipped

    # ... and back: a cell interrupted on Ray is resumed by the local pool.
    _interrupt(out, resume=names[5:6], lost=[])
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 0
    assert [(c["run"], c["resume"]) for c in calls(out)[11:]] == [(names[5], True)]
    assert all(c.status == "done" for c in expand_grid(on_ray))


def test_a_failing_ray_cell_is_reported_with_its_log_while_the_others_finish(tmp_path, ray_head, capsys):
    out = tmp_path / "sweep"
    cfg = small(out, attentions=["broken", "softmax"], contexts=[5], seeds=[0, 1], backend="ray",
                address=ray_head, report=False)
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 1
    printed = capsys.readouterr().out
    for seed in (0, 1):
        head = (f"FAILED hopper-medium-standin observe=full broken K=5 seed={seed} batch=64: RuntimeError: "
                "this attention")
        assert head in printed
    assert "/sweep/hopper-medium-standin-broken-K5-s0/sweep.log)" in printed  # the log's path
    assert "Traceback" not in printed and '  File "' not in printed  # not the log's traceback frames
    assert "2 of 4 cell(s) done, 2 failed" in printed
    results = {Path(r["run_dir"]).name: r["ok"] for r in json.loads((out / "sweep_results.json").read_text())}
    assert results == {f"hopper-medium-standin-{a}-K5-s{s}": a == "softmax" for a in ("broken", "softmax")
                       for s in (0, 1)}
    assert all((out / f"hopper-medium-standin-softmax-K5-s{s}" / "eval.json").exists() for s in (0, 1))


def test_a_worker_that_cannot_see_the_output_root_fails_its_cell(tmp_path, ray_head, capsys, monkeypatch):
    # The driver marks the root under another name than the workers look for: to them it is not the root.
    monkeypatch.setattr(sweep_ray, "ROOT_TOKEN_PREFIX", ".another-root-")
    out = tmp_path / "sweep"
    cfg = small(out, attentions=["softmax"], contexts=[5], seeds=[0], backend="ray", address=ray_head,
                report=False)
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 1
    printed = capsys.readouterr().out
    assert f"cannot see the sweep's output root {out.resolve()}" in printed
    assert "every node mounts at the same path" in printed
    assert not (out / "hopper-medium-standin-softmax-K5-s0").exists() and calls(out) == []  # wrote nothing


def test_root_problem_names_the_node_and_the_missing_path(tmp_path):
    assert "does not exist there" in sweep_ray.root_problem(tmp_path / "elsewhere", "abc")
    assert "exists there but is another folder" in sweep_ray.root_problem(tmp_path, "abc")
    (tmp_path / f"{sweep_ray.ROOT_TOKEN_PREFIX}abc").write_text("")
    assert sweep_ray.root_problem(tmp_path, "abc") is None


@pytest.mark.parametrize("bad, match", [
    ({"backend": "slurm"}, r"backend='slurm' \(must be one of local, ray\)"),
    ({"address": "auto"}, "add --backend ray"),
    ({"backend": "ray", "cpus_per_cell": 0}, r"cpus_per_cell=0.0 \(must be > 0\)"),
    ({"backend": "ray", "gpus_per_cell": 1}, "add --device cuda"),
    ({"backend": "ray", "address": "ray://head:10001"}, "Ray Client addresses are not supported"),
])
def test_bad_ray_options_are_rejected(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        small(tmp_path, **bad)


def test_ray_cells_take_their_threads_from_their_cpus(tmp_path):
    assert small(tmp_path, backend="ray", cpus_per_cell=3, threads_per_job=0).threads() == 3
    assert small(tmp_path, backend="ray", cpus_per_cell=0.5, threads_per_job=0).threads() == 1
    assert small(tmp_path, backend="ray", cpus_per_cell=3, threads_per_job=2).threads() == 2


def test_sigterm_cancels_the_ray_tasks_of_a_sweep_with_its_own_ray_instance(tmp_path):
    """No --address: the sweep starts a Ray instance of its own; SIGTERM (as Ctrl-C) cancels the running and
    queued cells and leaves no process of that instance behind."""
    out = tmp_path / "sweep"
    script = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
from agents.config import TrainConfig
from experiments.commands.sweep import SweepConfig, run_sweep
from test_sweep import sleepy_train
cfg = SweepConfig(datasets=["hopper-medium-standin"], attentions=["softmax"], contexts=[5], seeds=[0, 1, 2],
                  train=TrainConfig(steps=4), out_dir={str(out)!r}, backend="ray", cpus_per_cell=1,
                  report=False)
try:
    run_sweep(cfg, train_fn=sleepy_train, reference_fn=None, progress=False)
except KeyboardInterrupt:
    print("sweep interrupted")
    sys.exit(130)
"""
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **ray_env()}
    sweep = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    tree: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while len(calls(out)) < 2 and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.2)
        workers = [c["pid"] for c in calls(out)]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)  # 2 CPUs: the third cell waits
        tree = process_tree(sweep.pid)
        assert set(workers) <= set(tree)  # the Ray instance and its workers descend from the sweep
        sweep.send_signal(signal.SIGTERM)
        printed, _ = sweep.communicate(timeout=90)
        assert sweep.returncode == 130 and "sweep interrupted" in printed, printed[-3000:]
        deadline = time.monotonic() + 30
        while any(alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in tree if alive(p)], "processes of the sweep's Ray instance left behind"
        assert len(calls(out)) == 2  # the queued third cell never started
    finally:
        kill_pids(process_tree(sweep.pid) + tree)
        sweep.communicate()
