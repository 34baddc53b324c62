"""Whole bf16 training steps (K=20, batch 64, the benchmark's model) with the attention in float32 (dt-attn's
choice under autocast) against the attention left in bfloat16 (Block._attend bypassed), alternating rounds.

python bench_results/sdpa_precision/attention_precision_ab.py [ATTENTION] [ROUNDS]
"""

import statistics
import sys
import time

import torch

from agents.model import DecisionTransformer
from dt_attn.transformer import Block
from experiments.bench_agent import BenchAgentConfig, _dt_config, _ours_step_fn, _synthetic_sampler

attention = sys.argv[1] if len(sys.argv) > 1 else "softmax"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
cfg, k = BenchAgentConfig(), 20
batches = [_synthetic_sampler(k, 0).sample(64) for _ in range(15)]


def in_bf16(self, q, k, v, pad_mask):
    return self.attn(q, k, v, pad_mask=pad_mask)


steps = {}
for name in ("attention fp32", "attention bf16"):
    torch.manual_seed(0)
    model = DecisionTransformer(_dt_config(cfg, attention, k)).train()
    if name == "attention bf16":
        for block in model.modules():
            if isinstance(block, Block):
                block._attend = in_bf16.__get__(block)
    steps[name] = _ours_step_fn(model, "bf16")
for step in steps.values():
    for b in batches[:5]:
        step(b)
rates = {name: [] for name in steps}
for r in range(rounds):
    for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
        t0 = time.perf_counter()
        for b in batches[5:]:
            steps[name](b)
        rates[name].append(10 / (time.perf_counter() - t0))
print(f"{attention}, bf16 training steps, torch {torch.__version__}, {torch.get_num_threads()} threads, "
      f"{rounds} rounds of 10 steps")
for name, rs in rates.items():
    print(f"  {name}: {statistics.median(rs):.2f} steps/s (rounds {min(rs):.2f}-{max(rs):.2f})")
ratios = [a / b for a, b in zip(rates["attention fp32"], rates["attention bf16"])]
print(f"  fp32 / bf16 attention: {statistics.median(ratios):.2f}x the steps/s (rounds {min(ratios):.2f}-{max(ratios):.2f})")
