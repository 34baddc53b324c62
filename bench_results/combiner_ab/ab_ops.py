"""Forward + backward time of one Combiner attention call at 60 tokens (batch 64, one head of 128, the
DT training shape at K=20), for several versions of dt_attn/ops/combiner.py loaded side by side in one
process and timed in alternating rounds, next to SDPA softmax; then the bool vs float mask ops that
the session-10 change replaced.

    git show faa7ef5:dt_attn/ops/combiner.py > /tmp/combiner_s9.py
    git show 35f0da2:dt_attn/ops/combiner.py > /tmp/combiner_s10a.py
    python bench_results/combiner_ab/ab_ops.py /tmp/combiner_s9.py /tmp/combiner_s10a.py dt_attn/ops/combiner.py
"""

import importlib.util
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
B, H, T, D = 64, 1, 60, 128
ROUNDS, CALLS = 15, 10


def load(path: str, name: str):
    """Import the Python file at ``path`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_round(fn, calls: int, out: list) -> None:
    """Append the mean ms per call of ``calls`` calls of fn to ``out``."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    out.append((time.perf_counter() - t0) / calls * 1e3)


def main(paths: list[str]) -> None:
    qkv = torch.randn(B, T, 3, H, D, requires_grad=True)  # q, k, v come from one projection, as in the model
    grad = torch.randn(B, H, T, D)
    fns = {"softmax (sdpa)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)}
    for i, path in enumerate(paths):
        mod = load(path, f"combiner_{i}")
        fns[f"fixed      {path}"] = mod.combiner_fixed
        fns[f"logsparse  {path}"] = mod.combiner_logsparse

    def call(fn):
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        (fn(q, k, v) * grad).sum().backward()

    times = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(5):
            call(fn)
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            time_round(lambda fn=fn: call(fn), CALLS, times[name])
    print(f"forward + backward at {T} tokens, batch {B}, 1 head of {D} (median of {ROUNDS} alternating rounds of {CALLS}):")
    for name, ts in times.items():
        print(f"  {name:60s} {sorted(ts)[ROUNDS // 2]:6.2f} ms")

    x = torch.randn(64, 1, 8, 8, 128)
    values = x.amax(-2).unsqueeze(-2)
    g = torch.randn(64, 1, 8, 1, 128)
    hit = x == values
    ops = {
        "bool eq (x == max)": lambda: x == values,
        "where(bool, grad, 0)": lambda: torch.where(hit, g, 0.0),
        "float eq (eq(out=float))": lambda: torch.eq(x, values, out=torch.empty_like(x)),
        "float mask * grad": lambda: torch.eq(x, values, out=torch.empty_like(x)).mul_(g),
    }
    print("the token max's backward pieces at (64, 1, 8, 8, 128) (median of 7 rounds of 50):")
    for name, op in ops.items():
        ts = []
        for _ in range(5):
            op()
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(50):
                op()
            ts.append((time.perf_counter() - t0) / 50 * 1e6)
        print(f"  {name:30s} {sorted(ts)[3]:7.1f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
