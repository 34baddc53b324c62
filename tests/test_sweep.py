"""`dt-attn sweep`: grid expansion, config files, skip/resume, failures, parallel cells, dry run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.config import TrainConfig
from experiments.commands import sweep
from experiments.commands.sweep import GRID_FIELDS, PER_CELL_FIELDS, SweepConfig, expand_grid, run_sweep
from experiments.config import (
    add_config_arguments,
    config_from_args,
    config_from_dict,
    config_keys,
    replace_config,
)


def fake_train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Stands in for train_and_evaluate: writes the files a finished run has and logs the call."""
    run = Path(cfg.run_dir)
    with open(run.parent / "calls.jsonl", "a") as f:
        f.write(json.dumps({"run": run.name, "resume": cfg.resume, "steps": cfg.steps, "threads": cfg.threads,
                            "options": cfg.attention_options, "pid": os.getpid()}) + "\n")
    print("training output goes to the cell's log")
    if cfg.attention == "broken":
        raise RuntimeError("this attention always diverges")
    (run / "config.json").write_text(json.dumps({"format": 2, **dataclasses.asdict(cfg)}))
    (run / "checkpoint.pt").write_bytes(b"ckpt")
    summary = {"steps": cfg.steps, "train_time_s": 1.0, "steps_per_s": float(cfg.steps), "tokens_per_step": 1,
               "targets_per_step": float(cfg.batch_size * cfg.context),
               "peak_memory_mb": 10.0 * cfg.context, "parameters": 5, "device": "cpu",
               "dataset_label": cfg.dataset, "env_id": "Hopper-v4", "observe": cfg.observe}
    (run / "train_summary.json").write_text(json.dumps(summary))
    score = 10.0 * cfg.context + cfg.seed
    result = {"format": 2, "dataset": cfg.dataset, "dataset_label": cfg.dataset, "env_id": "Hopper-v4",
              "observe": cfg.observe, "attention": cfg.attention, "attention_options": cfg.attention_options,
              "activation": cfg.activation, "init": cfg.init, "init_std": cfg.init_std,
              "context": cfg.context,
              "train_seed": cfg.seed, "train_precision": cfg.precision, "train_steps": cfg.steps,
              "eval_seed": 1000,
              "rollout": cfg.rollout, "method": f"{cfg.rollout}: ...",
              "eval_config": {"rollout": cfg.rollout},
              "results": [{"target": 1800.0, "episodes": cfg.eval_episodes, "return_mean": score,
                           "return_std": 0.0, "normalized_mean": score, "normalized_std": 0.0,
                           "length_mean": 10.0, "wall_time_s": 1.0, "env_steps_per_s": 100.0}]}
    (run / ("eval.json" if cfg.rollout == "exact" else "eval-streaming.json")).write_text(json.dumps(result))
    return {"train": summary, "run_dir": str(run), "eval": result}


def sleepy_train(cfg: TrainConfig, progress: bool = True) -> dict:
    """A cell that never finishes on its own: logs its pid, then sleeps."""
    run = Path(cfg.run_dir)
    with open(run.parent / "calls.jsonl", "a") as f:
        f.write(json.dumps({"run": run.name, "pid": os.getpid()}) + "\n")
    time.sleep(300)
    return {}


def calls(out: Path) -> list[dict]:
    path = out / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def small(out: Path, **kw) -> SweepConfig:
    values = {"datasets": ["hopper-medium-standin"], "attentions": ["softmax", "cosformer"],
              "contexts": [5, 20], "seeds": [0, 1], "steps": 4, "out_dir": str(out), "jobs": 0,
              "threads_per_job": 1}
    values.update(kw)
    return config_from_dict(SweepConfig, values)


