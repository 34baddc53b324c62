"""Hopper equal-signal 2,000-step checkpoints, 50-episode readouts: per (observe, K) the mean over runs of
each run's mean normalized score, with the standard error over runs, per readout; and per attention. Where the
context holds the whole episode (K=1000) the one readout is exact and is listed under both."""
import collections
import json
import re
import statistics as st
import sys
from pathlib import Path

root = Path(sys.argv[1])
seeds = {int(s) for s in sys.argv[2].split(",")} if len(sys.argv) > 2 else None
pat = re.compile(r"hopper-medium-replay-standin-(positions-)?(softmax|cosformer|combiner-fixed)-K(\d+)-s(\d+)$")
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for d in sorted(root.iterdir()):
    m = pat.match(d.name)
    if not m:
        continue
    obs, att, k, seed = ("positions" if m[1] else "full"), m[2], int(m[3]), int(m[4])
    if seeds is not None and seed not in seeds:
        continue
    for f, name in (("eval.json", "streaming"), ("eval-naive.json", "exact")):
        if (d / f).is_file():
            result = json.loads((d / f).read_text())
            r = result["results"][0]
            assert r["episodes"] == 50, d
            rows[(obs, k)][name].append((att, seed, r["normalized_mean"]))
            if name == "streaming" and result["exact_readout"]:  # a context holding the whole episode: one readout
                rows[(obs, k)]["exact"].append((att, seed, r["normalized_mean"]))
def fmt(v):
    xs = [x for _, _, x in v]
    se = st.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return f"{st.mean(xs):5.1f} +- {se:4.1f} (n={len(xs)})"
for (obs, k), by in sorted(rows.items()):
    print(f"{obs:9s} K={k:<3d} exact {fmt(by['exact'])}   streaming {fmt(by['streaming'])}")
    for att in ("softmax", "cosformer", "combiner-fixed"):
        e = [x for a, _, x in by["exact"] if a == att]
        if e:
            print(f"      {att:15s} exact per seed: " + " ".join(f"{x:5.1f}" for x in e))
