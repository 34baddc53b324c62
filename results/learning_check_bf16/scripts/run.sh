#!/usr/bin/env bash
# bf16 learning check (session 12): the ReLU learning check's config (experiments/configs/learning_check_relu.json:
# hopper-medium-replay stand-in, softmax and cosFormer, K=20, embed 128, 3 layers, batch 64, lr 1e-4, warmup 1,000,
# seeds 0-2, 10 episodes per target, eval seed 1000) with --precision bf16, 4,000 steps, evaluated (streaming) at
# 2,000 and 4,000 steps, to set beside the float32 runs' curve points at the same steps
# (results/learning_check_relu/curves.csv). One sweep per attention, side by side, one thread each.
# DT_ATTN may name the command (default dt-attn), e.g. "python -m experiments.cli" in an unpacked snapshot.
# Run from a checkout's root with the stand-in data reachable (../shared/datasets or DT_ATTN_STANDIN_DIR).
set -euo pipefail
OUT=${OUT:-runs/learning_check_bf16}
mkdir -p "$(dirname "$OUT")"
for att in softmax cosformer; do
  ${DT_ATTN:-dt-attn} sweep --config experiments/configs/learning_check_relu.json --attentions "$att" --precision bf16 \
    --steps 4000 --eval-every 2000 --jobs 1 --threads-per-job 1 --report false --out-dir "$OUT" \
    > "$OUT.$att.log" 2>&1 &
done
wait
${DT_ATTN:-dt-attn} report "$OUT" --out results/learning_check_bf16
