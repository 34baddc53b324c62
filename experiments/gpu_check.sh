#!/usr/bin/env bash
# Verify dt-attn on a machine with a CUDA GPU in one short call (sized for a few minutes on one recent GPU):
#   1. the GPU tests (pytest -m gpu: training in fp32 and bf16, both rollouts, the benchmarks, DDP with
#      nccl when there are two GPUs),
#   2. the attention benchmark (forward+backward and incremental step, every mechanism against SDPA),
#   3. the training benchmark (throughput in fp32 and bf16 against HuggingFace's DT),
#   4. the context benchmark (training cost against context length).
# Each step's output goes to OUT/<step>.txt and its tables (CSV, JSON, plots) under OUT/; a step that
# fails does not stop the next ones, and the script exits non-zero when any failed.
#
#   experiments/gpu_check.sh [OUT]            # OUT defaults to gpu_check/
# Run from anywhere; it uses the Python on PATH (set PYTHON to choose another).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check}"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this tree's code, also when another copy is installed

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: torch sees no CUDA device here; run this on a machine with a GPU (and a CUDA build of torch)" >&2
    exit 2
fi
mkdir -p "$OUT"
failed=()

step() {  # step NAME COMMAND...: run it, its output to the terminal and to OUT/NAME.txt
    local name="$1"; shift
    echo "== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

{ nvidia-smi || true; "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'GPUs', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

step gpu_tests "$PY" -m pytest -q -m gpu -rs tests

# In-process cells: on CUDA the allocator's own peak (reset per cell) is the honest memory figure.
step bench_attention "$PY" -m experiments.cli bench-attention --device cuda --isolate false \
    --tokens 256 1024 3072 8192 16384 --repeats 3 --out-dir "$OUT/attention"

step bench_training "$PY" -m experiments.cli bench-training --device cuda --precisions fp32 bf16 \
    --timed-steps 40 --rounds 4 --out-dir "$OUT/training"

step bench_context "$PY" -m experiments.cli bench-context --device cuda --contexts 20 100 300 1000 --steps 5 \
    --out-dir "$OUT/context"

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu check: FAILED: ${failed[*]} (outputs in $OUT/)"
    exit 1
fi
echo "gpu check: all steps passed; tables in $OUT/ (attention/, training/, context/, *.txt)"
