#!/usr/bin/env bash
# One device call: A/B of csrc / policy variants at the first step size (tools/ab_defines.py),
# the GPU test suite (default build), then the A/B at the other step sizes. Each part has a
# time limit, so the call ends inside the device tool's 10 minutes; logs go to $OUT and the
# tables are printed last.
#   tools/session_check.sh "base=TW_FOO=0;new=" [A/B seconds] [test seconds] [step sizes, default "1 8"]
# Variants that only exist in one-token builds want
# step sizes "1": a T = 8 build refuses them. AB_OPS=OP,OP picks the ops whose task times print;
# AB_BY_STAGE=1 makes the rows op and stage kind (AB_OPS=LINEAR:qkv,LINEAR:o,...).
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_env.sh
variants=${1:?usage: session_check.sh VARIANTS [AB_SECONDS] [TEST_SECONDS] [STEP_SIZES]}
ab_s=${2:-140}
test_s=${3:-280}
sizes=${4:-1 8}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
ab() {
    timeout "$ab_s" python3 -P tools/ab_defines.py --variants "$variants" --tokens "$1" --rounds 3 \
        --ops "${AB_OPS:-EXPERT_UP,EXPERT_DOWN,ROUTE,LINEAR}" ${AB_BY_STAGE:+--by-stage} > "$OUT/ab_t$1.log" 2>&1
    echo "ab T=$1 exit $?" >> "$OUT/ab_t$1.log"
}
first=${sizes%% *}
ab "$first"
timeout "$test_s" python3 -P -m pytest -q -rs -p no:cacheprovider tests/gpu > "$OUT/gpu_tests.log" 2>&1
echo "tests exit $?" >> "$OUT/gpu_tests.log"
for t in $sizes; do [ "$t" = "$first" ] || ab "$t"; done
echo "=== tests ==="; grep -E "passed|failed|error|FAILED|exit" "$OUT/gpu_tests.log" | tail -8
for t in $sizes; do echo "=== A/B T=$t ==="; grep -v "^round" "$OUT/ab_t$t.log" | tail -24; done
