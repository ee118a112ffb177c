#!/usr/bin/env bash
# The GPU test runner: on the device machine, in one call, build the megakernel, run
# the GPU tests and print a short table. Logs go to $OUT (or ./out).
#   tools/gpu_run.sh [pytest args...]      e.g. tools/gpu_run.sh -m "not slow"
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -P -c "import torch, cuda.bindings; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
python3 -P -m pytest -q -rs -p no:cacheprovider tests/gpu "$@" 2>&1 | tee "$OUT/gpu_tests.log"
status=${PIPESTATUS[0]}
echo "=== summary ==="; grep -E "passed|failed|error" "$OUT/gpu_tests.log" | tail -3
exit $status