def test_sweep_keys_are_the_grid_the_execution_and_every_training_value():
    """A sweep's base training config copies nothing: every TrainConfig field is a sweep key of its own name,
    except those the grid spans (datasets, ...) or the sweep sets per cell."""
    keys = {k.name: k for k in config_keys(SweepConfig)}
    for f in dataclasses.fields(TrainConfig):
        if f.name in GRID_FIELDS:
            assert GRID_FIELDS[f.name] in keys and f.name not in keys
        elif f.name in PER_CELL_FIELDS:
            assert f.name not in keys or keys[f.name].path == (f.name,)  # attention_options: the sweep's own
        else:
            assert keys[f.name].path == ("train", f.name) and keys[f.name].default == f.default
    cfg = config_from_dict(SweepConfig, {"steps": 7, "embed_dim": 32, "jobs": 2})
    assert cfg.train == TrainConfig(steps=7, embed_dim=32) and cfg.jobs == 2
    assert replace_config(cfg, lr=3e-4, jobs=3).train == TrainConfig(steps=7, embed_dim=32, lr=3e-4)
    with pytest.raises(SystemExit, match=r"unknown config key\(s\) \['dataset'\]"):
        config_from_dict(SweepConfig, {"dataset": "default"})  # the grid's key is datasets


@pytest.mark.parametrize("path",
                         sorted((Path(__file__).parents[1] / "experiments" / "configs").glob("*.json")),
                         ids=lambda p: p.name)
def test_shipped_sweep_configs_load_and_expand(path):
    """Every config RESULTS.md names loads into a valid SweepConfig with a non-empty grid."""
    from experiments.config import config_from_dict, load_config_file

    cfg = config_from_dict(SweepConfig, load_config_file(path))
    cells = expand_grid(cfg)
    assert len(cells) == (len(cfg.datasets) * len(cfg.observes) * len(cfg.attentions) * len(cfg.contexts)
                          * len(cfg.seeds))


def test_grid_expansion(tmp_path):
    cfg = small(tmp_path, datasets=["hopper-medium-standin", "halfcheetah-medium-standin"],
                observes=["full", "positions"], attentions=["softmax", "combiner-fixed"], contexts=[20, 1000],
                seeds=[0, 1, 2], attention_options={"combiner-fixed": {"span": 8}}, batch_size=7, lr=3e-4)
    cells = expand_grid(cfg)
    assert len(cells) == 2 * 2 * 2 * 2 * 3
    assert len({c.run_dir for c in cells}) == len(cells)
    assert all(c.status == "new" and not c.cfg.resume for c in cells)
    cell = next(c for c in cells if (c.cfg.dataset, c.cfg.observe, c.cfg.attention, c.cfg.context, c.cfg.seed)
                == ("halfcheetah-medium-standin", "positions", "combiner-fixed", 1000, 2))
    assert cell.run_dir == tmp_path / "halfcheetah-medium-standin-positions-combiner-fixed-K1000-s2"
    assert cell.cfg.attention_options == {"span": 8} and cell.cfg.batch_size == 7 and cell.cfg.lr == 3e-4
    assert cell.cfg.steps == 4 and cell.cfg.threads == 1
    assert next(c for c in cells if c.cfg.attention == "softmax").cfg.attention_options == {}


