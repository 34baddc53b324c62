"""Training loop: seeded sampling, AdamW with warmup, atomic checkpoints, exact resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import resource
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents import distributed
from agents.atomic import WriteError, remove_temp_files, write_json
from agents.checkpoint import CHECKPOINT_NAME, load_checkpoint, non_finite_tensors, save_checkpoint
from agents.config import (
    RESUMABLE_CHANGES,
    TOKENS_PER_STEP,
    TrainConfig,
    config_differences,
    run_evaluation,
    run_name,
)
from agents.data import PreparedData, check_context, prepare_data
from agents.model import DecisionTransformer, DTConfig, attention_options_for, count_parameters
from agents.progress import progress_bar
from agents.results import evaluation_path, rollout_label, software_versions
from agents.sampler import Batch, SegmentSampler
from agents.upgrade import FORMAT, read_evaluation
from dt_attn import TransformerConfig


def log_eval_to_tensorboard(run_dir: str | Path, step: int, result: dict[str, Any]) -> None:
    """Add an evaluation result's per-target returns and normalized scores to the run's TensorBoard log."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(run_dir) / "tb")) as writer:
        _log_eval(writer, step, result)


def _log_eval(writer: Any, step: int, result: dict[str, Any]) -> None:
    """The result's scalars under eval/ (exact rollout) or eval_streaming/ (the approximate one)."""
    section = "eval" if result["rollout"] == "exact" else "eval_streaming"
    for rec in result["results"]:
        tag = f"target_{rec['target']:g}"
        for key in ("return_mean", "return_std", "normalized_mean", "normalized_std", "length_mean"):
            writer.add_scalar(f"{section}/{tag}/{key}", rec[key], step)


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss, the gradients or the weights become NaN or infinite."""


# Fields spelled out in a default run folder's name; the others that change what is trained (not those a
# resume may change) add a hash suffix when they differ from the defaults.
_NAMED_FIELDS = {"dataset", "observe", "attention", "context", "seed"}


def default_run_dir(cfg: TrainConfig) -> Path:
    """runs/<run_name(...)>, plus -<8 hex digits> hashing the settings that differ from the defaults, so runs
    that differ only in, say, lr or size get folders of their own. A resume finds a run begun under the
    older name without the suffix."""
    base = run_name(cfg.dataset, cfg.observe, cfg.attention, cfg.context, cfg.seed)
    defaults = asdict(TrainConfig())
    changed = {k: v for k, v in asdict(cfg).items()
               if k not in _NAMED_FIELDS and k not in RESUMABLE_CHANGES and v != defaults[k]}
    if not changed:
        return Path("runs") / base
    digest = hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    path, legacy = Path("runs") / f"{base}-{digest}", Path("runs") / base
    if cfg.resume and not path.exists() and (legacy / CHECKPOINT_NAME).exists():
        return legacy  # its saved config is checked against cfg like any other resume
    return path


def resolve_run_dir(cfg: TrainConfig) -> Path:
    """The run folder of a training config: its run_dir, else ``default_run_dir``."""
    return Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)


def build_model(cfg: TrainConfig, data: PreparedData) -> DecisionTransformer:
    """The Decision Transformer described by a training config and its data."""
    return DecisionTransformer(DTConfig(
        state_dim=data.state_dim,
        act_dim=data.act_dim,
        context=cfg.context,
        max_ep_len=data.max_ep_len,
        init=cfg.init,
        init_std=cfg.init_std,
        embed_dropout=cfg.embed_dropout,
        transformer=TransformerConfig(
            embed_dim=cfg.embed_dim,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout,
            activation=cfg.activation,
            attention=cfg.attention,
            attention_options=attention_options_for(cfg.attention, cfg.attention_options, cfg.context),
            mlp=cfg.mlp,
            moe_aux_weight=cfg.moe_aux_weight,
        ),
    ))


def action_loss(model: DecisionTransformer, batch: Batch) -> torch.Tensor:
    """Mean squared error of predicted actions over real (unpadded) steps, in float32 (also when the
    model ran under autocast)."""
    error_sum, targets = action_error(model, batch)
    return error_sum / targets


def action_error(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed squared error of predicted actions over real steps, number of real target values), in float32;
    their ratio is ``action_loss``, a DDP run divides by the count over all ranks."""
    pred = model(batch.states, batch.actions, batch.rtg, batch.timesteps, batch.pad_mask).float()
    keep = (~batch.pad_mask).unsqueeze(-1).to(pred.dtype)
    return ((pred - batch.actions) ** 2 * keep).sum(), keep.sum() * pred.shape[-1]


