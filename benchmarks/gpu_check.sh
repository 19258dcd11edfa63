#!/usr/bin/env bash
# The first call of a session with a GPU: the essentials, in order of value, in one call of
# at most 9 minutes (each step under its own timeout, each writing its log under $OUT as it
# goes, so a second, shorter call can redo what broke):
#   1. the GPU-marked tests (kernels compiled; split forward, sync debug, CUDA graphs, ...)
#   2. one dependent step, tiled vs resident vs split kernels, forward and backward
#      (chain_latency.py; resident at hidden 128 only: W_hh must fit on chip)
#   3. the char embedding, forward + backward, B=16 and 64, hidden 128 and 768: triton
#      (tiled, resident, split-stepped, split-persistent) against cuDNN padded and packed
#   4. the GPT-2-small step, baseline vs char (char-LSTM hidden 128, the target's), interleaved,
#      compiled; and its optimizer step of 4 micro-batches with the char embedding once per step
# Usage (device tool): bash benchmarks/gpu_check.sh        (writes $OUT/gpu_check/*)
# Seconds per step: CHECK_TESTS 150, CHECK_CHAIN 60, CHECK_CHAR 120, CHECK_GPT 170.
set -uo pipefail
out="${OUT:-/tmp/out}/gpu_check"
mkdir -p "$out"
unset TRITON_INTERPRET
export TRITON_DEFAULT_FP_FUSION=1
if ! python -c "import charfast.kernels" 2>/dev/null; then
  python -m pip install --no-deps --no-build-isolation -e . > "$out/install.log" 2>&1 \
    || { echo "installing charfast failed"; tail -20 "$out/install.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$out/gpu.txt"
python -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'triton', triton.__version__, torch.cuda.get_device_name())" >> "$out/gpu.txt"
cat "$out/gpu.txt"

source "$(dirname "$0")/steps.sh"  # step NAME SECONDS COMMAND...

step tests "${CHECK_TESTS:-150}" python -m pytest tests/ -m gpu -q -rfEs -p no:cacheprovider
step chain "${CHECK_CHAIN:-60}" python benchmarks/chain_latency.py --hidden 128 768 \
  --kernels tiled resident split-stepped split-persistent
step char "${CHECK_CHAR:-120}" python -m pytest benchmarks/test_bench_char_lstm_gpu.py --benchmark-only -q \
  -p no:cacheprovider -k "forward_backward and (triton or cudnn) and not 256" \
  --benchmark-json "$out/char.json" --benchmark-columns=median,iqr,rounds
CHARFAST_BENCH_CHAR_HIDDEN=128 step gpt "${CHECK_GPT:-170}" python -m pytest benchmarks/test_bench_gpt_step_gpu.py --benchmark-only -q \
  -p no:cacheprovider -k "(interleaved and compiled) or grad_accum" \
  --benchmark-json "$out/gpt.json" --benchmark-columns=median,iqr,rounds

echo "=== summary ==="
cat "$out/steps.txt"
grep -E "^(FAILED|ERROR)| (passed|failed|skipped)" "$out/tests.log" | cut -c1-300 | tail -15
cat "$out/chain.log" | tail -8
for log in char gpt; do
  sed -n '/charfast: ratios within each group/,$p' "$out/$log.log" | grep -vE "^-|^Name|^$" | head -40
done
