#!/bin/bash
# Session 11, after run.sh: Combiner-Fixed, hopper positions only, K=200 at batch 34 (K=20's equal-signal batch:
# the same segments per step, five times the action targets), six seeds, 2,000 steps, then the same 50-episode
# readouts. Run from a frozen checkout: git archive HEAD | tar -x -C /tmp/snapb
set -u
cd /tmp/snapb
export DT_ATTN_STANDIN_DIR=/work/shared/datasets
runs=/work/runs_s11/hopper_k200_b34
python -m experiments.cli sweep --config experiments/configs/pilot_hopper.json --observes positions --contexts 200 \
  --attentions combiner-fixed --seeds 0 1 2 3 4 5 --batch-size 34 --steps 2000 --eval-exact --jobs 2 --out-dir $runs
echo "SWEEP DONE $(date +%T)"
for part in 0 1; do
  OBS=positions- SNAP=/tmp/snapb DST=/work/runs_s11/hopper_k200_b34_50ep \
    bash results/hopper_2k_50ep/scripts/readouts_50ep.sh $runs $part &
done
wait
echo "READOUTS DONE $(date +%T)"
