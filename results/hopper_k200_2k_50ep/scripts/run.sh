#!/bin/bash
# Session 11: hopper equal-signal cells at K=200 (the K <= 60 cells' recipe: pilot_hopper.json, ~640 action
# targets per step, 2,000 steps, six seeds), positions first, then full observations; then the same 50-episode
# readouts both ways as the K <= 60 cells (readouts_50ep.sh: 10 envs, eval seed 2000), two workers.
# Run from a frozen checkout: git archive HEAD | tar -x -C /tmp/snap11
set -u
cd /tmp/snap11
export DT_ATTN_STANDIN_DIR=/work/shared/datasets
runs=/work/runs_s11/hopper_k200_tps640_2k
for obs in positions full; do
  python -m experiments.cli sweep --config experiments/configs/pilot_hopper.json --observes $obs --contexts 200 \
    --seeds 0 1 2 3 4 5 --targets-per-step 640 --steps 2000 --eval-exact --jobs 2 --out-dir $runs
  echo "SWEEP $obs DONE $(date +%T)"
  for part in 0 1; do
    OBS=$([ $obs = positions ] && echo positions-) SNAP=/tmp/snap11 DST=/work/runs_s11/hopper_k200_50ep \
      bash results/hopper_2k_50ep/scripts/readouts_50ep.sh $runs $part &
  done
  wait
  echo "READOUTS $obs DONE $(date +%T)"
done
