#!/usr/bin/env bash
# Run one training step on the device machine (no install, no network), logging to $OUT.
#   bash examples/train/gpu_train.sh train_target  --preset stdlib-256 --minutes 8 --out "$OUT/target"
#   bash examples/train/gpu_train.sh train_drafter --target models/stdlib-256/target --out "$OUT/drafter"
#   bash examples/train/gpu_train.sh eval_acceptance --target ... --drafter ... --device cuda
# The environment (NVLink multicast off, `import tilewarp.*` through a package dir of links,
# the repo root for `examples.train`) is tools/gpu_env.sh, shared with tools/gpu_run.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
step=${1:?usage: gpu_train.sh train_target|train_drafter|eval_acceptance [args...]}; shift
source tools/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
python3 -P -m "examples.train.$step" "$@" 2>&1 | tee "$OUT/$step.log"
exit "${PIPESTATUS[0]}"
