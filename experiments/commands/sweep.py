"""`dt-attn sweep`: train and evaluate a grid of datasets x observations x attentions x K x seeds.

python -m experiments.commands.sweep --datasets hopper-medium-standin --contexts 20 100 1000 --seeds 0 1 2
Every cell is one `dt-attn train` run in its own directory under --out-dir. Finished cells are
skipped, interrupted ones resumed from their checkpoint, so rerunning a killed sweep continues it;
trained cells evaluated with other episodes or targets are evaluated again, not retrained.
At the end the report (CSV, Markdown table, plots) is rebuilt into OUT_DIR/report.
Cells run in a pool of --jobs processes on this machine, or with --backend ray as Ray tasks on a cluster
(experiments.commands.sweep_ray; --out-dir must then be a path every node sees); either backend finishes a
grid the other started.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.atomic import make_folder, write_json, write_text
from agents.config import TOKENS_PER_STEP, TrainConfig, config_differences, run_name
from agents.data import check_context
from agents.fieldtypes import check_field_types, check_rules, parse_json_object
from agents.progress import progress_bar
from agents.results import rollout_label
from agents.runlock import RunLockedError, lock_owner, run_lock
from agents.upgrade import final_evaluation_files, read_run_config
from envs import get_env_spec, infer_env_name, load_dataset
from experiments.commands.parent_watch import die_with_parent
from experiments.common import Command, interrupted_exit_code, sigterm_raises
from experiments.config import config_to_dict, format_config
from experiments.reporting.aggregate import ReferenceFn, load_reference, read_json

TrainFn = Callable[..., dict]  # train_and_evaluate(cfg, progress=...) -> {"train", "run_dir", "eval"}

# TrainConfig field -> the SweepConfig list that spans it
GRID_FIELDS = {"dataset": "datasets", "observe": "observes", "attention": "attentions", "context": "contexts",
               "seed": "seeds"}
# TrainConfig fields the sweep sets per cell (attention_options from the per-attention options)
PER_CELL_FIELDS = ("attention_options", "run_dir", "resume", "threads")
# Warn when softmax's attention weights (batch x heads x (3K)^2 floats per layer) may exceed this.
SOFTMAX_WARN_BYTES = 2**30
PROBE_EVAL_STEPS = 20
LOG_NAME = "sweep.log"
BACKENDS = ("local", "ray")


@dataclass
class SweepConfig:
    """Every value of a sweep: the grid lists, how the cells run, and ``train``, the training config every
    cell starts from (its fields are the sweep's flags and config keys too: --steps, --embed-dim, ...)."""

    datasets: list[str] = field(default_factory=lambda: ["default"], metadata={"help": "dataset specs"})
    observes: list[str] = field(default_factory=lambda: ["full"], metadata={"help": "observation filters"})
    attentions: list[str] = field(default_factory=lambda: ["softmax", "cosformer", "combiner-fixed"],
                                  metadata={"help": "attention mechanisms"})
    contexts: list[int] = field(default_factory=lambda: [20],
                                metadata={"help": "context lengths K (1000 = whole episode)"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "training seeds"})
    attention_options: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"help": "options per attention as JSON, e.g. '{\"cosformer\": {\"chunk_size\": 64}}'"})
    targets_per_step: int | None = field(
        default=None, metadata={
            "help": "hold the action targets per step fixed: each cell trains with batch round(N / m) (at "
                    "least 1), m the mean number of real (unpadded) steps in a K-step segment of its "
                    "dataset, so every K sees about N targets per step; overrides batch_size"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={
        "set_elsewhere": (*GRID_FIELDS, *PER_CELL_FIELDS)})
    out_dir: str = field(default="runs/sweep", metadata={
        "help": "folder of the run directories and the report"})
    jobs: int = field(default=1, metadata={"help": "cells run in parallel, each in a fresh process "
                                                   "(0 = one after another in this process, for debugging)"})
    threads_per_job: int = field(default=0, metadata={
        "help": "torch CPU threads per cell (0 = cores / jobs; with --backend ray, --cpus-per-cell)"})
    backend: str = field(default="local", metadata={
        "help": "where cells run: local (--jobs processes on this machine) or ray (Ray tasks on a cluster; "
                "pip install 'dt-attn[ray]'; --out-dir must be a path every node sees)"})
    address: str | None = field(default=None, metadata={
        "help": "with --backend ray: the cluster to join, auto (the one started on this machine by "
                "`ray start`, or $RAY_ADDRESS) or HOST:PORT; unset: a Ray instance on this machine, "
                "started for this sweep"})
    connect_timeout: float = field(default=30.0, metadata={
        "help": "with --backend ray and --address: seconds to wait for the cluster to answer before the "
                "sweep gives up"})
    cpus_per_cell: float = field(default=1.0, metadata={
        "help": "with --backend ray: CPUs each cell's task holds"})
    gpus_per_cell: float = field(default=0.0, metadata={
        "help": "with --backend ray: GPUs each cell's task holds (fractions share a GPU; "
                "needs --device cuda)"})
    dry_run: bool = field(default=False, metadata={
        "help": "print the grid and a cost estimate; write nothing"})
    probe_steps: int = field(default=5, metadata={
        "help": "training steps per (attention, K) timed by --dry-run (0 = no timing probe)"})
    report: bool = field(default=True, metadata={"help": "rebuild OUT_DIR/report when the sweep ends"})

    def __post_init__(self) -> None:
        self.attention_options = parse_json_object("attention_options", self.attention_options)
        check_field_types(self)
        for name in GRID_FIELDS.values():
            values = getattr(self, name)
            if not values:
                raise ValueError(f"--{name} is empty; give at least one value")
            dupes = sorted({str(v) for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"--{name} lists {', '.join(dupes)} more than once; give each value once")
        unknown = sorted(set(self.attention_options) - set(self.attentions))
        if unknown:
            raise ValueError(f"attention_options names {unknown}, which are not in --attentions "
                             f"{self.attentions}")
        if not all(isinstance(v, dict) for v in self.attention_options.values()):
            raise ValueError('attention_options must map attention names to option objects, e.g. '
                             '{"cosformer": {"chunk_size": 64}}')
        check_rules(self, "sweep config", {
            "targets_per_step": (self.targets_per_step is None or self.targets_per_step >= 1,
                                 ">= 1, or unset"),
            **{name: (getattr(self, name) >= 0, ">= 0") for name in ("jobs", "threads_per_job",
                                                                     "probe_steps")},
            "backend": (self.backend in BACKENDS, "one of " + ", ".join(BACKENDS)),
            "cpus_per_cell": (self.cpus_per_cell > 0, "> 0"),
            "connect_timeout": (0 < self.connect_timeout < math.inf, "positive and finite"),
            "gpus_per_cell": (self.gpus_per_cell >= 0, ">= 0"),
        })
        if self.backend != "ray" and self.address is not None:
            raise ValueError("--address names a Ray cluster; add --backend ray")
        if self.address is not None and "://" in self.address:
            raise ValueError(f"--address {self.address}: Ray Client addresses are not supported (this "
                             "machine must see the output root); run the sweep on a node of the cluster "
                             "with --address auto or HOST:PORT")
        if self.gpus_per_cell > 0 and self.train.device == "cpu":
            raise ValueError("--gpus-per-cell holds GPUs that cells on --device cpu would not use; "
                             "add --device cuda")

    def batch_for(self, context: int, segment_targets: float | None = None) -> int:
        """The training batch of a cell at context ``context``: batch_size, or with targets_per_step the batch
        that gives about that many action targets per step, ``segment_targets`` per segment (K when
        unknown)."""
        if self.targets_per_step is None:
            return self.train.batch_size
        return max(1, round(self.targets_per_step / (segment_targets or context)))

    def threads(self) -> int:
        """Torch threads per cell: threads_per_job, else the cores shared evenly by the jobs (a Ray task's
        CPUs with --backend ray)."""
        if self.backend == "ray":
            return self.threads_per_job or max(1, int(self.cpus_per_cell))
        return self.threads_per_job or max(1, (os.cpu_count() or 1) // max(1, self.jobs))


@dataclass(frozen=True)
class Cell:
    """One grid point: the training config of its run and its state on disk."""

    cfg: TrainConfig
    status: str  # "done", "evaluate", "resume" or "new"

    @property
    def run_dir(self) -> Path:
        """The cell's run directory."""
        return Path(self.cfg.run_dir or "")

    segment_targets: float | None = None  # mean real steps per K-step segment, when the sweep needed it

    def describe(self) -> str:
        """dataset observe attention K seed batch, for one line of output."""
        c = self.cfg
        targets = (f" (~{c.batch_size * self.segment_targets:.0f} targets/step)"
                   if self.segment_targets is not None else "")
        return (f"{c.dataset} observe={c.observe} {c.attention} K={c.context} seed={c.seed} "
                f"batch={c.batch_size}{targets}")


def cell_status(run_dir: Path, steps: int, eval_episodes: int = 0, eval_targets: list[float] | None = None,
                rollout: str = "exact") -> str:
    """'done' (trained to ``steps`` and evaluated as asked, with ``rollout``), 'evaluate' (trained, but no
    final evaluation of those steps, episodes, targets and rollout), 'resume' (a checkpoint exists) or
    'new'."""
    summary = read_json(run_dir / "train_summary.json", tolerant=True)
    if summary is not None and summary.get("steps") == steps:
        if eval_episodes <= 0:
            return "done"
        try:
            found = [record for _, record in final_evaluation_files(run_dir)]
        except (OSError, ValueError):  # a damaged file: evaluate again
            return "evaluate"
        if any(_evaluated_as_asked(ev, steps, eval_episodes, eval_targets) and _rollout_as_asked(ev, rollout)
               for ev in found):
            return "done"
        return "evaluate"
    return "resume" if (run_dir / "checkpoint.pt").exists() else "new"


def _rollout_as_asked(ev: dict[str, Any], rollout: str) -> bool:
    """Whether an evaluation answers a request for ``rollout``: any exact one answers "exact" (whichever way
    it was computed); "streaming" is answered by an evaluation that asked for it."""
    return ev["rollout"] == "exact" if rollout == "exact" else ev["eval_config"].get("rollout") == rollout


def _evaluated_as_asked(ev: dict[str, Any] | None, steps: int, episodes: int,
                        targets: list[float] | None) -> bool:
    """Whether an evaluation record is of the ``steps``-step checkpoint with these episodes and targets
    (None: the environment's default targets, whatever they were)."""
    if ev is None or ev.get("train_steps") != steps:
        return False
    results = ev.get("results") or []
    if not results or any(r.get("episodes") != episodes for r in results):
        return False
    return targets is None or (sorted(float(r.get("target", "nan")) for r in results)
                               == sorted(map(float, targets)))


def expand_grid(cfg: SweepConfig) -> list[Cell]:
    """Every (dataset, observe, attention, K, seed) cell with its TrainConfig and on-disk status."""
    base = cfg.train
    cells, seen, conflicts = [], {}, []
    for dataset in cfg.datasets:
        per_k = (segment_targets_by_context(dataset, base.env, cfg.contexts)
                 if cfg.targets_per_step is not None else {})
        for observe in cfg.observes:
            for attention in cfg.attentions:
                for context in cfg.contexts:
                    segment_targets = per_k.get(context)
                    for seed in cfg.seeds:
                        name = run_name(dataset, observe, attention, context, seed)
                        if name in seen:
                            raise ValueError(f"cells {seen[name]} and {dataset} would share the run "
                                             f"directory {name}; give datasets with distinct file names")
                        seen[name] = dataset
                        run_dir = Path(cfg.out_dir) / name
                        status = cell_status(run_dir, base.steps, base.eval_episodes, base.eval_targets,
                                             base.rollout)
                        train_cfg = dataclasses.replace(
                            base, dataset=dataset, observe=observe, attention=attention, context=context,
                            seed=seed, attention_options=dict(cfg.attention_options.get(attention, {})),
                            run_dir=str(run_dir), resume=status in ("resume", "evaluate"),
                            threads=cfg.threads(), batch_size=cfg.batch_for(context, segment_targets),
                        )
                        saved = _saved_config(run_dir)
                        if saved is not None and (diffs := config_differences(saved, train_cfg)):
                            conflicts.append(f"{run_dir}: {', '.join(diffs)}")
                        cells.append(Cell(train_cfg, status, segment_targets))
    if conflicts:
        raise ValueError(
            f"{len(conflicts)} cell(s) would reuse run directories trained with other settings (a finished "
            "one would be skipped as if it were this grid's):\n  " + "\n  ".join(conflicts)
            + "\nuse another --out-dir, or the settings those runs were trained with")
    return cells


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's training config as the current format; None when absent or unreadable."""
    try:
        return read_run_config(run_dir / "config.json")
    except (OSError, ValueError):
        return None


def segment_targets_by_context(dataset: str, env: str | None, contexts: list[int]) -> dict[int, float]:
    """Mean real (unpadded) steps in a K-step training segment of ``dataset``, per K."""
    from agents.sampler import mean_segment_targets  # torch: imported only when needed
    from envs import load_dataset

    lengths = [len(e) for e in load_dataset(dataset, env).episodes]
    return {k: mean_segment_targets(lengths, k) for k in contexts}


def softmax_memory_warnings(cells: list[Cell]) -> list[str]:
    """Warnings for softmax cells whose attention weights may not fit in memory (one per K)."""
    out = []
    largest: dict[int, TrainConfig] = {}
    for c in cells:
        if c.cfg.attention == "softmax" and c.cfg.batch_size > getattr(largest.get(c.cfg.context),
                                                                       "batch_size", 0):
            largest[c.cfg.context] = c.cfg
    for k, t in sorted(largest.items()):
        tokens = TOKENS_PER_STEP * k
        need = t.batch_size * t.n_heads * tokens**2 * 4 * t.n_layers
        if need >= SOFTMAX_WARN_BYTES:
            out.append(
                f"warning: softmax at K={k} ({tokens} tokens) may need ~{need / 2**30:.1f} GiB for attention "
                f"weights (batch {t.batch_size} x {t.n_heads} head(s) x {tokens}^2 x 4 B x {t.n_layers} "
                "layer(s)); cosFormer and Combiner do not; lower the batch or drop softmax at this K if it "
                "runs out of memory"
            )
    return out


# ----------------------------------------------------------------------------- running cells
def run_cell(cfg: TrainConfig, train_fn: TrainFn | None = None) -> dict[str, Any]:
    """Train and evaluate one cell with its output appended to RUN_DIR/sweep.log; a failure is returned."""
    if train_fn is None:
        from experiments.commands.train import train_and_evaluate as train_fn
    run_dir = Path(cfg.run_dir or ".")
    log_path = run_dir / LOG_NAME
    start = time.perf_counter()
    try:
        # held before the log opens: a cell another process runs is left alone
        with run_lock(run_dir, "--out-dir"):
            return _run_locked_cell(cfg, train_fn, log_path, start)
    except RunLockedError as exc:
        return {"ok": False, "error": str(exc), "seconds": time.perf_counter() - start}


def _run_locked_cell(cfg: TrainConfig, train_fn: TrainFn, log_path: Path, start: float) -> dict[str, Any]:
    # line-buffered: tail -f works
    with open(log_path, "a", buffering=1) as log, redirect_stdout(log), redirect_stderr(log):
        print(f"==== sweep cell started {time.strftime('%Y-%m-%d %H:%M:%S')} (resume={cfg.resume})",
              flush=True)
        try:
            out = train_fn(cfg, progress=False)
        except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the others
            traceback.print_exc()
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                    "seconds": time.perf_counter() - start, "log": str(log_path)}
    ev = out.get("eval")
    return {"ok": True, "seconds": time.perf_counter() - start, "log": str(log_path), "scores": _scores(ev),
            "rollout": (ev or {}).get("rollout")}


def _scores(result: dict[str, Any] | None) -> dict[str, float]:
    """Normalized score per target ("1800": 12.5) of an evaluation result, if any."""
    return {f"{r['target']:g}": r["normalized_mean"] for r in (result or {}).get("results", [])}


def last_log_message(path: Path) -> str | None:
    """The last line of a cell's log that is not part of a traceback's frames (None when there is none or
    the log cannot be read): what the cell said last, printed beside its failure."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))  # the end of a long log is enough
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    said = [line.strip() for line in text.replace("\r", "\n").splitlines()
            if line.strip() and not line[:1].isspace() and not line.startswith("Traceback ")]
    return said[-1] if said else None


def _run_cells(cells: list[Cell], jobs: int, train_fn: TrainFn | None, progress: bool,
               ray: SweepConfig | None = None) -> dict[Path, dict]:
    """Run ``cells``: in this process when jobs == 0, else in a pool of fresh processes, or with ``ray`` (the
    sweep's config) as Ray tasks."""
    results: dict[Path, dict] = {}
    bar = progress_bar(total=len(cells), desc="sweep", unit="cell", disable=not progress)
    running: set[Path] = set()  # cells whose Ray task reported its start

    def show() -> None:
        # the pool keeps all its processes busy while cells wait; Ray reports each task's start
        busy = len(running) if ray is not None else min(max(1, jobs), len(cells) - len(results))
        bar.set_postfix(running=busy, failed=sum(not r["ok"] for r in results.values()))

    def started(cell: Cell) -> None:
        running.add(cell.run_dir)
        show()

    def record(cell: Cell, res: dict) -> None:
        running.discard(cell.run_dir)
        results[cell.run_dir] = res
        if res["ok"]:
            scores = ", ".join(f"target {t}: {s:.1f}" for t, s in res.get("scores", {}).items())
            if scores and res.get("rollout"):
                scores += f" ({rollout_label(res['rollout'])})"
            msg = f"ok     {cell.describe()} ({res['seconds']:.0f}s){'; ' + scores if scores else ''}"
        else:
            log = Path(res.get("log", cell.run_dir / LOG_NAME))
            msg = f"FAILED {cell.describe()}: {res['error']} (log: {log})"
            said = last_log_message(log)
            if said and said not in res["error"]:
                msg += f"\n    the log's last line: {said}"
        bar.write(msg, file=sys.stdout)
        bar.update(1)
        show()

    try:
        with sigterm_raises():
            show()
            if ray is not None:
                from experiments.commands.sweep_ray import run_ray_cells

                run_ray_cells(cells, ray, train_fn, started, record)
                return results
            if jobs == 0:
                for cell in cells:
                    record(cell, run_cell(cell.cfg, train_fn))
                return results
            # spawn: no state inherited from this process (safe with CUDA and threads); one cell per
            # process so that each run's peak memory (ru_maxrss / CUDA peak) is its own.
            ctx = multiprocessing.get_context("spawn")
            extra = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=die_with_parent,
                                       initargs=(os.getpid(),), **extra)
            try:
                futures = {pool.submit(run_cell, cell.cfg, train_fn): cell for cell in cells}
                for fut in as_completed(futures):
                    try:
                        res = fut.result()
                    except Exception as exc:  # noqa: BLE001 - the worker died (killed, out of memory, ...)
                        res = {"ok": False, "error": f"worker process failed: {type(exc).__name__}: {exc}; "
                                                     "rerun the sweep to retry (finished cells are skipped)"}
                    record(futures[fut], res)
            except BaseException:
                _stop_workers(pool)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
    return results


def _stop_workers(pool: ProcessPoolExecutor, grace_s: float = 10.0) -> None:
    """Cancel queued cells and terminate running ones; each keeps its last checkpoint and resumes on rerun."""
    # The executor has no public way to stop running tasks before Python 3.14 (terminate_workers).
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


# ----------------------------------------------------------------------------- dry run
ProbeKey = tuple[str, str, int]


def probe_key(cell: Cell) -> ProbeKey:
    """What a cell's cost is probed by: its dataset (the batch and episode lengths at equal targets per
    step), attention and K; the observation filter changes only the state width and shares a probe."""
    return cell.cfg.dataset, cell.cfg.attention, cell.cfg.context


def probe_costs(cfg: SweepConfig, cells: list[Cell]) -> dict[ProbeKey, dict[str, float]]:
    """Time ``probe_steps`` training steps (after one warm-up) and a short rollout per ``probe_key``."""
    from agents.config import EvalConfig
    from agents.evaluation import evaluate
    from agents.trainer import Trainer
    from envs import get_env_spec

    out: dict[ProbeKey, dict[str, float]] = {}
    for cell in cells:
        key = probe_key(cell)
        if key in out:
            continue
        with tempfile.TemporaryDirectory(prefix="dt-attn-probe-") as tmp:
            probe = dataclasses.replace(cell.cfg, run_dir=tmp, resume=False, steps=1, checkpoint_every=10**9,
                                        eval_episodes=0, eval_every=0)
            trainer = Trainer(probe, progress=False)
            trainer.train()  # warm-up step: allocations, kernel selection
            warm = trainer.train_time
            trainer.cfg.steps = 1 + cfg.probe_steps
            trainer.train()
            train_s = (trainer.train_time - warm) / cfg.probe_steps
            entry = {"train_s_per_step": train_s, "eval_s": 0.0}
            if cell.cfg.eval_episodes > 0:
                n_envs = min(cell.cfg.eval_envs, cell.cfg.eval_episodes)
                targets = cell.cfg.eval_targets or list(trainer.data.default_targets)
                max_ep = get_env_spec(trainer.data.env_name).max_episode_steps
                # past K steps, where a K shorter than the episode costs what it costs for the rest of it
                rollout_steps = PROBE_EVAL_STEPS + (cell.cfg.context if cell.cfg.context < max_ep else 0)
                probe_eval = EvalConfig(checkpoint=tmp, episodes=n_envs, envs=n_envs, targets=targets[:1],
                                        max_steps=min(max_ep, rollout_steps), rollout=cell.cfg.rollout,
                                        threads=cell.cfg.threads, device=cell.cfg.device,
                                        output=str(Path(tmp) / "probe-eval.json"))
                env_steps = len(targets) * cell.cfg.eval_episodes * max_ep
                res = evaluate(probe_eval, progress=False, print_table=False)
                env_steps_per_s = res["results"][0]["env_steps_per_s"]
                entry["eval_s"] = env_steps / env_steps_per_s
                entry["eval_ms_per_env_step"] = 1e3 / env_steps_per_s
        out[key] = entry
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def format_estimate(cfg: SweepConfig, cells: list[Cell],
                    probe: dict[ProbeKey, dict[str, float]]) -> str:
    """Cost of the cells still to run, from the probe timings (upper bound: resumed cells count in full;
    cells that only need evaluating count no training). Evaluations count the periodic ones
    (``eval_every``)."""
    head = (f"timing probe ({cfg.probe_steps} training steps after 1 warm-up, {cells[0].cfg.threads} "
            f"thread(s), first K + {PROBE_EVAL_STEPS} rollout steps ({PROBE_EVAL_STEPS} where K holds the "
            f"episode), {rollout_label(cfg.train.rollout)}):")
    lines = [head]
    for (dataset, attention, k), p in sorted(probe.items()):
        ev = f", eval {p['eval_ms_per_env_step']:.2f} ms/env step" if "eval_ms_per_env_step" in p else ""
        lines.append(f"  {dataset:<34} {attention:<16} K={k:<5} train {p['train_s_per_step'] * 1e3:8.1f} "
                     f"ms/step{ev}")
    todo = [c for c in cells if c.status != "done"]
    train = sum(probe[probe_key(c)]["train_s_per_step"] * c.cfg.steps for c in todo if c.status != "evaluate")
    evals = 0.0
    for c in todo:
        p = probe[probe_key(c)]
        every = cfg.train.eval_every
        periodic = (c.cfg.steps - 1) // every if every and c.status != "evaluate" else 0
        evals += (1 + periodic) * p["eval_s"]
    parallel = max(1, min(cfg.jobs, len(todo)))
    lines.append(
        f"estimate for {len(todo)} cell(s) to run: training {_hours(train)} + evaluation "
        f"{_hours(evals)} = {_hours(train + evals)} of compute, about "
        f"{_hours((train + evals) / parallel)} wall with {parallel} job(s) (rough: full episodes "
        "assumed, later rollout steps cost more than the probed ones)"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the sweep
def _check_attentions(names: list[str]) -> None:
    from dt_attn import available_attentions

    known = available_attentions()
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"unknown attention(s) {bad}; available: {', '.join(known)}")


def _check_contexts(cells: list[Cell]) -> None:
    """Refuse, before any cell starts, a K longer than its environment's episodes (``check_context``, the
    rule `dt-attn train` applies); the environment is the cell's --env, else the one its dataset names,
    else the one the dataset file says."""
    limits: dict[tuple[str, str | None], int] = {}
    for c in cells:
        key = (c.cfg.dataset, c.cfg.env)
        if key not in limits:
            env = c.cfg.env or infer_env_name(c.cfg.dataset) or load_dataset(c.cfg.dataset).env_name
            limits[key] = get_env_spec(env).max_episode_steps
        check_context(c.cfg.context, limits[key])


def run_sweep(cfg: SweepConfig, train_fn: TrainFn | None = None,
              reference_fn: ReferenceFn | None = load_reference, progress: bool = True) -> int:
    """Run (or with dry_run, describe) the sweep; 0 when every cell finished, 1 when any failed.

    ``train_fn`` replaces experiments.commands.train.train_and_evaluate (it must be picklable when jobs > 0);
    ``reference_fn`` is passed to the report (None: no dataset references).
    """
    if train_fn is None:
        _check_attentions(cfg.attentions)
    if cfg.backend == "ray":
        from experiments.commands.sweep_ray import require_ray

        require_ray()  # before anything is written
    cells = expand_grid(cfg)
    if train_fn is None:
        _check_contexts(cells)
    print(f"sweep config:\n{format_config(cfg)}")
    for w in softmax_memory_warnings(cells):
        print(w)
    counts = {s: sum(c.status == s for c in cells) for s in ("done", "evaluate", "resume", "new")}
    owners = {c.run_dir: owner for c in cells if c.status != "done" and (owner := lock_owner(c.run_dir))}
    print(f"grid: {len(cells)} cell(s): {counts['done']} done, {counts['evaluate']} to re-evaluate, "
          f"{counts['resume']} to resume, {counts['new']} new"
          + (f"; {len(owners)} in use by other processes (left alone)" if owners else ""))
    for c in cells:
        owned = f" (in use by {owners[c.run_dir]})" if c.run_dir in owners else ""
        print(f"  [{c.status:<8}] {c.describe():<60} -> {c.run_dir}{owned}")
    if cfg.dry_run:
        if cfg.probe_steps and counts["done"] < len(cells):
            try:
                print(format_estimate(cfg, cells, probe_costs(cfg, [c for c in cells if c.status != "done"])))
            except Exception as exc:  # noqa: BLE001 - the estimate is a courtesy; the grid was printed
                print(f"timing probe failed, no estimate: {type(exc).__name__}: {exc}")
        print("dry run: nothing written")
        return 0
    out_dir = make_folder(cfg.out_dir, "--out-dir")
    write_text(out_dir / "sweep_config.json", json.dumps(config_to_dict(cfg), indent=2) + "\n")
    todo = [c for c in cells if c.status != "done" and c.run_dir not in owners]
    results = _run_cells(todo, cfg.jobs, train_fn, progress,
                         cfg if cfg.backend == "ray" else None) if todo else {}
    results.update({d: {"ok": False, "error": f"{d} is in use by {owner}: rerun the sweep "
                                              "when it has finished"}
                    for d, owner in owners.items()})
    failed = [c for c in cells if not results.get(c.run_dir, {"ok": True})["ok"]]
    record = [{"run_dir": str(c.run_dir), "status_before": c.status, **results.get(c.run_dir, {"ok": True})}
              for c in cells]
    write_json(out_dir / "sweep_results.json", record)
    if cfg.report:
        _report(out_dir, reference_fn, "batch" if cfg.targets_per_step is None else "targets")
    print(f"sweep finished: {len(cells) - len(failed)} of {len(cells)} cell(s) done"
          + (f", {len(failed)} failed:" if failed else ""))
    for c in failed:
        log = results[c.run_dir].get("log")
        print(f"  {c.describe()}: {results[c.run_dir]['error']}" + (f" (log: {log})" if log else ""))
    return 1 if failed else 0


def _report(out_dir: Path, reference_fn: ReferenceFn | None, lines_by: str) -> None:
    from experiments.reporting.report import build_report, print_report

    try:
        report = build_report([out_dir], out_dir / "report", reference_fn, lines_by=lines_by)
    except ValueError as exc:
        print(f"report not built: {exc}")
        return
    print_report(report)


def run(cfg: SweepConfig, **sweep_args: Any) -> int:
    """``run_sweep(cfg, **sweep_args)``; an interrupted sweep says how to continue it and exits as `train`
    does (143 after SIGTERM, 130 after Ctrl-C)."""
    try:
        return run_sweep(cfg, **sweep_args)
    except KeyboardInterrupt as exc:
        print("sweep interrupted: rerun the same command to continue (finished cells are skipped, "
              "interrupted ones resume from their last checkpoint)", file=sys.stderr)
        return interrupted_exit_code(exc)


COMMAND = Command("sweep", "train and evaluate a grid of datasets x observations x attentions x K x seeds",
                  SweepConfig, run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
