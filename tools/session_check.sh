#!/usr/bin/env bash
# One device call: A/B of csrc variants at T = 1 (tools/ab_defines.py), the GPU test suite
# (tools/gpu_run.sh's tests, default build), then the A/B at T = 8. Each part has a time
# limit, so the call ends inside the device tool's 10 minutes; logs go to $OUT and the
# tables are printed last.
#   tools/session_check.sh "base=TW_FOO=0;new=" [A/B seconds] [test seconds]
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_env.sh
variants=${1:?usage: session_check.sh VARIANTS [AB_SECONDS] [TEST_SECONDS]}
ab_s=${2:-140}
test_s=${3:-280}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
ab() {
    timeout "$ab_s" python3 -P tools/ab_defines.py --variants "$variants" --tokens "$1" --rounds 3 \
        --ops EXPERT_UP,EXPERT_DOWN,ROUTE,LINEAR > "$OUT/ab_t$1.log" 2>&1
    echo "ab T=$1 exit $?" >> "$OUT/ab_t$1.log"
}
ab 1
timeout "$test_s" python3 -P -m pytest -q -rs -p no:cacheprovider tests/gpu > "$OUT/gpu_tests.log" 2>&1
echo "tests exit $?" >> "$OUT/gpu_tests.log"
ab 8
echo "=== tests ==="; grep -E "passed|failed|error|FAILED|exit" "$OUT/gpu_tests.log" | tail -8
for t in 1 8; do echo "=== A/B T=$t ==="; grep -v "^round" "$OUT/ab_t$t.log" | tail -6; done
