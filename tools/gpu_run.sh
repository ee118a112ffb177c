#!/usr/bin/env bash
# The GPU test runner: on the device machine, in one call, build the megakernel, run
# the GPU tests and print a short table. Logs go to $OUT (or ./out).
#   tools/gpu_run.sh [pytest args...]      e.g. tools/gpu_run.sh -m "not slow"
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 TILEWARP_CACHE_DIR=${TILEWARP_CACHE_DIR:-/tmp/tilewarp-cubin}
# Make `import tilewarp.*` work without installing: a package dir of links.
pkg=$(mktemp -d)/tilewarp; mkdir -p "$pkg"
cp tilewarp/__init__.py "$pkg/"
for d in pipeline runtime csrc; do ln -s "$PWD/$d" "$pkg/$d"; done
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
export PYTHONPATH="$(dirname "$pkg")${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -P -c "import torch, cuda.bindings; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
python3 -P -m pytest -q -rs -p no:cacheprovider tests/gpu "$@" 2>&1 | tee "$OUT/gpu_tests.log"
status=${PIPESTATUS[0]}
echo "=== summary ==="; grep -E "passed|failed|error" "$OUT/gpu_tests.log" | tail -3
exit $status