@pytest.mark.parametrize("bad, match", [
    ({"contexts": [20, 20]}, "more than once"),
    ({"seeds": []}, "empty"),
    ({"attention_options": {"combiner": {"span": 4}}}, "not in --attentions"),
    ({"jobs": -1}, ">= 0"),
    ({"targets_per_step": 0}, "targets_per_step"),
    ({"targets_per_step": True}, "targets_per_step"),
])
def test_bad_sweep_values_are_rejected(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        small(tmp_path, **bad)


def test_targets_per_step_holds_real_action_targets_fixed(tmp_path, capsys):
    """Batches count unpadded steps: episodes shorter than K leave most of a long segment padding."""
    from envs import load_dataset

    cfg = small(tmp_path, attentions=["softmax"], contexts=[1, 5, 20, 60, 1000], seeds=[0], batch_size=7,
                targets_per_step=640)
    cells = expand_grid(cfg)
    lengths = [len(e) for e in load_dataset("hopper-medium-standin").episodes]
    for c in cells:
        per_segment = sum(min(c.cfg.context, t + 1) for n in lengths for t in range(n)) / sum(lengths)
        assert c.cfg.batch_size == max(1, round(640 / per_segment))
        assert c.segment_targets == pytest.approx(per_segment)
    batches = {c.cfg.context: c.cfg.batch_size for c in cells}
    assert batches[1] == 640 and batches[5] == 128 and batches[1000] > 1  # 1000 if every episode were full
    assert sweep.softmax_memory_warnings(cells) == []  # batch 2 at K=1000: 72 MB per layer
    assert run_sweep(dataclasses.replace(cfg, dry_run=True, probe_steps=0), train_fn=fake_train,
                     reference_fn=None) == 0
    printed = capsys.readouterr().out
    assert f"softmax K=1000 seed=0 batch={batches[1000]} (~" in printed and "targets/step)" in printed
    # The report after the sweep draws one line per attention across the batch sizes.
    assert run_sweep(dataclasses.replace(cfg, contexts=[1, 5]), train_fn=fake_train, reference_fn=None,
                     progress=False) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert ("| full | softmax ~640 targets/step | 10.0 [10.0, 10.0] (1 × 10) | 50.0 [50.0, 50.0] (1 × 10) |"
            in report)


def test_softmax_memory_warning_uses_each_cells_batch(tmp_path):
    warned = sweep.softmax_memory_warnings(expand_grid(small(tmp_path, contexts=[5, 1000], batch_size=64)))
    assert len(warned) == 1 and "softmax at K=1000 (3000 tokens)" in warned[0] and "batch 64" in warned[0]


def test_run_directories_trained_with_other_settings_are_refused(tmp_path):
    out = tmp_path / "sweep"
    assert run_sweep(small(out, contexts=[5], seeds=[0], report=False), train_fn=fake_train,
                     reference_fn=None, progress=False) == 0
    # A longer run of the same settings resumes; other settings would silently reuse the finished runs.
    assert {c.status for c in expand_grid(small(out, contexts=[5], seeds=[0], steps=8))} == {"resume"}
    with pytest.raises(ValueError,
                       match=r"(?s)2 cell\(s\) would reuse run directories.*batch_size \(saved 64, now 8\)"):
        expand_grid(small(out, contexts=[5], seeds=[0], batch_size=8))
    with pytest.raises(ValueError, match=r"(?s)lr \(saved 0.0001, now 0.001\).*another --out-dir"):
        expand_grid(small(out, contexts=[5], seeds=[0], lr=1e-3))


def test_bad_shared_training_value_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        expand_grid(small(tmp_path, batch_size=0))


def test_config_file_and_command_line_override(tmp_path, capsys):
    toml = tmp_path / "sweep.toml"
    toml.write_text('datasets = ["hopper-medium-standin"]\nattentions = ["cosformer"]\n'
                    f'contexts = [5, 1000]\nseeds = [3]\nsteps = 7\nout_dir = "{tmp_path / "out"}"\n'
                    '[attention_options.cosformer]\nchunk_size = 16\n')
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, SweepConfig)
    args = parser.parse_args(["--config", str(toml), "--contexts", "20", "50", "--dry-run", "--probe-steps",
                              "0", "--embed-dim", "64"])
    cfg = config_from_args(SweepConfig, args)
    assert cfg.contexts == [20, 50] and cfg.seeds == [3] and cfg.dry_run is True
    # the cells' base: the file's steps, the flag's size
    assert cfg.train == TrainConfig(steps=7, embed_dim=64)
    assert cfg.attention_options == {"cosformer": {"chunk_size": 16}}
    js = tmp_path / "sweep.json"
    js.write_text(json.dumps({"attentions": ["softmax"], "contexts": [2], "out_dir": str(tmp_path / "j")}))
    assert sweep.COMMAND.main(["--config", str(js), "--seeds", "0", "1", "--dry-run", "--probe-steps",
                               "0"]) == 0
    out = capsys.readouterr().out
    assert "softmax K=2 seed=1" in out and "contexts" in out and not (tmp_path / "j").exists()
    with pytest.raises(SystemExit):
        sweep.COMMAND.main(["--contextz", "2"])
    js.write_text(json.dumps({"contextz": [2]}))
    with pytest.raises(SystemExit, match="unknown config key"):
        sweep.COMMAND.main(["--config", str(js)])


