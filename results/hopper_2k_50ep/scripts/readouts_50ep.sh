#!/bin/bash
# Session 10: 50-episode readouts of the hopper equal-signal 2,000-step checkpoints, exact (--naive) and
# streaming, 10 envs, eval seed 2000 (the 5-episode readouts used seed 1000); finished runs only.
# Usage: [OBS=positions-] bash readouts_50ep.sh SRC_ROOT PART   (PART 0 or 1: two workers split the runs)
#   seeds 0-2: SRC_ROOT=/work/runs_s9/hopper_tps640_2k
#   seeds 3-5: SRC_ROOT=/work/runs_s10/hopper_tps640_2k_s345 (OBS=positions- while the full cells still trained)
# Run as two as-run copies of this loop (one per source); merged here, same commands for finished runs.
# SNAP (the frozen checkout to run) and DST (where the readouts go) default to session 10's.
cd "${SNAP:-/tmp/snap10}"
dst_root=${DST:-/work/runs_s10/hopper_2k_50ep}
export DT_ATTN_STANDIN_DIR=/work/shared/datasets
src_root=$1
part=$2
i=0
for src in "$src_root"/hopper-medium-replay-standin-${OBS}*-s?; do
  # finished: its exact readout is written (eval-naive.json; eval.json alone where the context holds the episode)
  whole=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['exact_readout'])" $src/eval.json 2>/dev/null)
  [ -f $src/eval-naive.json ] || [ "$whole" = True ] || { echo "$(basename $src) not finished"; continue; }
  i=$((i+1)); [ $((i % 2)) = $part ] || continue
  dst=$dst_root/$(basename $src)
  mkdir -p $dst && cp $src/config.json $src/train_summary.json $dst/
  [ "$whole" = True ] || [ -f $dst/eval-naive.json ] || python -m experiments.cli eval --checkpoint $src --episodes 50 --envs 10 --threads 1 --seed 2000 --naive --output $dst/eval-naive.json > $dst/naive.log 2>&1
  [ -f $dst/eval.json ] || python -m experiments.cli eval --checkpoint $src --episodes 50 --envs 10 --threads 1 --seed 2000 --output $dst/eval.json > $dst/stream.log 2>&1
  echo "$(date +%T) $(basename $src) done"
done
echo ALL DONE $part
