"""Policy rollouts in parallel gymnasium environments, batched over environments.

``SteppedRollout`` runs one episode in each sub-environment and yields after every environment step, so that
a caller can look inside (read the attention of the step's forward pass, render a frame); ``run_episodes``
runs it to the end and times it. How the policy acts is a ``RolloutPlan``. Two rollouts (``ROLLOUTS``):

* **exact** (the default): every action is the function that was trained, the model on the last K
  steps R_{t-K+1}, s_{t-K+1}, a_{t-K+1}, ..., R_t, s_t. When the episode cannot outgrow K (K >= the
  step limit), the attention's incremental state (KV cache, cosFormer's recurrent state, Combiner's
  cached summaries) over the whole episode is that function and is used; otherwise every step re-runs
  the model on the last K steps of all environments at once (``DecisionTransformer.act_exact``: token
  embeddings and first-block projections are computed once per token, every attention output anew).
* **streaming (approximate)**: every layer keeps a sliding window of its last 3K - 1 tokens. At the
  state token s_t that window holds exactly the trained segment, so a one-layer model, and any model
  for the first K steps, acts exactly; in a deeper stack the upper layers read lower-layer outputs of
  earlier tokens whose own windows reach further back (a receptive field of about n_layers * 3K), which
  training never showed. Asked of a mechanism without a window option, streaming falls back to the
  exact rollout, and the result says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from agents.model import DecisionTransformer, window_tokens
from agents.progress import progress_bar
from agents.results import ROLLOUTS, rollout_label
from dt_attn import capabilities

# One step of a batched policy: (t, normalized states (B, S), returns-to-go (B, 1)) -> actions (B, A).
StepFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def check_rollout(rollout: str) -> str:
    """``rollout`` when it is one of ``ROLLOUTS``; a ValueError naming the choices otherwise."""
    if rollout not in ROLLOUTS:
        raise ValueError(f"rollout must be one of {', '.join(ROLLOUTS)}, got {rollout!r}")
    return rollout


@dataclass
class RolloutPlan:
    """How a model is rolled out: the rollout it computes, in words, and how to start its episodes."""

    rollout: str  # "exact" or "streaming": what the actions are, not only what was asked
    method: str  # e.g. "exact: the last 20 steps re-run every step"
    start: Callable[[int, torch.device | str], StepFn]  # (environments, device) -> the step function


@dataclass
class RolloutResult:
    """Returns and lengths of finished episodes and what the rollout cost."""

    returns: np.ndarray
    lengths: np.ndarray
    wall_time_s: float
    env_steps: int
    rollout: str  # "exact" or "streaming"
    method: str  # how it was computed, in words
    policy_time_s: float = 0.0  # time spent in the model alone (no environment stepping)


def plan_rollout(model: DecisionTransformer, rollout: str, max_steps: int) -> RolloutPlan:
    """The rollout of ``model`` for episodes of at most ``max_steps`` steps (see the module docstring)."""
    check_rollout(rollout)
    k = model.cfg.context
    if max_steps <= k:
        return RolloutPlan("exact", "exact: incremental state over the whole episode (K >= its step limit)",
                           lambda n, device: _incremental(model, n, device))
    if rollout == "streaming" and capabilities(model.cfg.transformer.attention).window:
        window = window_tokens(k)  # R_{t-K+1} .. s_t: the trained segment as seen from its last state token
        caveat = (f"; after {k} steps the upper layers see past the window, unlike training"
                  if model.cfg.transformer.n_layers > 1 else "")
        policy = model.with_attention_options(window=window)
        return RolloutPlan("streaming", f"{rollout_label('streaming')}: sliding window of {window} tokens "
                                        f"per layer{caveat}",
                           lambda n, device: _incremental(policy, n, device))
    fallback = (f" ({model.cfg.transformer.attention} has no window option to stream with)"
                if rollout == "streaming" else "")
    return RolloutPlan("exact", f"exact: the last {k} steps re-run every step{fallback}",
                       lambda n, device: _exact(model, n, device))


def _incremental(model: DecisionTransformer, n: int, device: torch.device | str) -> StepFn:
    """Steps through the attention's incremental state, feeding a_{t-1}, R_t, s_t in one pass."""
    state, prev = model.init_state(n, device=device), None

    def step(t: int, s: torch.Tensor, rtg: torch.Tensor) -> torch.Tensor:
        nonlocal state, prev
        prev, state = model.act(state, rtg, s, torch.full((n,), t, dtype=torch.long, device=device), prev)
        return prev

    return step