def test_finished_cells_are_skipped_and_killed_ones_resumed(tmp_path, capsys):
    out = tmp_path / "sweep"
    cfg = small(out)
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 0
    first = calls(out)
    assert len(first) == 8 and not any(c["resume"] for c in first)
    assert json.loads((out / "sweep_config.json").read_text())["contexts"] == [5, 20]
    assert "training output goes" in (out / "hopper-medium-standin-softmax-K5-s0" / "sweep.log").read_text()
    rows = (out / "report" / "runs.csv").read_text().splitlines()
    assert len(rows) == 9 and (out / "report" / "scores.png").stat().st_size > 0

    cfg = dataclasses.replace(cfg, report=False)
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 0
    assert len(calls(out)) == 8  # nothing reran

    killed = out / "hopper-medium-standin-cosformer-K20-s1"
    (killed / "eval.json").unlink()
    (killed / "train_summary.json").unlink()
    assert {c.run_dir.name: c.status for c in expand_grid(cfg)}[killed.name] == "resume"
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 0
    again = calls(out)[8:]
    assert again == [{**again[0], "run": killed.name, "resume": True}] and len(again) == 1

    longer = replace_config(cfg, steps=6)
    assert all(c.status == "resume" for c in expand_grid(longer))
    assert run_sweep(longer, train_fn=fake_train, reference_fn=None, progress=False) == 0
    assert [c["steps"] for c in calls(out)[9:]] == [6] * 8


def test_a_failing_cell_does_not_stop_the_others(tmp_path, capsys):
    out = tmp_path / "sweep"
    cfg = small(out, attentions=["broken", "softmax"], contexts=[5], seeds=[0], report=False)
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 1
    printed = capsys.readouterr().out
    assert "FAILED hopper-medium-standin observe=full broken K=5" in printed
    assert "this attention always diverges" in printed and "1 of 2 cell(s) done, 1 failed" in printed
    assert (out / "hopper-medium-standin-softmax-K5-s0" / "eval.json").exists()
    log = (out / "hopper-medium-standin-broken-K5-s0" / "sweep.log").read_text()
    assert "Traceback" in log and "RuntimeError: this attention always diverges" in log
    results = {Path(r["run_dir"]).name: r for r in json.loads((out / "sweep_results.json").read_text())}
    assert results["hopper-medium-standin-broken-K5-s0"]["ok"] is False
    assert results["hopper-medium-standin-softmax-K5-s0"]["ok"] is True


def test_parallel_cells_run_in_fresh_processes(tmp_path):
    out = tmp_path / "sweep"
    cfg = small(out, attentions=["softmax", "broken"], contexts=[5], seeds=[0, 1], jobs=2, report=False)
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None, progress=False) == 1
    log = calls(out)
    assert len(log) == 4
    pids = {c["pid"] for c in log}
    assert len(pids) == 4 and os.getpid() not in pids  # one fresh process per cell
    assert all((out / f"hopper-medium-standin-softmax-K5-s{s}" / "eval.json").exists() for s in (0, 1))


def test_the_timing_probe_of_a_sweep_that_evaluates_during_training(tmp_path, capsys):
    cfg = small(tmp_path / "sweep", attentions=["softmax"], contexts=[3], seeds=[0], eval_every=2,
                eval_episodes=1, eval_envs=1, embed_dim=16, n_layers=1, batch_size=4, dry_run=True,
                probe_steps=1)
    assert run_sweep(cfg, reference_fn=None) == 0
    printed = capsys.readouterr().out
    assert "timing probe failed" not in printed and "estimate for 1 cell(s) to run" in printed
    assert not (tmp_path / "sweep").exists()


