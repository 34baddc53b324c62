"""An exact rollout you can step through: the policy re-runs the model on the last K steps every step.

That is the function the model was trained as (a K-step segment, left-padded at the episode start),
batched over the sub-environments of a vector env. Iterating yields after every environment step,
so a caller can look inside it: read the attention of the step's forward pass, render a frame.
``rollout_settings`` reads what a rollout needs (environment, observation filter, normalization,
return scale, targets) from a checkpoint payload.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.evaluator import Rerun
from agents.model import DecisionTransformer
from envs import get_env_spec


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


def check_observation_dim(model: DecisionTransformer, envs, env_id: str) -> None:
    """Refuse environments whose observations the model was not built for."""
    obs_dim = envs.single_observation_space.shape[0]
    if obs_dim != model.cfg.state_dim:
        raise ValueError(f"the policy expects {model.cfg.state_dim}-dim observations but {env_id} gives {obs_dim}; "
                         "roll it out in the environment (and observation filter) it was trained for")


@dataclass
class Step:
    """One environment step of every sub-environment."""

    t: int  # episode step whose action was just taken
    window: int  # real steps in the K-step window the model read (min(t + 1, K))
    live: np.ndarray  # (n,) bool: sub-environments whose episode was still running (their step counts)
    reward: np.ndarray  # (n,)
    done: np.ndarray  # (n,) bool: episode over after this step


class ExactRollout:
    """One episode in each sub-environment of ``envs`` (reset with ``seed`` on construction), conditioned on
    return ``target``; iterate to take the steps. ``returns`` and ``lengths`` count live steps only; the
    normalized states, actions and scaled returns-to-go fed so far are kept in ``states``, ``actions``, ``rtg``
    (n, max_steps, ·)."""

    def __init__(
        self,
        model: DecisionTransformer,
        envs,
        *,
        target: float,
        state_mean: np.ndarray,
        state_std: np.ndarray,
        rtg_scale: float,
        seed: int,
        max_steps: int,
        device: str | torch.device = "cpu",
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        model.eval()
        self.model, self.envs, self.max_steps, self.device = model, envs, max_steps, device
        self.rtg_scale = float(rtg_scale)
        self.context = model.cfg.context
        n = self.n = envs.num_envs
        self.mean = torch.as_tensor(state_mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(state_std, dtype=torch.float32, device=device)
        self._step = Rerun(model, n, device)
        self.states, self.actions, self.rtg = self._step.states, self._step.actions, self._step.rtg
        self.returns = np.zeros(n)
        self.lengths = np.zeros(n, dtype=int)
        self.done = np.zeros(n, dtype=bool)
        self._rtg_now = torch.full((n, 1), float(target) / self.rtg_scale, device=device)
        self._obs, _ = envs.reset(seed=seed)
        self.t = 0  # the next step to take

    @torch.inference_mode()
    def act(self) -> torch.Tensor:
        """a_t (n, A) for the current observations, from the model re-run on the last K steps."""
        s = (torch.as_tensor(self._obs, dtype=torch.float32, device=self.device) - self.mean) / self.std
        return self._step(self.t, s, self._rtg_now)

    def __iter__(self) -> Iterator[Step]:
        while self.t < self.max_steps and not self.done.all():
            action = self.act().cpu().numpy()
            self._obs, reward, terminated, truncated, _ = self.envs.step(action)
            live = ~self.done
            self.returns[live] += reward[live]
            self.lengths[live] += 1
            self._rtg_now = self._rtg_now - torch.as_tensor(reward, dtype=torch.float32, device=self.device)[:, None] / self.rtg_scale
            self.done = self.done | np.asarray(terminated) | np.asarray(truncated)
            step = Step(t=self.t, window=min(self.t + 1, self.context), live=live, reward=np.asarray(reward),
                        done=self.done.copy())
            self.t += 1
            yield step
