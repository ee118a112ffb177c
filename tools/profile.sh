#!/usr/bin/env bash
# Nsight Compute on one megakernel launch, with source correlation (builds carry
# -lineinfo). Writes $OUT/megakernel.ncu-rep (open with `ncu-ui`), a text summary, and
# the Source page as CSV (per SASS instruction: address, executions, warp-stall samples
# by reason), which tools/ncu_by_op.py folds into a per-file (= per-op) table.
#   tools/profile.sh [script [args...]]   default: tools/sanitize_tiny.py (a few tiny steps)
#   tools/profile.sh examples/bench_megakernel.py --preset mimo-mini --steps 8 --repeats 1
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_env.sh
export PATH=$PATH:/usr/local/cuda/bin
[ $# -gt 0 ] || set -- tools/sanitize_tiny.py
# A fresh build cache, so the profiled cubin is found (ncu_by_op.py reads its line table).
export TILEWARP_CACHE_DIR=$(mktemp -d)
# Leave the clocks as they are (--clock-control none): the machine is shared.
# NCU_SECTIONS narrows what is collected (fewer replay passes on a big model).
ncu --clock-control none --kernel-name tw_megakernel --launch-count 1 ${NCU_SECTIONS:---set full} --import-source yes \
    -f -o "$OUT/megakernel" python3 -P "$@" > "$OUT/ncu_run.log" 2>&1
echo "ncu rc=$?"; tail -3 "$OUT/ncu_run.log"
ncu --import "$OUT/megakernel.ncu-rep" --page details > "$OUT/ncu_details.txt" 2>&1
ncu --import "$OUT/megakernel.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu_sass.csv" 2>&1
grep -E "Duration|Memory Throughput|DRAM Throughput|Registers Per Thread|Achieved Occupancy|Compute \(SM\) Throughput|L2 Cache Throughput|Warp Cycles Per Issued|Issue Slots Busy" "$OUT/ncu_details.txt" | head -20
# The profiled launch is the first one: the first cubin built (a script may build more).
cp "$(ls -tr "$TILEWARP_CACHE_DIR"/*.cubin | head -1)" "$OUT/megakernel.cubin"
python3 -P tools/ncu_by_op.py "$OUT/ncu_sass.csv" --cubin-dir "$OUT" | tee "$OUT/ncu_by_op.txt"
