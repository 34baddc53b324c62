"""fp32 training steps of the throughput benchmark's model (K=20, batch 64) eager against ``torch.compile``
(inductor, default mode), alternating rounds of 10 steps; prints the warm-up (compile) time and the median steps/s.

python bench_results/train_step_profile/compile_trial.py [ATTENTION] [ROUNDS]
"""

import statistics
import sys
import time

import torch

from agents.model import DecisionTransformer
from experiments.bench_agent import BenchAgentConfig, _dt_config, _ours_step_fn, _synthetic_sampler

attention = sys.argv[1] if len(sys.argv) > 1 else "softmax"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
sampler = _synthetic_sampler(20, 0)
batches = [sampler.sample(64) for _ in range(15)]
steps = {}
for name in ("eager", "compiled"):
    torch.manual_seed(0)
    model = DecisionTransformer(_dt_config(BenchAgentConfig(), attention, 20)).train()
    steps[name] = _ours_step_fn(torch.compile(model) if name == "compiled" else model)
for name, step in steps.items():
    t0 = time.perf_counter()
    for b in batches[:3]:
        step(b)
    print(f"{name} warm-up (compile) s {time.perf_counter() - t0:.1f}", flush=True)
rates = {name: [] for name in steps}
for r in range(rounds):
    for name in list(steps) if r % 2 == 0 else list(steps)[::-1]:
        t0 = time.perf_counter()
        for b in batches[3:13]:
            steps[name](b)
        rates[name].append(10 / (time.perf_counter() - t0))
for name, rs in rates.items():
    print(f"{name} {statistics.median(rs):.2f} steps/s {[round(x, 2) for x in rs]}")
