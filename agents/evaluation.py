"""Evaluate a trained checkpoint: load it, check it fits the environment, roll out, report.

``load_policy`` and ``rollout_settings`` give what any rollout of a checkpoint needs: the model, and the
run's own environment, observation filter, normalization, return scale and targets.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.atomic import check_writable, write_json
from agents.checkpoint import load_checkpoint, non_finite_tensors, resolve_checkpoint
from agents.config import EvalConfig
from agents.distributed import resolve_device
from agents.model import DecisionTransformer, DTConfig
from agents.results import (
    EVAL_FILE,
    STREAMING_SUFFIX,
    evaluation_path,
    format_eval_table,
    now_iso,
    software_versions,
    target_record,
)
from agents.rollout import plan_rollout, run_episodes
from agents.runlock import run_lock
from agents.upgrade import FORMAT, read_evaluation
from envs import ObservationFilter, get_env_spec, make_vector_env, normalized_score

VIDEO_SIZE = 480  # frame width and height of `dt-attn eval --video`


def load_policy(payload: dict[str, Any], device: str | torch.device = "cpu") -> DecisionTransformer:
    """Rebuild the Decision Transformer stored in a checkpoint payload (as ``load_checkpoint`` gives it)."""
    model = DecisionTransformer(DTConfig.from_dict(payload["model_config"])).to(device)
    model.load_state_dict(payload["model"])
    model.eval()
    return model


@dataclass
class RolloutSettings:
    """What rolling a checkpoint's policy out takes besides the model: the run's own values."""

    env_id: str
    env_name: str
    observe: str
    state_mean: np.ndarray
    state_std: np.ndarray
    rtg_scale: float
    targets: list[float]  # the run's evaluation targets (its dataset's defaults unless it set others)
    max_episode_steps: int


def rollout_settings(payload: dict[str, Any]) -> RolloutSettings:
    """The rollout settings a checkpoint payload (``agents.checkpoint.load_checkpoint``) was trained with."""
    data, train_cfg, norm = payload["data"], payload["config"], payload["normalization"]
    return RolloutSettings(
        env_id=data["env_id"],
        env_name=data["env_name"],
        observe=data["observe"],
        state_mean=np.asarray(norm["state_mean"], dtype=np.float32),
        state_std=np.asarray(norm["state_std"], dtype=np.float32),
        rtg_scale=float(train_cfg["rtg_scale"]),
        targets=[float(t) for t in (train_cfg.get("eval_targets") or data["default_targets"])],
        max_episode_steps=get_env_spec(data["env_name"]).max_episode_steps,
    )


def check_observation_dim(model: DecisionTransformer, envs, env_id: str, observe: str) -> None:
    """Refuse environments whose observations the policy was not built for."""
    obs_dim = envs.single_observation_space.shape[0]
    if obs_dim != model.cfg.state_dim:
        raise ValueError(f"the policy expects {model.cfg.state_dim}-dim observations but {env_id} with "
                         f"observe {observe} gives {obs_dim}; roll it out in the environment (and "
                         "observation filter) it was trained for")


def check_observe(saved: str, requested: str | None) -> str:
    """The observation filter to evaluate with: the run's; a different request is refused."""
    if requested is None:
        return saved
    if str(ObservationFilter.parse(requested)) != str(ObservationFilter.parse(saved)):
        raise ValueError(
            f"checkpoint was trained with --observe {saved} but evaluation asked for --observe {requested}; "
            "a policy can only be evaluated on the observations it was trained on"
        )
    return saved


def default_output(run_dir: Path, rollout: str) -> Path:
    """eval.json (eval-streaming.json for the streaming rollout) in the run directory, or a timestamped name
    so no result is overwritten."""
    out = evaluation_path(run_dir / EVAL_FILE, rollout)
    if out.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = run_dir / f"{out.stem}-{stamp}.json"
    return out


def keep_other_rollout(out: Path, rollout: str) -> None:
    """Before ``out`` is overwritten with a ``rollout`` evaluation: an evaluation of the other rollout held
    there (a format-1 eval.json held the streaming one) moves to its own rollout's name, so none is lost."""
    try:
        held = read_evaluation(out)
    except (OSError, ValueError):
        return  # unreadable: nothing to keep apart
    if held is None or held["rollout"] == rollout:
        return
    target = evaluation_path(out.with_name(out.name.replace(STREAMING_SUFFIX, "")), held["rollout"])
    if target == out or target.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = out.with_name(f"{target.stem}-{stamp}{target.suffix}")
    out.replace(target)


