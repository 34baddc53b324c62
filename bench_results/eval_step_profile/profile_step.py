"""Where the incremental rollout step's time goes at K=20 (cosFormer, 10 environments, the eval benchmark's
model): a torch profile of the step, its operator count, and the step timed alone.

    python bench_results/eval_step_profile/profile_step.py
"""

import time

import torch
from torch.profiler import ProfilerActivity, profile

from agents.model import DecisionTransformer
from experiments.bench_agent import BenchAgentConfig, _dt_config, _rollout_step

torch.set_num_threads(2)
torch.manual_seed(0)
model = DecisionTransformer(_dt_config(BenchAgentConfig(), "cosformer", 20, dropout=0.0)).eval()
_, step = _rollout_step(model, 20, False, envs=10, after_steps=30)
with torch.inference_mode():
    for _ in range(50):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(100):
            step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=32))
    print(f"aten operators per step (nested calls included): {sum(e.count for e in events if e.key.startswith('aten::')) / 100:.0f}")
    t0 = time.perf_counter()
    for _ in range(500):
        step()
    print(f"the step alone, unprofiled: {(time.perf_counter() - t0) / 500 * 1e3:.2f} ms")
