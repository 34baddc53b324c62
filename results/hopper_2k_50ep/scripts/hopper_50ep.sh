#!/bin/bash
# Session 10: the hopper equal-signal 2,000-step checkpoints (session 9, runs_s9/hopper_tps640_2k) read again
# with 50 episodes per readout (10x the earlier 5), exact (--naive) and streaming, eval seed 2000 (the earlier
# readouts used seed 1000). Two workers (one thread each) split the runs by index parity.
cd /tmp/snap10
export DT_ATTN_STANDIN_DIR=/work/shared/datasets
part=$1
i=0
for src in /work/runs_s9/hopper_tps640_2k/hopper-*-s?; do
  i=$((i+1)); [ $((i % 2)) = $part ] || continue
  dst=/work/runs_s10/hopper_2k_50ep/$(basename $src)
  mkdir -p $dst && cp $src/config.json $src/train_summary.json $dst/
  [ -f $dst/eval-naive.json ] || python -m experiments.cli eval --checkpoint $src --episodes 50 --envs 10 --threads 1 --seed 2000 --naive --output $dst/eval-naive.json > $dst/naive.log 2>&1
  [ -f $dst/eval.json ] || python -m experiments.cli eval --checkpoint $src --episodes 50 --envs 10 --threads 1 --seed 2000 --output $dst/eval.json > $dst/stream.log 2>&1
  echo "$(date +%T) $(basename $src) done"
done
echo ALL DONE $part
