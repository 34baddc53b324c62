#!/usr/bin/env bash
# bf16 learning check (session 13): the ReLU learning check's config (experiments/configs/learning_check_relu.json:
# hopper-medium-replay stand-in, Hopper-v4, K=20, embed 128, 3 layers, batch 64, lr 1e-4, warmup 1,000 then
# constant, seeds 0-2, 10 episodes per target 1800 and 3600, eval seed 1000), one attention (ATTENTION, default
# softmax; cosformer was run the same way with ATTENTION=cosformer OUT=runs/learning_check_bf16_cosformer
# REPORT=results/learning_check_bf16_cosformer), one code version,
# --precision bf16 beside --precision fp32: 4,000 steps each, evaluated at 2,000 and 4,000 steps in both
# readouts (--eval-exact: streaming and exact). The two sweeps run side by side, one thread each.
# DT_ATTN may name the command (default dt-attn), e.g. "python -m experiments.cli" in an unpacked snapshot.
# Run from a checkout's root with the stand-in data reachable (../shared/datasets or DT_ATTN_STANDIN_DIR).
set -euo pipefail
ATTENTION=${ATTENTION:-softmax}
OUT=${OUT:-runs/learning_check_bf16}
REPORT=${REPORT:-results/learning_check_bf16}
mkdir -p "$OUT"
for precision in bf16 fp32; do
  ${DT_ATTN:-dt-attn} sweep --config experiments/configs/learning_check_relu.json --attentions "$ATTENTION" \
    --precision "$precision" --steps 4000 --eval-every 2000 --eval-exact --jobs 1 --threads-per-job 1 \
    --report false --out-dir "$OUT/$precision" > "$OUT/$precision.log" 2>&1 &
done
wait
${DT_ATTN:-dt-attn} report "$OUT/bf16" "$OUT/fp32" --out "$REPORT"
