#!/usr/bin/env bash
# On a CUDA machine with charfast installed: the tests (the GPU ones run, the kernels
# compiled), then the GPU benchmarks, each with its log (and JSON results) in OUT_DIR.
#   bash benchmarks/run_gpu.sh OUT_DIR
# Environment: TEST_SECONDS (300; 0 skips the tests), TEST_K (a pytest -k expression for
# the tests), BENCH_SECONDS (600; 0 skips the benchmarks), BENCH_K (default "gpu").
set -uo pipefail
out=${1:?usage: run_gpu.sh OUT_DIR}
mkdir -p "$out"
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
if [ "${TEST_SECONDS:-300}" -gt 0 ]; then
  timeout "${TEST_SECONDS:-300}" python -m pytest tests/ -q -rs -p no:cacheprovider -k "${TEST_K:-}" \
    2>&1 | tee "$out/tests.log"
fi
if [ "${BENCH_SECONDS:-600}" -gt 0 ]; then
  timeout "${BENCH_SECONDS:-600}" python -m pytest benchmarks/ --benchmark-only -q -p no:cacheprovider \
    -k "${BENCH_K:-gpu}" --benchmark-json "$out/bench.json" --benchmark-columns=median,iqr,rounds \
    2>&1 | tee "$out/bench.log"
fi
