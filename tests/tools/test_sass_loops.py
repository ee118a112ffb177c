"""tools/sass_loops.py: the hot loops of a build's SASS, and what an edit did to them; on the
real kernel it sees the tensor-core GEMV's block copy loop shorter than the generic loop it
replaced (docs/perf-notes.md v17)."""

from __future__ import annotations

import os

import pytest

from tools.sass_loops import _wheel_cuobjdump, functions, hot_loops, inner_loops, report

SASS = """
	code for sm_90a
		Function : tw_kernel
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDS R2, [R3] ;
        /*0020*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0030*/              @!PT LDS RZ, [RZ] ;
        /*0040*/                   LDGSTS.E.BYPASS.128 [R5+0x80], desc[UR10][R6.64] ;
        /*0050*/               @P0 BRA 0x10 ;
        /*0060*/                   FADD R1, R1, R2 ;
        /*0070*/               @P1 BRA 0x0 ;
        /*0080*/                   EXIT ;
		Function : helper
        /*0000*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0010*/                   RET.REL.NODEC R20 0x0 ;
"""


def test_functions_and_their_instructions_are_read_from_cuobjdump_text():
    funcs = functions(SASS)
    assert list(funcs) == ["tw_kernel", "helper"]
    assert funcs["tw_kernel"][2] == (0x20, "HMMA.16816.F32 R4, R8, R12, R4")


def test_only_innermost_loops_count_and_fillers_are_left_out():
    loops = inner_loops(functions(SASS)["tw_kernel"])
    assert [(lp.start, lp.end) for lp in loops] == [(0x10, 0x50)]   # the outer 0x0-0x70 holds it
    (lp,) = loops
    assert len(lp.body) == 4 and not any(t.startswith("@!PT") for t in lp.body)
    assert lp.counts()["HMMA"] == 1 and lp.counts()["LDGSTS"] == 1 and lp.counts()["LDS"] == 1
    assert hot_loops(functions(SASS)["helper"]) == []


@pytest.mark.slow
def test_the_block_copy_loop_is_shorter_than_the_generic_one_it_replaced(tmp_path, monkeypatch):
    if _wheel_cuobjdump() is None:
        pytest.skip("cuobjdump not installed: pip install -e '.[nvrtc]'")
    monkeypatch.setenv("TILEWARP_DEFINES", "TW_E8M0_FOLD=1")
    lines = report([("block", ""), ("generic", "TW_MMA_ISSUE_BLOCK=0")], 1, str(tmp_path))
    assert os.environ["TILEWARP_DEFINES"] == "TW_E8M0_FOLD=1"   # the caller's defines are left alone
    cut = lines.index(next(x for x in lines if x.startswith("== generic")))

    def copy_loops(part: list[str]) -> list[int]:   # the loops that copy weights and do no math
        return [int(x.split()[2]) for x in part if x.strip().startswith("loop") and "LDGSTS" in x and "HMMA" not in x]

    block, generic = copy_loops(lines[:cut]), copy_loops(lines[cut:])
    assert block and generic
    assert max(generic) > max(block), (block, generic)
    assert next(x for x in lines[cut:] if x.strip().startswith("tw_megakernel:")).endswith("(changed)")
