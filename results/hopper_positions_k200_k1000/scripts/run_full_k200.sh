#!/bin/bash
# Session 11, last: hopper with full observations at K=200, equal signal (~640 action targets per step, batch 7),
# the three attentions, six seeds, 2,000 steps, then the same 50-episode readouts, to complete the full-observation
# row of section 2's 50-episode table. Run from a frozen checkout: git archive HEAD | tar -x -C /tmp/snapb
set -u
cd /tmp/snapb
export DT_ATTN_STANDIN_DIR=/work/shared/datasets
runs=/work/runs_s11/hopper_full_k200_tps640_2k
python -m experiments.cli sweep --config experiments/configs/pilot_hopper.json --observes full --contexts 200 \
  --seeds 0 1 2 3 4 5 --targets-per-step 640 --steps 2000 --eval-exact --jobs 2 --out-dir $runs
echo "SWEEP DONE $(date +%T)"
for part in 0 1; do
  SNAP=/tmp/snapb DST=/work/runs_s11/hopper_full_k200_50ep bash results/hopper_2k_50ep/scripts/readouts_50ep.sh $runs $part &
done
wait
echo "READOUTS DONE $(date +%T)"