def auxiliary_loss(model: torch.nn.Module) -> torch.Tensor | None:
    """The auxiliary loss of the model's last forward pass (the experts' weighted load-balancing loss,
    ``DecisionTransformer.aux_loss``), None for a model without one."""
    aux = getattr(model, "aux_loss", None)
    return aux() if aux is not None else None


def _routing(model: torch.nn.Module, aux: torch.Tensor | None) -> list[tuple[str, float]]:
    """TensorBoard scalars of the last forward pass's routing: the auxiliary loss and, per mixture-of-experts
    layer, the share of routed (token, choice) pairs each expert received."""
    if aux is None:
        return []
    rows = [("train/aux_loss", aux.item())]
    for layer, counts in enumerate(model.tokens_per_expert()):
        total = max(1, int(counts.sum()))
        rows += [(f"moe/layer{layer}/expert{e}_tokens", int(c) / total) for e, c in enumerate(counts)]
    return rows


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def training_autocast(precision: str, device: torch.device) -> Any:
    """The autocast context of a training precision (reusable, not re-entrant): bfloat16 matrix
    multiplies for "bf16", a no-op for "fp32". Warns when the CPU has no native bfloat16 support (bf16 then
    runs slower than fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; use fp32 or bf16")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{device} has no bfloat16 support (it needs an Ampere or newer GPU); use "
                         "--precision fp32")
    if device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("this CPU has no native bfloat16 support (AVX512-BF16/AMX): --precision bf16 will be "
                      "slower than fp32 here", stacklevel=2)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, the process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    diffs = config_differences(saved, cfg)
    if diffs:
        raise ValueError(
            f"cannot resume {path}: config differs from the saved run in {', '.join(diffs)}; "
            "use the saved values or a new --run-dir"
        )


class _NoWriter:
    """Stands in for TensorBoard's SummaryWriter on DDP ranks other than 0, which write no files."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    """One training run: owns the model, optimizer, sampler, logs and checkpoints. Under torchrun it is one
    rank of a DDP run (agents.distributed): rank 0 alone reads and writes the run folder."""

    def __init__(self, cfg: TrainConfig, progress: bool = True,
                 build: Callable[[TrainConfig, PreparedData], torch.nn.Module] = build_model) -> None:
        """``build`` makes the network from the config and data (another architecture with the same
        forward signature can be trained by the same loop, as the model-parity benchmark does)."""
        self.cfg = cfg
        self.progress = progress
        self.run_dir = resolve_run_dir(cfg)
        self.dist = distributed.current()
        self.device = distributed.device_for(distributed.resolve_device(cfg.device), self.dist)
        self.batch_part = distributed.batch_slice(cfg.batch_size, self.dist)  # this rank's share of a batch
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ckpt = self.run_dir / CHECKPOINT_NAME
        payload = distributed.on_main(lambda: self._checkpoint_to_resume(ckpt), self.dist)
        if self.dist.is_main:
            for folder in (self.run_dir, self.run_dir / "evals"):  # left by a process killed mid-write
                remove_temp_files(folder)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        with distributed.local_main_first(self.dist):  # one download per node, not one per process
            self.data = prepare_data(cfg.dataset, cfg.env, cfg.observe, cfg.seed, cfg.split_long_episodes)
        self.data_fingerprint = self.data.dataset.fingerprint()
        check_context(cfg.context, self.data.max_ep_len)
        self.model = build(cfg, self.data).to(self.device)
        self.autocast = training_autocast(cfg.precision, self.device)  # re-entered every step
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = max(1, cfg.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda s: min(1.0, (s + 1) / warmup))
        ds = self.data.dataset
        self.sampler = SegmentSampler(
            [e.observations for e in ds.episodes], [e.actions for e in ds.episodes],
            [e.rewards for e in ds.episodes], cfg.context, self.data.state_mean, self.data.state_std,
            cfg.rtg_scale, self.data.max_ep_len, cfg.seed,
        )
        self.step = 0
        self._last_saved = 0  # step of the newest checkpoint on disk
        self.train_time = 0.0
        if self.dist.rank:  # every rank built the same weights; each draws its own dropout masks
            torch.manual_seed(distributed.rank_seed(cfg.seed, self.dist.rank))
        if payload is not None:
            self._restore(payload, ckpt)
        # the model itself for one process
        self.ddp_model = distributed.wrap(self.model, self.dist, self.device)
        # Dropout draws from torch's global generator: pin its state now so that the run does
        # not depend on what else used the generator between construction and train().
        self._torch_rng = torch.get_rng_state()

    # ------------------------------------------------------------ checkpoints
    def _checkpoint_to_resume(self, ckpt: Path) -> dict[str, Any] | None:
        """The checkpoint payload to continue from (None for a fresh run); refuses a mismatch of --resume
        and the run folder."""
        if ckpt.exists() and not self.cfg.resume:
            raise FileExistsError(
                f"{self.run_dir} already holds a checkpoint; pass --resume to continue it or choose "
                "another --run-dir"
            )
        if self.cfg.resume and not ckpt.exists():
            raise FileNotFoundError(f"--resume given but {ckpt} does not exist; start without --resume")
        return load_checkpoint(ckpt) if self.cfg.resume else None

    def _rank_rng(self) -> dict[str, Any]:
        """This rank's own random state (its dropout stream), for a DDP checkpoint."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"torch": torch.get_rng_state(), "cuda": cuda}

    def _payload(self) -> dict[str, Any]:
        ranks = distributed.gather(self._rank_rng(), self.dist) if self.dist.enabled else None
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "model_config": asdict(self.model.cfg),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "train_time_s": self.train_time,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy_global": np.random.get_state(),
                "python": random.getstate(),
                "sampler": self.sampler.get_rng_state(),  # the same on every rank
                **({"ranks": ranks} if ranks else {}),
            },
            "world_size": self.dist.world_size,
            "normalization": {"state_mean": self.data.state_mean, "state_std": self.data.state_std},
            "config": asdict(self.cfg),
            "data": {
                "name": self.data.dataset.name, "label": self.data.dataset.label,
                "env_name": self.data.env_name, "env_id": self.data.env_id, "observe": self.data.observe,
                "state_dim": self.data.state_dim, "act_dim": self.data.act_dim,
                "default_targets": list(self.data.default_targets),
                "ref_scores": getattr(self.data.dataset, "ref_scores", None),
                "fingerprint": self.data_fingerprint,
            },
        }

    def _evaluate_now(self, writer: Any, bar: Any) -> float:
        """Evaluate the current weights from a checkpoint written now (RUN_DIR/evals/step-N.json, or
        step-N-streaming.json, and TensorBoard) without touching training's random state; returns the
        seconds it took."""
        from agents.evaluation import evaluate

        start = time.perf_counter()
        if self._last_saved != self.step:
            self.save()
            self._last_saved = self.step
        eval_cfg = run_evaluation(self.cfg, self.run_dir / CHECKPOINT_NAME, self._eval_path())
        with torch.random.fork_rng(devices=[]):  # building the policy draws initial weights
            result = evaluate(eval_cfg, progress=False, print_table=False)
        _log_eval(writer, self.step, result)
        scores = ", ".join(f"target {r['target']:g}: {r['normalized_mean']:.1f}" for r in result["results"])
        bar.write(f"step {self.step}: normalized {scores} ({rollout_label(result['rollout'])})")
        return time.perf_counter() - start

    def _eval_path(self) -> Path:
        """Where the evaluation during training at the current step writes its result."""
        return evaluation_path(self.run_dir / "evals" / f"step-{self.step:07d}.json", self.cfg.rollout)

    def _due_evaluation_missing(self) -> bool:
        """Whether ``eval_every`` asks for an evaluation at the current step (the step of a resumed
        checkpoint) whose result is not on disk, or is not of the rollout the run asks for."""
        cfg = self.cfg
        if not (cfg.eval_every and cfg.eval_episodes and self.step and self.step % cfg.eval_every == 0
                and self.step < cfg.steps):
            return False
        try:
            held = read_evaluation(self._eval_path())
        except (OSError, ValueError):
            return True
        return held is None or (cfg.rollout == "exact" and held["rollout"] != "exact")

    def _peak_memory_so_far(self) -> float:
        """Peak memory of this process, or of an earlier process of the same run if higher (a resumed
        run, or one resumed only to be evaluated again, must not report the smaller figure)."""
        now = peak_memory_mb(self.device)
        try:
            earlier = float(json.loads((self.run_dir / "train_summary.json").read_text())["peak_memory_mb"])
        except (OSError, ValueError, KeyError, TypeError):
            return now
        return max(now, earlier) if math.isfinite(earlier) else now

    def _kept(self) -> str:
        """What is on disk after a failure: the last checkpoint, or none."""
        if not self._last_saved:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint ({self.run_dir / CHECKPOINT_NAME}, step {self._last_saved}) is kept"

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0; under DDP every rank must call it). Non-finite weights are
        never written (NonFiniteLossError: every rank holds the same weights, so all raise together), and a
        failed write (disk full) raises WriteError with the previous checkpoint intact, on every rank."""
        bad = non_finite_tensors(self.model.state_dict())
        if bad:
            raise NonFiniteLossError(
                f"the weights became non-finite at step {self.step} ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}); not saved: {self._kept()}. Try a lower --lr."
            )
        payload = self._payload()  # a collective under DDP: it gathers every rank's random state
        try:  # rank 0 writes; the other ranks raise its failure too, rather than wait at the next collective
            distributed.on_main(lambda: save_checkpoint(self.run_dir / CHECKPOINT_NAME, payload), self.dist)
        except WriteError as exc:
            raise WriteError(exc.path, exc.reason, f"{self._kept()}; free disk space, then "
                                                   "rerun with --resume") from exc

    def _restore(self, payload: dict[str, Any], path: Path) -> None:
        _check_resumable(payload["config"], self.cfg, path)
        saved_step = int(payload["step"])
        if saved_step > self.cfg.steps:
            raise ValueError(f"cannot resume {path} with --steps {self.cfg.steps}: it is already at step "
                             f"{saved_step}; pass --steps {saved_step} or more")
        saved_fingerprint = payload["data"].get("fingerprint")  # absent in checkpoints of older versions
        if saved_fingerprint is not None and saved_fingerprint != self.data_fingerprint:
            raise ValueError(
                f"cannot resume {path}: the dataset {self.cfg.dataset!r} is not the data this run was "
                "trained on (its contents changed since the checkpoint was written); restore the original "
                "data, or train a new run with another --run-dir"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = self._last_saved = int(payload["step"])
        self.train_time = float(payload.get("train_time_s", 0.0))
        rng = payload["rng"]
        saved_world = int(payload.get("world_size", 1))
        np.random.set_state(rng["numpy_global"])
        random.setstate(rng["python"])
        self.sampler.set_rng_state(rng["sampler"])
        if saved_world == 1 and not self.dist.enabled:
            torch.set_rng_state(rng["torch"])
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        elif saved_world == self.dist.world_size:
            own = rng["ranks"][self.dist.rank]
            torch.set_rng_state(own["torch"])
            if own["cuda"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(own["cuda"], self.device)
        else:  # another number of processes: the batches continue exactly, re-split; dropout draws afresh
            torch.manual_seed(distributed.rank_seed(self.cfg.seed, self.dist.rank, self.step))
            if self.dist.is_main:
                print(f"resuming a run trained by {saved_world} process(es) with "
                      f"{self.dist.world_size}: the global batches continue exactly, split anew; "
                      "dropout masks are drawn afresh from here on")

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run until ``cfg.steps``; returns the training summary (also written to train_summary.json)."""
        cfg = self.cfg
        main = self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "config.json", {"format": FORMAT, **asdict(cfg)})
        from torch.utils.tensorboard import SummaryWriter

        writer = (SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None) if main
                  else _NoWriter())
        tokens_per_step = cfg.batch_size * TOKENS_PER_STEP * cfg.context  # the global batch
        bar = progress_bar(total=cfg.steps, initial=self.step, disable=not (self.progress and main),
                           desc="train", unit="step")
        torch.set_rng_state(self._torch_rng)
        self.model.train()
        window_start, window_steps = time.perf_counter(), 0
        try:
            # the process was killed while evaluating this checkpoint
            if main and self._due_evaluation_missing():
                window_start += self._evaluate_now(writer, bar)
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                batch = self.sampler.sample(cfg.batch_size, self.batch_part).to(self.device)
                with self.autocast:
                    error_sum, targets = action_error(self.ddp_model, batch)
                    aux = auxiliary_loss(self.model)
                loss, local_loss = distributed.global_loss(error_sum, targets, self.dist)
                if aux is not None:  # the experts' load balancing, already weighted by moe_aux_weight
                    local_loss = local_loss + aux
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss became {loss.item()} at step {self.step + 1}; stopping: {self._kept()}. "
                        "Try a lower --lr or check the dataset for extreme values."
                    )
                self.optimizer.zero_grad(set_to_none=True)
                local_loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                # an update from these gradients would make every weight NaN
                if not torch.isfinite(grad_norm):
                    raise NonFiniteLossError(
                        f"the gradients became non-finite at step {self.step + 1} (loss {loss.item():.4g}); "
                        f"the update was not applied; stopping: {self._kept()}. Try a lower --lr or "
                        "--grad-clip, or check the dataset for extreme values."
                    )
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                self.train_time += time.perf_counter() - t0
                window_steps += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    elapsed = time.perf_counter() - window_start
                    sps = window_steps / elapsed if elapsed > 0 else float("nan")
                    lr = self.scheduler.get_last_lr()[0]
                    for tag, val in (("train/loss", loss.item()), ("train/lr", lr),
                                     ("train/grad_norm", float(grad_norm)), ("perf/steps_per_s", sps),
                                     ("perf/tokens_per_s", sps * tokens_per_step),
                                     *_routing(self.model, aux)):
                        writer.add_scalar(tag, val, self.step)
                    shown = {"aux": f"{aux.item():.4f}"} if aux is not None else {}
                    bar.set_postfix(loss=f"{loss.item():.4f}", **shown, sps=f"{sps:.1f}")
                    window_start, window_steps = time.perf_counter(), 0
                bar.update(1)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
                    self._last_saved = self.step
                due = cfg.eval_every and cfg.eval_episodes and self.step % cfg.eval_every == 0
                if due and self.step < cfg.steps:
                    if self.dist.enabled and self._last_saved != self.step:  # every rank joins the save
                        self.save()
                        self._last_saved = self.step
                    if main:  # the other ranks wait at the next step's collective
                        # evaluation time is not training time
                        window_start += self._evaluate_now(writer, bar)
        finally:
            bar.close()
            writer.close()
        if self.step == 0 or self._last_saved != self.step:
            self.save()
        summary = {
            "steps": self.step,
            "train_time_s": self.train_time,
            "steps_per_s": self.step / self.train_time if self.train_time > 0 else float("nan"),
            "tokens_per_step": tokens_per_step,
            "targets_per_step": cfg.batch_size * self.sampler.mean_targets,  # unpadded steps, on average
            "peak_memory_mb": self._peak_memory_so_far(),
            "parameters": count_parameters(self.model),
            "device": str(self.device),
            "processes": self.dist.world_size,
            "dataset_label": self.data.dataset.label,
            "env_id": self.data.env_id,
            "observe": self.data.observe,
            "versions": software_versions(),  # of the process that finished training: its code and CPU
        }
        if main:
            write_json(self.run_dir / "train_summary.json", summary)
        return summary

