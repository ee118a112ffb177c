#!/usr/bin/env bash
# Run a Python script on the device machine with the repo importable (tools/gpu_env.sh):
#   tools/gpu_py.sh examples/bench_megakernel.py --preset mimo-mini --trace "$OUT/trace.json"
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_env.sh
exec python3 -P "$@"
