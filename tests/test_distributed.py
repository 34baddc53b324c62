"""Multi-process training with DistributedDataParallel (gloo on CPU), launched by torchrun: the ranks train
the one-process model, resume after kill -9, only rank 0 writes files, and a write it fails stops them all."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from proc_utils import HAS_PROC, kill_pids, process_tree

from agents import distributed
from agents.checkpoint import load_checkpoint
from agents.config import TrainConfig
from agents.sampler import SegmentSampler
from agents.trainer import Trainer, action_loss

ROOT = Path(__file__).resolve().parents[1]
GUARD = Path(__file__).with_name("rank_guard.py")
needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no gloo backend")
needs_proc = pytest.mark.skipif(not HAS_PROC, reason="finds the launched processes in /proc")

# K=50 on the embedded hopper sample (episodes of 158 steps on average): about a third of the segments are
# left-padded, so the ranks' shares of a batch hold different numbers of real targets; batch 7 splits 4 + 3.
TINY = {"dataset": "default", "attention": "cosformer", "context": 50, "embed_dim": 16, "n_layers": 1,
        "n_heads": 1, "batch_size": 7, "warmup_steps": 2, "log_every": 2, "eval_episodes": 0, "seed": 0,
        "threads": 1}


def config(run_dir: Path, **over) -> TrainConfig:
    return TrainConfig(**{**TINY, "run_dir": str(run_dir), **over})


def cli_args(cfg: TrainConfig) -> list[str]:
    """The `dt-attn train` flags of ``cfg``."""
    args = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None or value == {} or f.name == "resume":
            continue
        flag = "--" + f.name.replace("_", "-")
        args += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return args + (["--resume"] if cfg.resume else [])


def launch(cfg: TrainConfig, guard: Path, nproc: int = 2, **popen) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node N dt-attn train`` (this tree's code) with writes of ranks > 0
    under ``guard`` fatal; ``popen``: more arguments for ``subprocess.Popen``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(GUARD), "train", *cli_args(cfg)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DT_ATTN_RANK_GUARD": str(guard), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=guard, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def torchrun(cfg: TrainConfig, guard: Path, nproc: int = 2, expect_ok: bool = True, **popen) -> str:
    """Run ``launch`` to the end; its output (and, with ``expect_ok``, the check that it succeeded). Leaves
    no process behind, also when it fails or hangs."""
    proc = launch(cfg, guard, nproc, **popen)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            kill_pids(process_tree(proc.pid))
            proc.communicate()
    assert proc.returncode == 0 or not expect_ok, out[-3000:]
    return out


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Wait until ``path`` exists (a launched run wrote it), the launch ends, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir)["model"]


def files(run_dir: Path) -> set[str]:
    """The run folder's files, TensorBoard's event files (named by host and pid) as their folder."""
    return {str(p.relative_to(run_dir).parent if p.parent.name == "tb" else p.relative_to(run_dir))
            for p in run_dir.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- the rules, in one process
def test_batch_slices_split_the_global_batch():
    for batch, world in ((7, 2), (8, 2), (10, 4), (3, 3)):
        parts = [distributed.batch_slice(batch, distributed.Dist(r, world)) for r in range(world)]
        sizes = [p.stop - p.start for p in parts]
        assert parts[0].start == 0 and all(a.stop == b.start for a, b in itertools.pairwise(parts))
        assert parts[-1].stop == batch and max(sizes) - min(sizes) <= 1
    assert distributed.batch_slice(7, distributed.Dist()) is None
    with pytest.raises(ValueError, match="--batch-size 1 is the global batch, split across 2 processes"):
        distributed.batch_slice(1, distributed.Dist(0, 2))


def test_ranks_draw_disjoint_slices_of_the_one_process_batch():
    rng = np.random.default_rng(0)
    lengths = (30, 50, 40)
    episodes = ([rng.normal(size=(n, 3)).astype(np.float32) for n in lengths],
                [rng.uniform(-1, 1, size=(n, 2)).astype(np.float32) for n in lengths],
                [rng.normal(size=n).astype(np.float32) for n in lengths])
    one = SegmentSampler(*episodes, 8, np.zeros(3), np.ones(3), 100.0, 1000, seed=5)
    ranks = [SegmentSampler(*episodes, 8, np.zeros(3), np.ones(3), 100.0, 1000, seed=5) for _ in range(2)]
    for _ in range(3):  # the streams stay in step, batch after batch
        whole = one.sample(7)
        parts = [s.sample(7, distributed.batch_slice(7, distributed.Dist(r, 2))) for r, s in enumerate(ranks)]
        for field in ("states", "actions", "rtg", "timesteps", "pad_mask"):
            assert torch.equal(torch.cat([getattr(p, field) for p in parts]), getattr(whole, field))
    assert [s.get_rng_state() for s in ranks] == [one.get_rng_state()] * 2


def test_one_process_loss_is_unchanged():
    torch.manual_seed(0)
    from agents.model import DecisionTransformer, DTConfig
    from agents.trainer import action_error
    from dt_attn import TransformerConfig

    model = DecisionTransformer(DTConfig(state_dim=3, act_dim=2, context=6,
                                         transformer=TransformerConfig(embed_dim=8, n_layers=1, dropout=0.0)))
    rng = np.random.default_rng(1)
    sampler = SegmentSampler([rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 9)],
                             [rng.uniform(-1, 1, size=(n, 2)).astype(np.float32) for n in (4, 9)],
                             [rng.normal(size=n).astype(np.float32) for n in (4, 9)], 6, np.zeros(3),
                             np.ones(3), 10.0, 100, 0)
    batch = sampler.sample(5)
    loss, local = distributed.global_loss(*action_error(model, batch), distributed.Dist())
    assert loss is local and torch.equal(loss, action_loss(model, batch))
    assert distributed.rank_seed(0, 1) != distributed.rank_seed(0, 2) != distributed.rank_seed(0, 1, 10)


# ----------------------------------------------------------------------------- torchrun, 2 processes (gloo)
@needs_gloo
@needs_proc
def test_two_ranks_train_the_one_process_model_and_only_rank_0_writes(tmp_path):
    """Global batch 7 over 2 ranks (4 + 3 segments, different numbers of real targets) reaches the weights of
    one process drawing the same 7 segments: the loss is normalized over the global batch's real targets."""
    ddp = config(tmp_path / "ddp", steps=4, checkpoint_every=2, dropout=0.0, eval_episodes=1,
                 eval_targets=[1800.0])
    out = torchrun(ddp, tmp_path)
    assert "2 processes (DDP), global batch 7" in out and out.count("run directory:") == 1
    one = Trainer(config(tmp_path / "one", steps=4, checkpoint_every=2, dropout=0.0), progress=False)
    initial = {k: v.clone() for k, v in one.model.state_dict().items()}
    one.train()
    for name, w in weights(tmp_path / "ddp").items():
        torch.testing.assert_close(w, one.model.state_dict()[name], rtol=1e-5, atol=1e-7, msg=name)
    # training moved them
    assert any(not torch.equal(initial[k], v) for k, v in one.model.state_dict().items())
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["processes"] == 2
    assert json.loads((tmp_path / "ddp" / "eval.json").read_text())["train_steps"] == 4  # evaluated once
    assert files(tmp_path / "ddp") == files(tmp_path / "one") | {"eval.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "one"]  # nothing written elsewhere

    # Resumed by one process (another world size): the same global batches continue, exactly re-split.
    shutil.copytree(tmp_path / "ddp", tmp_path / "resplit")
    resumed = Trainer(config(tmp_path / "resplit", steps=6, checkpoint_every=2, dropout=0.0, resume=True),
                      progress=False)
    assert resumed.step == 4
    resumed.train()
    straight = Trainer(config(tmp_path / "straight", steps=6, checkpoint_every=2, dropout=0.0),
                       progress=False)
    straight.train()
    for name, w in resumed.model.state_dict().items():
        torch.testing.assert_close(w, straight.model.state_dict()[name], rtol=1e-5, atol=1e-7, msg=name)


@needs_gloo
@needs_proc
def test_two_rank_run_resumes_after_kill_9_to_the_uninterrupted_weights(tmp_path):
    """Killed (SIGKILL to torchrun and both ranks) after a checkpoint, resumed with --resume: the same final
    weights, bit for bit, dropout on (each rank's own random stream is restored)."""
    steps = 150
    full = config(tmp_path / "full", steps=steps, checkpoint_every=5, dropout=0.1)
    torchrun(full, tmp_path)

    killed = dataclasses.replace(full, run_dir=str(tmp_path / "killed"))
    proc = launch(killed, tmp_path)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    try:
        wait_for_file(ckpt, proc)
        tree = process_tree(proc.pid)
        kill_pids(tree)
        assert len(tree) >= 3  # torchrun and its two ranks
    finally:
        kill_pids(process_tree(proc.pid))
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    at = load_checkpoint(ckpt)["step"]
    assert 0 < at < steps and not (tmp_path / "killed" / "train_summary.json").exists()

    torchrun(dataclasses.replace(killed, resume=True), tmp_path)
    assert json.loads((tmp_path / "killed" / "train_summary.json").read_text())["steps"] == steps
    final, resumed = weights(tmp_path / "full"), weights(tmp_path / "killed")
    for name, w in final.items():
        assert torch.equal(w, resumed[name]), name


@needs_gloo
@needs_proc
def test_a_failed_checkpoint_write_stops_every_rank_with_one_error(tmp_path):
    """Rank 0's checkpoint write fails (a full disk): every rank stops with exit code 2 rather than wait at
    the next collective, the error is printed once, and the previous checkpoint is kept."""
    run = config(tmp_path / "run", steps=2, checkpoint_every=1)
    torchrun(run, tmp_path)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    before = ckpt.read_bytes()

    def small_files():  # writes past half a checkpoint fail, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, len(before) // 2))

    out = torchrun(dataclasses.replace(run, steps=4, resume=True), tmp_path, expect_ok=False,
                   preexec_fn=small_files)
    assert "rank 0 exit 2" in out and "rank 1 exit 2" in out, out[-3000:]
    assert out.count(f"error: could not write {ckpt}: File too large; the last good checkpoint") == 1, out
    assert ckpt.read_bytes() == before and not list(ckpt.parent.glob(".*.tmp"))


def _rank_pid(pids: list[int], rank: int) -> int | None:
    """The process among ``pids`` that torchrun started as ``rank``."""
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"TORCHELASTIC_RUN_ID" in b" ".join(environ):
            return pid
    return None


@needs_gloo
@needs_proc
def test_a_rank_killed_mid_run_stops_the_other_with_one_line(tmp_path):
    """kill -9 of rank 1: rank 0 prints one line naming itself and what happened, no gloo traceback, and
    exits 2; the last checkpoint is kept."""
    run = config(tmp_path / "run", steps=1_000_000, checkpoint_every=5)
    proc = launch(run, tmp_path)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    try:
        wait_for_file(ckpt, proc)
        victim = _rank_pid(process_tree(proc.pid), 1)
        assert victim is not None and ckpt.exists()
        kill_pids([victim])
        out, _ = proc.communicate(timeout=120)
    finally:
        kill_pids(process_tree(proc.pid))
        proc.communicate()
    assert "error: rank 0 of 2: another rank of this DDP run stopped (" in out, out[-3000:]
    assert "the last checkpoint is kept: relaunch with --resume" in out
    assert "[rank0]: Traceback" not in out and "rank 0 exit 2" in out
    assert load_checkpoint(ckpt)["step"] % 5 == 0
