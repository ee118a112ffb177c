#!/usr/bin/env bash
# Run one training step on the device machine (no install, no network), logging to $OUT.
#   bash examples/train/gpu_train.sh train_target  --preset stdlib-256 --minutes 8 --out "$OUT/target"
#   bash examples/train/gpu_train.sh train_drafter --target models/stdlib-256/target --out "$OUT/drafter"
#   bash examples/train/gpu_train.sh eval_acceptance --target ... --drafter ... --device cuda
# As tools/gpu_run.sh: `import tilewarp.*` resolves through a package dir of links (the repo's
# own tilewarp/ holds only __init__.py), and the repo root comes after it for `examples.train`.
set -uo pipefail
cd "$(dirname "$0")/../.."
step=${1:?usage: gpu_train.sh train_target|train_drafter|eval_acceptance [args...]}; shift
OUT=${OUT:-out}; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
pkg=$(mktemp -d)/tilewarp; mkdir -p "$pkg"
cp tilewarp/__init__.py "$pkg/"
for d in pipeline runtime csrc; do ln -s "$PWD/$d" "$pkg/$d"; done
export PYTHONPATH="$(dirname "$pkg"):$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
python3 -P -m "examples.train.$step" "$@" 2>&1 | tee "$OUT/$step.log"
exit "${PIPESTATUS[0]}"