def test_dry_run_prints_the_grid_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    done = small(out, attentions=["softmax"], contexts=[5], seeds=[0], report=False)
    assert run_sweep(done, train_fn=fake_train, reference_fn=None, progress=False) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    cfg = small(out, attentions=["softmax", "cosformer"], contexts=[5, 1000], seeds=[0], batch_size=64,
                dry_run=True, probe_steps=0)
    assert run_sweep(cfg, train_fn=fake_train, reference_fn=None) == 0
    printed = capsys.readouterr().out
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert len(calls(out)) == 1
    assert "grid: 4 cell(s): 1 done, 0 to re-evaluate, 0 to resume, 3 new" in printed
    assert "[done    ] hopper-medium-standin observe=full softmax K=5 seed=0" in printed
    assert "[new     ] hopper-medium-standin observe=full cosformer K=1000 seed=0" in printed
    assert "warning: softmax at K=1000" in printed and "warning: softmax at K=5" not in printed
    assert "dry run: nothing written" in printed


def test_real_tiny_sweep_skips_and_resumes(tmp_path, capsys):
    out = tmp_path / "sweep"
    cfg = small(out, datasets=["default"], attentions=["cosformer"], contexts=[2], seeds=[0], embed_dim=16,
                n_layers=1, batch_size=4, warmup_steps=1, eval_episodes=1, eval_envs=1, eval_targets=[1800.0],
                checkpoint_every=2, report=False)
    assert run_sweep(cfg, reference_fn=None, progress=False) == 0
    run = out / "default-cosformer-K2-s0"
    ev = json.loads((run / "eval.json").read_text())
    assert ev["train_steps"] == 4 and ev["context"] == 2 and len(ev["results"]) == 1
    stamp = (run / "eval.json").stat().st_mtime_ns
    assert run_sweep(cfg, reference_fn=None, progress=False) == 0
    assert (run / "eval.json").stat().st_mtime_ns == stamp  # finished: skipped
    # Other evaluation targets: evaluated again, not retrained.
    other = replace_config(cfg, eval_targets=[900.0, 1800.0])
    assert [c.status for c in expand_grid(other)] == ["evaluate"]
    weights = (run / "checkpoint.pt").read_bytes()
    assert run_sweep(other, reference_fn=None, progress=False) == 0
    assert [r["target"] for r in json.loads((run / "eval.json").read_text())["results"]] == [900.0, 1800.0]
    assert (run / "checkpoint.pt").read_bytes() == weights
    assert [c.status for c in expand_grid(other)] == ["done"]
    assert [c.status for c in expand_grid(replace_config(other, eval_episodes=2))] == ["evaluate"]
    assert [c.status for c in expand_grid(replace_config(other, eval_targets=None))] == ["done"]
    longer = replace_config(other, steps=6)
    assert [c.status for c in expand_grid(longer)] == ["resume"]
    assert run_sweep(longer, reference_fn=None, progress=False) == 0
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 6
    assert json.loads((run / "eval.json").read_text())["train_steps"] == 6
    assert "(resume=True)" in (run / "sweep.log").read_text()
    # Exact by default; a streaming evaluation, when asked, is evaluated for the finished cell, not retrained,
    # into eval-streaming.json beside the exact eval.json, and printed as approximate.
    assert json.loads((run / "eval.json").read_text())["rollout"] == "exact"
    streaming = replace_config(longer, rollout="streaming")
    assert [c.status for c in expand_grid(streaming)] == ["evaluate"]
    capsys.readouterr()
    assert run_sweep(streaming, reference_fn=None, progress=False) == 0
    approx = json.loads((run / "eval-streaming.json").read_text())
    assert approx["rollout"] == "streaming" and approx["eval_config"]["rollout"] == "streaming"
    assert approx["train_steps"] == 6 and json.loads((run / "eval.json").read_text())["rollout"] == "exact"
    assert approx["method"].startswith("streaming (approximate): sliding window of 5 tokens per layer")
    assert [c.status for c in expand_grid(streaming)] == ["done"]
    assert "(streaming (approximate))" in capsys.readouterr().out
    assert [c.status for c in expand_grid(longer)] == ["done"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_sigterm_to_a_parallel_sweep_stops_its_workers(tmp_path):
    out = tmp_path / "sweep"
    root = Path(__file__).resolve().parents[1]
    script = f"""
import sys
sys.path.insert(0, {str(root)!r})
from agents.config import TrainConfig
from experiments.commands.sweep import SweepConfig, run
from tests.test_sweep import sleepy_train
cfg = SweepConfig(datasets=["hopper-medium-standin"], attentions=["softmax"], contexts=[5], seeds=[0, 1, 2],
                  train=TrainConfig(steps=4), out_dir={str(out)!r}, jobs=2, threads_per_job=1, report=False)
sys.exit(run(cfg, train_fn=sleepy_train, reference_fn=None, progress=False))
"""
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(calls(out)) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
        workers = [c["pid"] for c in calls(out)]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGTERM)
        _, stderr = parent.communicate(timeout=60)
        assert parent.returncode == 143 and "sweep interrupted: rerun the same command" in stderr  # as train
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
        assert len(calls(out)) == 2  # the queued third cell never started
    finally:
        parent.kill()
        for c in calls(out):
            if _alive(c["pid"]):
                os.kill(c["pid"], signal.SIGKILL)