def evaluate(cfg: EvalConfig, progress: bool = True, print_table: bool = True) -> dict[str, Any]:
    """Roll out the checkpoint for every target; write and return the result record. Writing into the
    checkpoint's run folder holds the folder's run lock (no training or other evaluation writes there)."""
    ckpt_path = resolve_checkpoint(cfg.checkpoint)
    folder = ckpt_path.parent.resolve()
    into_run = cfg.output is None or Path(cfg.output).resolve().is_relative_to(folder)
    with run_lock(folder, "--output") if into_run else contextlib.nullcontext():
        return _evaluate(cfg, ckpt_path, progress, print_table)


def _evaluate(cfg: EvalConfig, ckpt_path: Path, progress: bool, print_table: bool) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output) if cfg.output else default_output(ckpt_path.parent, cfg.rollout)
    check_writable(out, "--output", example_name=EVAL_FILE)
    if cfg.video:
        from agents.video import check_video_path  # agents.video builds on this module

        check_video_path(cfg.video, VIDEO_SIZE, VIDEO_SIZE, "--video")  # refused before any episode runs
    payload = load_checkpoint(ckpt_path)
    bad = non_finite_tensors(payload["model"])
    if bad:
        raise ValueError(f"checkpoint {ckpt_path} holds non-finite weights (NaN or inf in "
                         f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): its training diverged; "
                         "retrain it (e.g. with a lower --lr)")
    data, train_cfg = payload["data"], payload["config"]
    settings = rollout_settings(payload)
    observe = check_observe(settings.observe, cfg.observe)
    env_id = cfg.env_id or settings.env_id
    device = resolve_device(cfg.device)
    model = load_policy(payload, device)
    max_steps = cfg.max_steps or settings.max_episode_steps
    targets = cfg.targets or settings.targets
    ref = data.get("ref_scores")
    records = []
    score_source = ""
    plan = plan_rollout(model, cfg.rollout, max_steps)
    for target in targets:
        returns, lengths, wall, steps = [], [], 0.0, 0
        for first in range(0, cfg.episodes, cfg.envs):
            n = min(cfg.envs, cfg.episodes - first)
            envs = make_vector_env(env_id, n, cfg.seed + first, observe=observe)
            try:
                check_observation_dim(model, envs, env_id, observe)
                res = run_episodes(
                    model, envs, target=float(target), state_mean=settings.state_mean,
                    state_std=settings.state_std, rtg_scale=settings.rtg_scale,
                    seed=cfg.seed + first, max_steps=max_steps, plan=plan, device=device,
                    progress=f"target {target:g}, episodes {first + 1}-{first + n}" if progress else None,
                )
            finally:
                envs.close()
            returns.extend(res.returns)
            lengths.extend(res.lengths)
            wall += res.wall_time_s
            steps += res.env_steps
            if progress:
                print(f"  target {target:.0f}: {len(returns)}/{cfg.episodes} episodes, "
                      f"mean return {np.mean(returns):.1f}", flush=True)
        scores, score_source = normalized_score(data["env_name"], np.asarray(returns), ref=ref)
        records.append(target_record(target, np.asarray(returns), np.asarray(lengths), scores, wall, steps))
    result = {
        "format": FORMAT,
        "checkpoint": str(ckpt_path),
        "dataset": data["name"],
        "dataset_label": data["label"],
        "env_id": env_id,
        "observe": observe,
        "attention": model.cfg.transformer.attention,
        "attention_options": model.cfg.transformer.attention_options,
        "activation": model.cfg.transformer.activation,
        "mlp": model.cfg.transformer.mlp,
        "init": model.cfg.init,
        "init_std": model.cfg.init_std,
        "context": model.cfg.context,
        "train_seed": train_cfg["seed"],
        "train_precision": train_cfg["precision"],
        "train_steps": int(payload["step"]),
        "eval_seed": cfg.seed,
        "score_reference": score_source,
        "rollout": plan.rollout,  # what the actions are: "streaming" only where it is approximate
        "method": plan.method,
        "eval_config": json.loads(json.dumps(cfg.__dict__)),
        "results": records,
        "created": now_iso(),
        "versions": software_versions(),
    }
    keep_other_rollout(out, plan.rollout)
    write_json(out, result)
    if print_table:
        print(format_eval_table(result))
        print(f"results written to {out}")
    if cfg.video:
        from agents.video import record_video

        # filmed from the first evaluated episode's initial state (same seed, target and environment)
        film = record_video(model, replace(settings, env_id=env_id, observe=observe), cfg.video,
                            target=float(targets[0]), seed=cfg.seed, max_steps=max_steps, device=device,
                            width=VIDEO_SIZE, height=VIDEO_SIZE)
        print(f"video of episode 1 at target {float(targets[0]):g} ({film.frames} frames, return "
              f"{film.episode_return:.1f}) written to {film.path}")
    return result
