#!/usr/bin/env bash
# One device call for a csrc change that is to land: the GPU tests, compute-sanitizer
# memcheck and racecheck on tiny (tools/sanitize_tiny.py), and the same-run benchmark
# against the PyTorch CUDA graph (tilewarp bench). Each part has a time limit, so the call
# ends inside the device tool's 10 minutes; logs go to $OUT, a summary is printed last.
#   tools/session_verify.sh [test seconds] [sanitizer seconds] [bench seconds]
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_env.sh
test_s=${1:-220}; san_s=${2:-100}; bench_s=${3:-170}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
timeout "$test_s" python3 -P -m pytest -q -rs -p no:cacheprovider tests/gpu > "$OUT/gpu_tests.log" 2>&1
echo "tests exit $?" >> "$OUT/gpu_tests.log"
san() {
    timeout "$san_s" compute-sanitizer --tool "$1" "${@:2}" --kernel-name kns=tw_megakernel \
        python3 -P tools/sanitize_tiny.py > "$OUT/$1.log" 2>&1
    echo "$1 exit $?" >> "$OUT/$1.log"
}
san memcheck --report-api-errors no
san racecheck
timeout "$bench_s" python3 -P -m tilewarp bench --preset mimo-mini --rows graph,megakernel --tokens 1,8 \
    --steps 100 > "$OUT/bench.log" 2>&1
echo "bench exit $?" >> "$OUT/bench.log"
echo "=== tests ==="; grep -E "passed|failed|FAILED|exit" "$OUT/gpu_tests.log" | tail -6
for t in memcheck racecheck; do echo "=== $t ==="; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|done|exit" "$OUT/$t.log" | tail -3; done
echo "=== bench ==="; tail -14 "$OUT/bench.log"
