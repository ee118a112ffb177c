"""Fold Nsight Compute's Source page (SASS rows) into a per-source-file table.

Each op lives in its own file (csrc/ops/*.cuh), so warp-stall samples per file are
samples per op, split by stall reason. The SASS page names instructions by address;
the file and line of each address come from the cubin's line table (`nvdisasm -g`).

    ncu --import rep.ncu-rep --page source --csv --print-source sass > sass.csv
    python3 tools/ncu_by_op.py sass.csv --cubin-dir /tmp/tilewarp-cubin
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

_LINE = re.compile(r'//## File "([^"]+)", line (\d+)')
_ADDR = re.compile(r"/\*([0-9a-f]{4,})\*/")


def line_table(cubin: Path, nvdisasm: str) -> dict[int, tuple[str, int]]:
    """Instruction address -> (source file, line), from nvdisasm's line comments."""
    out = subprocess.run([nvdisasm, "-g", "-c", str(cubin)], check=True, capture_output=True, text=True).stdout
    table: dict[int, tuple[str, int]] = {}
    where = ("?", 0)
    for text in out.splitlines():
        m = _LINE.search(text)
        if m:
            where = (m.group(1), int(m.group(2)))
            continue
        m = _ADDR.search(text)
        if m:
            table[int(m.group(1), 16)] = where
    return table


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The CSV's header (the row naming `Address`) and its data rows."""
    rows = list(csv.reader(path.open(errors="replace")))
    for i, r in enumerate(rows):
        if "Address" in r:
            return r, [x for x in rows[i + 1:] if len(x) == len(r)]
    raise SystemExit(f"{path}: no header row with an 'Address' column (is this --page source --csv?)")


def number(s: str) -> float:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return 0.0


def short(f: str) -> str:
    return f.split("/csrc/")[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--cubin-dir", type=Path, required=True, help="the build cache holding the profiled cubin")
    ap.add_argument("--nvdisasm", default=shutil.which("nvdisasm") or "/usr/local/cuda/bin/nvdisasm")
    ap.add_argument("--top", type=int, default=25, help="hottest source lines to list")
    args = ap.parse_args()
    head, rows = read_rows(args.csv)
    col = {h: i for i, h in enumerate(head)}
    total_col = next((h for h in head if h.startswith("Warp Stall Sampling (All")), None)
    reasons = [h for h in head if h.startswith("stall_") or (h.startswith("Warp Stall Sampling") and h != total_col)]
    print("columns:", ", ".join(head))
    cubin = max(args.cubin_dir.glob("*.cubin"), key=lambda p: p.stat().st_mtime)
    where = line_table(cubin, args.nvdisasm)
    per_file: dict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    per_line: defaultdict[tuple[str, int], float] = defaultdict(float)
    # The kernel is one function (every op inlined): its addresses, less the lowest, are
    # the cubin's offsets whether ncu prints them absolute or relative.
    addrs = [int(r[col["Address"]], 0) for r in rows]
    base = min(addrs, default=0)
    for r, a in zip(rows, addrs):
        addr = a - base
        f, ln = where.get(addr, ("?", 0))
        tot = number(r[col[total_col]]) if total_col else 0.0
        per_file[short(f)]["samples"] += tot
        per_line[(short(f), ln)] += tot
        for h in reasons:
            per_file[short(f)][h] += number(r[col[h]])
        if "Instructions Executed" in col:
            per_file[short(f)]["executed"] += number(r[col["Instructions Executed"]])
    grand = sum(v["samples"] for v in per_file.values()) or 1.0
    print(f"\n{'file':28s} {'samples %':>9s}  top stall reasons (share of the file's samples)")
    for f, v in sorted(per_file.items(), key=lambda kv: -kv[1]["samples"]):
        if v["samples"] <= 0:
            continue
        top = sorted(((h, v[h]) for h in reasons if v[h] > 0), key=lambda kv: -kv[1])[:4]
        desc = ", ".join(f"{h.replace('stall_', '')} {100 * x / v['samples']:.0f}%" for h, x in top)
        print(f"{f:28s} {100 * v['samples'] / grand:8.1f}%  {desc}")
    print(f"\nhottest lines (% of all samples):")
    for (f, ln), s in sorted(per_line.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {100 * s / grand:5.1f}%  {f}:{ln}")


if __name__ == "__main__":
    main()
