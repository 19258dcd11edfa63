#!/usr/bin/env bash
# The second call of a session with a GPU (after gpu_check.sh): the study end to end on
# CUDA, which no CPU test can run (FlashAttention refuses float32 activations there, so
# every forward must run under the model's precision policy): the quick preset narrowed to
# one tokenizer and seed on the local engine, then the same on a private Ray cluster
# (skipped, saying so, when Ray is not installed). Each step under its own timeout, logs
# under $OUT/gpu_study/ as they go.
# Usage (device tool): bash benchmarks/gpu_study_check.sh     (about 3 minutes)
# Seconds per step: STUDY_LOCAL 100, STUDY_RAY 80.
set -uo pipefail
out="${OUT:-/tmp/out}/gpu_study"
mkdir -p "$out"
unset TRITON_INTERPRET
if ! python3 -c "import charfast.kernels" 2>/dev/null; then
  python3 -m pip install --no-deps --no-build-isolation -e . > "$out/install.log" 2>&1 \
    || { echo "installing charfast failed"; tail -20 "$out/install.log"; exit 1; }
fi
timeout 30 python3 -c "import torch, triton; print(torch.cuda.get_device_name())" | tee "$out/gpu.txt" \
  || { echo "no usable GPU"; exit 1; }

source "$(dirname "$0")/steps.sh"  # step NAME SECONDS COMMAND...

study=(python3 -m charfast.study --preset quick --tokenizers bpe:300 --seeds 0 --device cuda)
step study_local "${STUDY_LOCAL:-100}" "${study[@]}" --out-dir "$out/study_local"
if python3 -c "import ray" 2>/dev/null; then
  step study_ray "${STUDY_RAY:-80}" "${study[@]}" --engine ray --out-dir "$out/study_ray"
else
  echo "study_ray: skipped, Ray is not installed here" | tee -a "$out/steps.txt"
fi

echo "=== summary ==="
cat "$out/steps.txt"
for log in study_local study_ray; do
  [ -f "$out/$log.log" ] && { echo "--- $log"; grep -E "error|failed|wrote .*report|unchanged" "$out/$log.log" | tail -5; }
done
