"""Causal SDPA forward + backward at the DT training shape (batch 64, 1 head, 60 tokens, head dim 128) in
float32 and in bfloat16, alternating rounds; prints the median ms of each and their ratio.

python bench_results/sdpa_precision/sdpa_precision.py [ROUNDS]
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F

torch.manual_seed(0)
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
inputs = {dt: [torch.randn(64, 1, 60, 128, dtype=dt, requires_grad=True) for _ in range(3)]
          for dt in (torch.float32, torch.bfloat16)}
grad = {dt: torch.randn(64, 1, 60, 128, dtype=dt) for dt in inputs}


def run(dt: torch.dtype, reps: int = 20) -> float:
    q, k, v = inputs[dt]
    t0 = time.perf_counter()
    for _ in range(reps):
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad[dt])
    return (time.perf_counter() - t0) / reps * 1e3


for dt in inputs:
    run(dt, 3)  # warm-up
times = {dt: [] for dt in inputs}
for r in range(rounds):
    for dt in (list(inputs) if r % 2 == 0 else list(inputs)[::-1]):
        times[dt].append(run(dt))
med = {dt: statistics.median(ts) for dt, ts in times.items()}
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {rounds} rounds of 20 calls")
for dt, m in med.items():
    print(f"  {dt!s:15s} {m:.2f} ms per forward + backward")
print(f"  bfloat16 / float32: {med[torch.bfloat16] / med[torch.float32]:.2f}x the time")
