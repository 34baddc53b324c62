#!/bin/bash
# Session 11: hopper positions-only equal-signal cells at K=200 (three attentions) and K=1000 (Combiner-Fixed),
# the K <= 60 cells' recipe (pilot_hopper.json, ~640 action targets per step, 2,000 steps, six seeds), each read
# with the same 50-episode readouts as the K <= 60 cells (readouts_50ep.sh: 10 envs, eval seed 2000, exact and
# streaming; at K=1000 both readouts are exact), two workers.
# Run from a frozen checkout: git archive HEAD | tar -x -C /tmp/snap11
set -u
cd /tmp/snap11
export DT_ATTN_STANDIN_DIR=/work/shared/datasets
readouts() {  # the 50-episode readouts of every finished run under $1
  for part in 0 1; do
    OBS=positions- SNAP=/tmp/snap11 DST=/work/runs_s11/hopper_positions_50ep \
      bash results/hopper_2k_50ep/scripts/readouts_50ep.sh "$1" $part &
  done
  wait
}
runs=/work/runs_s11/hopper_k200_tps640_2k
python -m experiments.cli sweep --config experiments/configs/pilot_hopper.json --observes positions --contexts 200 \
  --seeds 0 1 2 3 4 5 --targets-per-step 640 --steps 2000 --eval-exact --jobs 2 --out-dir $runs
echo "SWEEP K=200 DONE $(date +%T)"
readouts $runs
echo "READOUTS K=200 DONE $(date +%T)"
runs=/work/runs_s11/hopper_k1000_tps640_2k
python -m experiments.cli sweep --config experiments/configs/pilot_hopper.json --observes positions --contexts 1000 \
  --attentions combiner-fixed --seeds 0 1 2 3 4 5 --targets-per-step 640 --steps 2000 --eval-exact --jobs 2 --out-dir $runs
echo "SWEEP K=1000 DONE $(date +%T)"
readouts $runs
echo "READOUTS K=1000 DONE $(date +%T)"
