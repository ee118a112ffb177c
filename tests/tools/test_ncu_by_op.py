"""tools/ncu_by_op.py: Nsight Compute's Source page (one row per SASS instruction) folds
into warp-stall samples per source file, i.e. per op, through the cubin's line table,
whether ncu prints instruction addresses absolute or relative."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "ncu_by_op.py"
spec = importlib.util.spec_from_file_location("ncu_by_op", TOOL)
ncu_by_op = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ncu_by_op)

SASS = """
	//## File "/repo/csrc/megakernel.cu", line 40
        /*0000*/                   LDC R1, c[0x0][0x28] ;
	//## File "/repo/csrc/ops/route.cuh", line 12
        /*0010*/                   LDS R2, [R3] ;
        /*0020*/                   FADD R2, R2, R2 ;
	//## File "/repo/csrc/ops/gemv_mxfp4.cuh", line 90
        /*0030*/                   FFMA R4, R5, R6, R4 ;
"""
HEAD = ["Address", "Source", "Warp Stall Sampling (All Samples)", "stall_long_sb", "stall_long_sb (Not Issued)",
        "stall_no_inst"]


def rows(base: int) -> list[list[str]]:
    return [[hex(base + 0x00), "LDC", "1", "1", "1", "0"],
            [hex(base + 0x10), "LDS", "4", "1", "1", "3"],
            [hex(base + 0x20), "FADD", "2", "0", "0", "2"],
            [hex(base + 0x30), "FFMA", "8", "8", "7", "0"]]


def test_the_line_table_maps_each_instruction_to_the_source_line_above_it():
    table = ncu_by_op.parse_line_table(SASS)
    assert table[0x10] == ("/repo/csrc/ops/route.cuh", 12) and table[0x20] == ("/repo/csrc/ops/route.cuh", 12)
    assert table[0x30] == ("/repo/csrc/ops/gemv_mxfp4.cuh", 90)


def test_samples_fold_per_op_file_and_line_with_their_stall_reasons():
    where = ncu_by_op.parse_line_table(SASS)
    for base in (0, 0x7F12_3400_0000):   # relative or absolute addresses: same answer
        per_file, per_line = ncu_by_op.fold(HEAD, rows(base), where)
        assert per_file["ops/route.cuh"]["samples"] == 6
        assert per_file["ops/route.cuh"]["stall_no_inst"] == 5
        assert per_file["ops/gemv_mxfp4.cuh"]["stall_long_sb"] == 8
        assert per_line[("ops/gemv_mxfp4.cuh", 90)] == 8 and per_line[("megakernel.cu", 40)] == 1
    assert "stall_long_sb (Not Issued)" not in ncu_by_op.stall_reasons(HEAD)
