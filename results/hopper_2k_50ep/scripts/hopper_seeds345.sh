#!/bin/bash
# Session 10: seeds 3-5 of the hopper equal-signal cells at 2,000 steps (session 9 trained seeds 0-2 the same way),
# positions first; then the same 50-episode readouts as seeds 0-2 (readouts_50ep.sh, eval seed 2000).
cd /tmp/snap10
export DT_ATTN_STANDIN_DIR=/work/shared/datasets
python -m experiments.cli sweep --config experiments/configs/pilot_hopper.json --observes positions full --seeds 3 4 5 \
  --targets-per-step 640 --steps 2000 --eval-exact --jobs 2 --out-dir /work/runs_s10/hopper_tps640_2k_s345
echo SWEEP DONE
