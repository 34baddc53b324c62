"""The incremental and naive rollout paths' policy time per step inside real rollouts (10 HalfCheetah-v4
environments, 400 steps, 3 runs, untrained cosFormer at K=20) with the torch thread count given; run it
under OMP_WAIT_POLICY=active to see whether the OpenMP workers' sleep between steps costs anything.

    python bench_results/eval_step_profile/rollout_threads.py THREADS incremental|naive
"""

import os
import sys

import numpy as np
import torch

from agents.evaluator import run_episodes
from agents.model import DecisionTransformer
from envs import make_vector_env
from experiments.bench_agent import STATE_DIM, BenchAgentConfig, _dt_config

threads, naive = int(sys.argv[1]), sys.argv[2] == "naive"
torch.set_num_threads(threads)
torch.manual_seed(0)
model = DecisionTransformer(_dt_config(BenchAgentConfig(), "cosformer", 20, dropout=0.0)).eval()
policy_ms, env_ms = [], []
for _ in range(3):
    envs = make_vector_env("HalfCheetah-v4", 10, 0)
    try:
        out = run_episodes(model, envs, target=6000.0, context=20, state_mean=np.zeros(STATE_DIM),
                           state_std=np.ones(STATE_DIM), rtg_scale=1000.0, seed=0, max_steps=400, naive=naive)
    finally:
        envs.close()
    policy_ms.append(out.policy_time_s / 400 * 1e3)
    env_ms.append((out.wall_time_s - out.policy_time_s) / 400 * 1e3)
print(f"{sys.argv[2]:<11} threads {threads} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)'):<7} "
      f"policy ms/step {' '.join(f'{x:.2f}' for x in policy_ms)}; environments ms/step {' '.join(f'{x:.2f}' for x in env_ms)}")
