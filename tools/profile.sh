#!/usr/bin/env bash
# Nsight Compute on one megakernel launch, with source correlation (builds carry
# -lineinfo). Writes $OUT/megakernel.ncu-rep (open with `ncu-ui`) and a text summary.
#   tools/profile.sh [script]     default: tools/sanitize_tiny.py (a few tiny steps)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
export TILEWARP_CACHE_DIR=${TILEWARP_CACHE_DIR:-/tmp/tilewarp-cubin} PYTHONUNBUFFERED=1
pkg=$(mktemp -d)/tilewarp; mkdir -p "$pkg"; cp tilewarp/__init__.py "$pkg/"
for d in pipeline runtime csrc; do ln -s "$PWD/$d" "$pkg/$d"; done
export PYTHONPATH="$(dirname "$pkg")${PYTHONPATH:+:$PYTHONPATH}"
script=${1:-tools/sanitize_tiny.py}
# Leave the clocks as they are (--clock-control none): the machine is shared.
ncu --clock-control none --kernel-name tw_megakernel --launch-count 1 --set full --import-source yes \
    -f -o "$OUT/megakernel" python3 -P "$script" > "$OUT/ncu_run.log" 2>&1
echo "ncu rc=$?"; tail -3 "$OUT/ncu_run.log"
ncu --import "$OUT/megakernel.ncu-rep" --page details > "$OUT/ncu_details.txt" 2>&1
grep -E "Duration|Memory Throughput|DRAM Throughput|Registers Per Thread|Achieved Occupancy|Compute \(SM\) Throughput|L2 Cache Throughput|Warp Cycles Per Issued|Issue Slots Busy" "$OUT/ncu_details.txt" | head -20
