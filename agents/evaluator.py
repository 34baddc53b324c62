"""Policy rollouts in parallel gymnasium environments, batched over environments.

The default path feeds each step's new tokens (a_{t-1}, R_t, s_t) in one pass through each
attention's incremental form (KV cache, cosFormer's recurrent state, Combiner's cached summaries). ``naive=True`` re-runs the
model over the whole K-step window every step, as the original DT evaluation does.

Window semantics: with K shorter than the episode, the incremental path gives every layer a
sliding window of 3K - 1 tokens over the episode stream: at the state token s_t, exactly the
tokens R_{t-K+1} .. s_t of the K-step segment the naive path re-runs (3K tokens would reach
back to a_{t-K}, which no training segment puts before R_{t-K+1}). A one-layer model, and any
model for the first K steps (or with K >= the episode length), thus computes exactly the naive
action; in a deeper stack the upper layers read lower-layer outputs of earlier tokens, whose
own windows reach further back (receptive field about n_layers * 3K), the usual streaming
sliding-window semantics. Every built-in mechanism has a window option; one
registered without it falls back to the naive path when K is shorter than the episode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from agents.model import DecisionTransformer
from agents.progress import progress_bar
from dt_attn import attention_options


@dataclass
class RolloutResult:
    """Returns and lengths of finished episodes and what the rollout cost."""

    returns: np.ndarray
    lengths: np.ndarray
    wall_time_s: float
    env_steps: int
    path: str  # "incremental" or "naive", and the context it used
    policy_time_s: float = 0.0  # time spent in the model alone (no environment stepping)
    exact: bool = False  # the policy read as trained: the naive path, or a context holding the whole episode


def rollout_model(model: DecisionTransformer, context: int, naive: bool) -> tuple[DecisionTransformer, str, bool]:
    """The model to roll out, a description of its context, and whether to use the naive path."""
    cfg = model.cfg
    whole_episode = context >= cfg.max_ep_len
    if naive:
        return model, f"naive: recompute the last {context} steps", True
    if whole_episode:
        return model, "incremental: whole episode", False
    if "window" in attention_options(cfg.attention):
        caveat = (f" (streaming: after {context} steps the upper layers see past the window, unlike training;"
                  " --naive is exact)" if cfg.n_layers > 1 else "")
        window = 3 * context - 1  # R_{t-K+1} .. s_t: the trained segment as seen from its last state token
        return (
            model.with_attention_options(window=window),
            f"incremental: sliding window of {window} tokens per layer{caveat}",
            False,
        )
    return model, f"naive ({cfg.attention} has no window option): recompute the last {context} steps", True


@torch.inference_mode()
def run_episodes(
    model: DecisionTransformer,
    envs,
    *,
    target: float,
    context: int,
    state_mean: np.ndarray,
    state_std: np.ndarray,
    rtg_scale: float,
    seed: int,
    max_steps: int,
    naive: bool = False,
    device: str | torch.device = "cpu",
    progress: str | None = None,
) -> RolloutResult:
    """One episode in each sub-environment of ``envs``, all conditioned on return ``target``; with
    ``progress``, a bar of environment steps under that label."""
    model.eval()
    policy, path, use_naive = rollout_model(model, context, naive)
    n = envs.num_envs
    mean = torch.as_tensor(state_mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(state_std, dtype=torch.float32, device=device)
    obs, _ = envs.reset(seed=seed)
    rtg = torch.full((n, 1), target / rtg_scale, device=device)
    done = np.zeros(n, dtype=bool)
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=int)
    act_dim = model.cfg.act_dim
    if use_naive:
        hist_s = torch.zeros(n, max_steps, model.cfg.state_dim, device=device)
        hist_a = torch.zeros(n, max_steps, act_dim, device=device)
        hist_r = torch.zeros(n, max_steps, 1, device=device)
    else:
        state = policy.init_state(n, device=device)
        prev_action = None  # a_{t-1}, fed together with R_t and s_t
    bar = progress_bar(total=max_steps, desc=progress, unit="step", leave=False, disable=progress is None)
    start = time.perf_counter()
    policy_time = 0.0
    t = 0
    while t < max_steps and not done.all():
        p0 = time.perf_counter()
        s = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean) / std
        ts = torch.full((n,), t, dtype=torch.long, device=device)
        if use_naive:
            hist_s[:, t], hist_r[:, t] = s, rtg
            lo = max(0, t + 1 - context)
            k = t + 1 - lo
            pad = context - k
            window_t = torch.arange(lo, t + 1, device=device).expand(n, k)
            seg = [hist_s[:, lo : t + 1], hist_a[:, lo : t + 1], hist_r[:, lo : t + 1], window_t]
            if pad:
                seg = [torch.cat((x.new_zeros((n, pad) + x.shape[2:]), x), dim=1) for x in seg]
            mask = torch.arange(context, device=device).expand(n, context) < pad
            action = policy(seg[0], seg[1], seg[2], seg[3], mask if pad else None, last_only=True)[:, -1]
            hist_a[:, t] = action
        else:
            action, state = policy.act(state, rtg, s, ts, prev_action)
            prev_action = action
        action = action.cpu().numpy()
        policy_time += time.perf_counter() - p0
        obs, reward, terminated, truncated, _ = envs.step(action)
        live = ~done
        returns[live] += reward[live]
        lengths[live] += 1
        rtg = rtg - torch.as_tensor(reward, dtype=torch.float32, device=device)[:, None] / rtg_scale
        done |= np.asarray(terminated) | np.asarray(truncated)
        t += 1
        bar.update()
    wall = time.perf_counter() - start
    bar.close()
    return RolloutResult(returns=returns, lengths=lengths, wall_time_s=wall, env_steps=t * n, path=path,
                         policy_time_s=policy_time, exact=use_naive or context >= model.cfg.max_ep_len)