def _exact(model: DecisionTransformer, n: int, device: torch.device | str) -> StepFn:
    """Steps that re-run the model on the last K steps (``DecisionTransformer.act_exact``)."""
    state, prev = model.init_exact_state(n, device=device), None

    def step(t: int, s: torch.Tensor, rtg: torch.Tensor) -> torch.Tensor:
        nonlocal state, prev
        prev, state = model.act_exact(state, rtg, s, torch.full((n,), t, dtype=torch.long, device=device),
                                      prev)
        return prev

    return step


class Rerun:
    """The step function of ``rerun_plan``: re-runs the model on the last K steps of each episode, left padded
    to K at the start. It keeps what it fed the model: normalized ``states`` (n, T, S), ``actions`` (n, T, A)
    and scaled returns-to-go ``rtg`` (n, T, 1), T the model's episode limit."""

    def __init__(self, model: torch.nn.Module, n: int, device: torch.device | str,
                 last_only: bool = True) -> None:
        cfg = model.cfg
        self.model, self.n, self.device, self.last_only = model, n, device, last_only
        self.context = cfg.context
        self.states = torch.zeros(n, cfg.max_ep_len, cfg.state_dim, device=device)
        self.actions = torch.zeros(n, cfg.max_ep_len, cfg.act_dim, device=device)
        self.rtg = torch.zeros(n, cfg.max_ep_len, 1, device=device)

    def __call__(self, t: int, s: torch.Tensor, rtg: torch.Tensor) -> torch.Tensor:
        """a_t (n, A) from the model on steps max(0, t - K + 1) .. t, given s_t (n, S) and R_t (n, 1)."""
        n, k, device = self.n, self.context, self.device
        self.states[:, t], self.rtg[:, t] = s, rtg
        lo = max(0, t + 1 - k)
        pad = k - (t + 1 - lo)
        seg = [self.states[:, lo : t + 1], self.actions[:, lo : t + 1], self.rtg[:, lo : t + 1],
               torch.arange(lo, t + 1, device=device).expand(n, t + 1 - lo)]
        if pad:  # the episode start: a left-padded segment, as training samples them
            seg = [torch.cat((x.new_zeros((n, pad) + x.shape[2:]), x), dim=1) for x in seg]
        mask = torch.arange(k, device=device).expand(n, k) < pad if pad else None
        action = self.model(*seg, mask, last_only=self.last_only)[:, -1]
        self.actions[:, t] = action
        return action


def rerun_plan(model: torch.nn.Module, last_only: bool = True) -> RolloutPlan:
    """The exact rollout without reuse, the reference the fast exact path is tested against: every step
    the model runs on the last K steps of each episode, as training's forward pass (``Rerun``). Any model
    with the Decision Transformer's forward signature and ``cfg`` can be rolled out this way.
    ``last_only``: only the newest action computed; without it every step's, as the peers' evaluations do."""
    how = "newest action" if last_only else "every action"
    return RolloutPlan("exact", f"exact: the model re-run on the padded last {model.cfg.context} steps "
                                f"({how}), no reuse", lambda n, device: Rerun(model, n, device, last_only))


@dataclass
class EnvStep:
    """One environment step of every sub-environment."""

    t: int  # episode step whose action was just taken
    window: int  # real steps in the K-step window the model read (min(t + 1, K))
    live: np.ndarray  # (n,) bool: sub-environments whose episode was still running (their step counts)
    reward: np.ndarray  # (n,)
    done: np.ndarray  # (n,) bool: episode over after this step


