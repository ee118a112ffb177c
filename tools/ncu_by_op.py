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


def parse_line_table(sass: str) -> dict[int, tuple[str, int]]:
    """Instruction offset -> (source file, line), from `nvdisasm -g` output."""
    table: dict[int, tuple[str, int]] = {}
    where = ("?", 0)
    for text in sass.splitlines():
        m = _LINE.search(text)
        if m:
            where = (m.group(1), int(m.group(2)))
            continue
        m = _ADDR.search(text)
        if m:
            table[int(m.group(1), 16)] = where
    return table


def line_table(cubin: Path, nvdisasm: str) -> dict[int, tuple[str, int]]:
    return parse_line_table(subprocess.run([nvdisasm, "-g", "-c", str(cubin)], check=True, capture_output=True,
                                           text=True).stdout)


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


def stall_reasons(head: list[str]) -> list[str]:
    """The per-reason sample columns (all samples; the "(Not Issued)" copies are subsets)."""
    return [h for h in head if h.startswith("stall_") and not h.endswith("(Not Issued)")]


def fold(head: list[str], rows: list[list[str]], where: dict[int, tuple[str, int]]):
    """Samples per file (total and per reason) and per (file, line). The kernel is one
    function (every op inlined): its addresses, less the lowest, are the cubin's offsets
    whether ncu prints them absolute or relative."""
    col = {h: i for i, h in enumerate(head)}
    total_col = next((h for h in head if h.startswith("Warp Stall Sampling (All")), None)
    per_file: dict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    per_line: defaultdict[tuple[str, int], float] = defaultdict(float)
    addrs = [int(r[col["Address"]], 0) for r in rows]
    base = min(addrs, default=0)
    for r, a in zip(rows, addrs):
        f, ln = where.get(a - base, ("?", 0))
        f = short(f)
        tot = number(r[col[total_col]]) if total_col else 0.0
        per_file[f]["samples"] += tot
        per_line[(f, ln)] += tot
        for h in stall_reasons(head):
            per_file[f][h] += number(r[col[h]])
    return per_file, per_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--cubin-dir", type=Path, required=True, help="the build cache holding the profiled cubin")
    ap.add_argument("--nvdisasm", default=shutil.which("nvdisasm") or "/usr/local/cuda/bin/nvdisasm")
    ap.add_argument("--top", type=int, default=25, help="hottest source lines to list")
    args = ap.parse_args()
    head, rows = read_rows(args.csv)
    cubin = max(args.cubin_dir.glob("*.cubin"), key=lambda p: p.stat().st_mtime)
    per_file, per_line = fold(head, rows, line_table(cubin, args.nvdisasm))
    reasons = stall_reasons(head)
    grand = sum(v["samples"] for v in per_file.values()) or 1.0
    print(f"{'file':28s} {'samples %':>9s}  top stall reasons (share of the file's samples)")
    for f, v in sorted(per_file.items(), key=lambda kv: -kv[1]["samples"]):
        if v["samples"] <= 0:
            continue
        top = sorted(((h, v[h]) for h in reasons if v[h] > 0), key=lambda kv: -kv[1])[:4]
        desc = ", ".join(f"{h.replace('stall_', '')} {100 * x / v['samples']:.0f}%" for h, x in top)
        print(f"{f:28s} {100 * v['samples'] / grand:8.1f}%  {desc}")
    print("\nhottest lines (% of all samples):")
    for (f, ln), s in sorted(per_line.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {100 * s / grand:5.1f}%  {f}:{ln}")


if __name__ == "__main__":
    main()
