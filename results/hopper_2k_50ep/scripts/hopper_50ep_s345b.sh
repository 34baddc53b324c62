#!/bin/bash
# Session 10: the 50-episode readouts of seeds 3-5 (hopper_seeds345.sh), as hopper_50ep.sh does for seeds 0-2:
# exact (--naive) and streaming, 50 episodes in 10 envs, eval seed 2000; finished runs only. Run as
# OBS=positions- bash hopper_50ep_s345b.sh {0,1} (two workers), then OBS= for the rest.
cd /tmp/snap10
export DT_ATTN_STANDIN_DIR=/work/shared/datasets
part=$1
i=0
for src in /work/runs_s10/hopper_tps640_2k_s345/hopper-medium-replay-standin-${OBS}*-s?; do
  [ -f $src/eval-naive.json ] || { echo "$(basename $src) not finished"; continue; }
  i=$((i+1)); [ $((i % 2)) = $part ] || continue
  dst=/work/runs_s10/hopper_2k_50ep/$(basename $src)
  mkdir -p $dst && cp $src/config.json $src/train_summary.json $dst/
  [ -f $dst/eval-naive.json ] || python -m experiments.cli eval --checkpoint $src --episodes 50 --envs 10 --threads 1 --seed 2000 --naive --output $dst/eval-naive.json > $dst/naive.log 2>&1
  [ -f $dst/eval.json ] || python -m experiments.cli eval --checkpoint $src --episodes 50 --envs 10 --threads 1 --seed 2000 --output $dst/eval.json > $dst/stream.log 2>&1
  echo "$(date +%T) $(basename $src) done"
done
echo ALL DONE $part
