"""Profile five fp32 training steps of the throughput benchmark's model (K=20, batch 64) with torch.profiler;
prints the steps/s of 20 unprofiled steps first, then the operators by self CPU time.

python bench_results/train_step_profile/profile_train_step.py [ATTENTION]
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from agents.model import DecisionTransformer
from experiments.bench_agent import BenchAgentConfig, _dt_config, _ours_step_fn, _synthetic_sampler

attention = sys.argv[1] if len(sys.argv) > 1 else "softmax"
torch.manual_seed(0)
model = DecisionTransformer(_dt_config(BenchAgentConfig(), attention, 20)).train()
step = _ours_step_fn(model)
sampler = _synthetic_sampler(20, 0)
batches = [sampler.sample(64) for _ in range(30)]
for b in batches[:5]:
    step(b)
t0 = time.perf_counter()
for b in batches[5:25]:
    step(b)
print(f"{attention}: {20 / (time.perf_counter() - t0):.2f} steps/s unprofiled")
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for b in batches[25:30]:
        step(b)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
