#!/usr/bin/env bash
# The GPU checks in one go (about 8 minutes on one H100/H200-class GPU): the engine's bf16 equivalence tests,
# then ivtlr bench on the Qwen2-VL-7B architecture (random weights, nothing downloaded): latency at batch 1
# (10 AR steps after the latents, as the paper's 0.65 s/question), throughput at batch 32, peak memory, against
# plain generate and the authors' recompute schedule; then one LoRA r64 training step at batch 4 with layer
# checkpointing. Writes docs/benchmarks-gpu.md with the exact commands and their output.
#
#   scripts/gpu_check.sh                       # on the GPU machine
#   DEVICE=cpu LAYERS=1 scripts/gpu_check.sh   # its CPU path: the same commands on a 1-layer cut, float32,
#                                              # 224 px images and K=16 (about 10 minutes on 2 cores)
#   DEVICE=cpu PRESET=none OUT=/tmp/x.md scripts/gpu_check.sh   # the same commands on bench's tiny model
#                                              # (tests/test_gpu_script.py runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-$([ "$DEVICE" = cuda ] && echo bfloat16 || echo float32)}
PRESET=${PRESET:-qwen2-vl-7b}
LAYERS=${LAYERS:-}
REPEATS=${REPEATS:-$([ "$DEVICE" = cuda ] && echo 5 || echo 1)}
BATCH=${BATCH:-$([ "$DEVICE" = cuda ] && echo 32 || echo 2)}
IMAGE=${IMAGE:-$([ "$DEVICE" = cuda ] && echo 448 || echo 224)}   # 448 px: 256 image tokens; 224 px: 64
K=${K:-$([ "$DEVICE" = cuda ] && echo 32 || echo 16)}             # the authors' K=32 (K x 3 steps <= image tokens)
OUT=${OUT:-docs/benchmarks-gpu.md}
cut=${LAYERS:+--preset-layers $LAYERS}
model=(--preset "$PRESET" $cut)
[ "$PRESET" = none ] && model=()   # bench's tiny Qwen2-VL
python=${PYTHON:-python}

run() {  # run a command, echo it and its output into the report
    echo "\$ $*" >&2
    { echo; echo '```'; echo "\$ $*"; "$@" 2>&1 | grep -v -E "Warning|warnings.warn|^\[transformers\]"; echo '```'; } >> "$OUT.tmp"
}

{
    echo "# GPU benchmarks and checks"
    echo
    echo "Written by \`scripts/gpu_check.sh\` on $(date -u +%Y-%m-%d), device $DEVICE ($DTYPE)."
    if [ "$DEVICE" = cuda ]; then
        $python -c "import torch; print('GPU:', torch.cuda.get_device_name(), '- torch', torch.__version__)"
    else
        echo "CPU path of the script (${PRESET} cut to ${LAYERS:-all} layer(s)): a check that the commands run, not a benchmark."
    fi
} > "$OUT.tmp"

if [ "$DEVICE" = cuda ]; then
    run $python -m pytest -q -n 0 -m gpu tests/test_gpu.py   # one process: the GPU is one device
fi
run $python -m ivtlr.commands bench "${model[@]}" --device "$DEVICE" --dtype "$DTYPE" \
    --image-size "$IMAGE" --latents 3 --k "$K" --new-tokens 10 --batch "$BATCH" --repeats "$REPEATS"
run $python -m ivtlr.commands bench --train "${model[@]}" --lora --device "$DEVICE" --dtype "$DTYPE" \
    --image-size "$IMAGE" --latents 3 --k "$K" --train-batch 4 --rest-tokens 64 --gradient-checkpointing --repeats "$REPEATS"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT" >&2
