#!/usr/bin/env bash
# bf16 learning check (session 12): the ReLU learning check's config (experiments/configs/learning_check_relu.json:
# hopper-medium-replay stand-in, K=20, embed 128, 3 layers, batch 64, lr 1e-4, warmup 1,000 then constant,
# seeds 0-2, 10 episodes per target, eval seed 1000), softmax only, on one code version:
# * --precision bf16, 4,000 steps, evaluated (streaming) at 2,000 and 4,000 steps;
# * --precision fp32, 2,000 steps, evaluated (streaming) at the end, the same evaluation as bf16's at 2,000.
# The two sweeps run side by side, one thread each. (A bf16 cosFormer sweep started beside the first was
# stopped after one checkpoint to free the core for the fp32 runs.)
# DT_ATTN may name the command (default dt-attn), e.g. "python -m experiments.cli" in an unpacked snapshot.
# Run from a checkout's root with the stand-in data reachable (../shared/datasets or DT_ATTN_STANDIN_DIR).
set -euo pipefail
OUT=${OUT:-runs/learning_check_bf16}
mkdir -p "$(dirname "$OUT")"
${DT_ATTN:-dt-attn} sweep --config experiments/configs/learning_check_relu.json --attentions softmax --precision bf16 \
  --steps 4000 --eval-every 2000 --jobs 1 --threads-per-job 1 --report false --out-dir "$OUT" \
  > "$OUT.softmax.log" 2>&1 &
${DT_ATTN:-dt-attn} sweep --config experiments/configs/learning_check_relu.json --attentions softmax --precision fp32 \
  --steps 2000 --jobs 1 --threads-per-job 1 --report false --out-dir "$OUT-fp32" \
  > "$OUT-fp32.softmax.log" 2>&1 &
wait
${DT_ATTN:-dt-attn} report "$OUT" --out results/learning_check_bf16/bf16
${DT_ATTN:-dt-attn} report "$OUT-fp32" --out results/learning_check_bf16/fp32