def test_estimate_counts_training_only_for_cells_that_train(tmp_path):
    cfg = small(tmp_path, attentions=["softmax"], contexts=[5], seeds=[0, 1, 2, 3], steps=60, jobs=1)
    cells = [dataclasses.replace(c, status=s) for c, s in zip(expand_grid(cfg),
                                                              ("new", "resume", "evaluate", "done"))]
    probe = {sweep.probe_key(cells[0]): {"train_s_per_step": 1.0, "eval_s": 30.0}}
    # new + resume train 60 s each; new, resume and evaluate each evaluate for 30 s; done costs nothing
    text = sweep.format_estimate(cfg, cells, probe)
    assert "3 cell(s) to run: training 2.0 min + evaluation 1.5 min = 3.5 min" in text
    # an evaluation at step 30 of 60 besides the final one
    probe[sweep.probe_key(cells[0])].update(eval_ms_per_env_step=0.5)
    text = sweep.format_estimate(replace_config(cfg, eval_every=30), cells, probe)
    # new and resume: 2 evaluations x 30 s each; evaluate: 1 x 30 s
    assert "training 2.0 min + evaluation 2.5 min = 4.5 min" in text and "eval 0.50 ms/env step" in text


def test_estimate_prices_each_dataset_by_its_own_probe(tmp_path):
    """At equal targets per step, K=1000 is batch 6 on hopper and 1 on halfcheetah: one dataset's probe
    must not price another's cells."""
    cfg = small(tmp_path, datasets=["hopper-medium-standin", "default"], attentions=["softmax"], contexts=[5],
                seeds=[0], steps=60, jobs=1)
    cells = expand_grid(cfg)
    probe = {sweep.probe_key(c): {"train_s_per_step": cost, "eval_s": 0.0}
             for c, cost in zip(cells, (1.0, 3.0))}
    assert len(probe) == 2
    text = sweep.format_estimate(cfg, cells, probe)
    assert "2 cell(s) to run: training 4.0 min" in text  # 60 steps x 1 s + 60 steps x 3 s
    assert "hopper-medium-standin" in text and "default" in text


def test_cell_output_reaches_its_log_as_it_is_printed(tmp_path):
    seen = {}

    def chatty_train(cfg: TrainConfig, progress: bool = True) -> dict:
        print("step 2: normalized target 1800: 12.5")
        seen["log"] = (Path(cfg.run_dir) / "sweep.log").read_text()  # while the cell is still running
        return fake_train(cfg, progress)

    cfg = small(tmp_path / "sweep", attentions=["softmax"], contexts=[5], seeds=[0], report=False)
    assert run_sweep(cfg, train_fn=chatty_train, reference_fn=None, progress=False) == 0
    assert "step 2: normalized target 1800: 12.5" in seen["log"]