class SteppedRollout:
    """One episode in each sub-environment of ``envs`` (reset with ``seed`` on construction), conditioned on
    return ``target`` and acting by ``plan`` (default: ``rerun_plan``, the exact rollout whose every step is
    one forward pass of the model on the last K steps); iterate to take the steps. ``returns`` and ``lengths``
    count live steps only, ``policy_time_s`` the time spent choosing actions. With the default plan the
    normalized states, actions and scaled returns-to-go fed so far are in ``states``, ``actions``, ``rtg``
    (n, max_ep_len, ·)."""

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
        plan: RolloutPlan | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        model.eval()
        self.model, self.envs, self.max_steps, self.device = model, envs, max_steps, device
        self.plan = plan or rerun_plan(model)
        self.rtg_scale = float(rtg_scale)
        self.context = model.cfg.context
        n = self.n = envs.num_envs
        self.mean = torch.as_tensor(state_mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(state_std, dtype=torch.float32, device=device)
        self.returns = np.zeros(n)
        self.lengths = np.zeros(n, dtype=int)
        self.done = np.zeros(n, dtype=bool)
        self.policy_time_s = 0.0
        self._rtg_now = torch.full((n, 1), float(target) / self.rtg_scale, device=device)
        self._obs, _ = envs.reset(seed=seed)
        self.step_fn = self.plan.start(n, device)
        self.t = 0  # the next step to take

    # what the default plan's re-run step fed the model
    states = property(lambda self: self.step_fn.states)
    actions = property(lambda self: self.step_fn.actions)
    rtg = property(lambda self: self.step_fn.rtg)

    @torch.inference_mode()
    def act(self) -> torch.Tensor:
        """a_t (n, A) for the current observations."""
        s = (torch.as_tensor(self._obs, dtype=torch.float32, device=self.device) - self.mean) / self.std
        return self.step_fn(self.t, s, self._rtg_now)

    def __iter__(self) -> Iterator[EnvStep]:
        while self.t < self.max_steps and not self.done.all():
            start = time.perf_counter()
            action = self.act().cpu().numpy()
            self.policy_time_s += time.perf_counter() - start
            self._obs, reward, terminated, truncated, _ = self.envs.step(action)
            live = ~self.done
            self.returns[live] += reward[live]
            self.lengths[live] += 1
            reward_now = torch.as_tensor(reward, dtype=torch.float32, device=self.device)[:, None]
            self._rtg_now = self._rtg_now - reward_now / self.rtg_scale
            self.done = self.done | np.asarray(terminated) | np.asarray(truncated)
            step = EnvStep(t=self.t, window=min(self.t + 1, self.context), live=live,
                           reward=np.asarray(reward), done=self.done.copy())
            self.t += 1
            yield step


@torch.inference_mode()
def run_episodes(
    model: DecisionTransformer,
    envs,
    *,
    target: float,
    state_mean: np.ndarray,
    state_std: np.ndarray,
    rtg_scale: float,
    seed: int,
    max_steps: int,
    rollout: str = "exact",
    plan: RolloutPlan | None = None,
    device: str | torch.device = "cpu",
    progress: str | None = None,
) -> RolloutResult:
    """One episode in each sub-environment of ``envs``, all conditioned on return ``target``, acting by
    ``plan`` (default: ``plan_rollout(model, rollout, max_steps)``); with ``progress``, a bar of
    environment steps under that label."""
    plan = plan or plan_rollout(model, rollout, max_steps)
    episodes = SteppedRollout(model, envs, target=target, state_mean=state_mean, state_std=state_std,
                              rtg_scale=rtg_scale, seed=seed, max_steps=max_steps, plan=plan, device=device)
    bar = progress_bar(total=max_steps, desc=progress, unit="step", leave=False, disable=progress is None)
    start = time.perf_counter()
    for _ in episodes:
        bar.update()
    wall = time.perf_counter() - start
    bar.close()
    return RolloutResult(returns=episodes.returns, lengths=episodes.lengths, wall_time_s=wall,
                         env_steps=episodes.t * episodes.n, rollout=plan.rollout, method=plan.method,
                         policy_time_s=episodes.policy_time_s)
