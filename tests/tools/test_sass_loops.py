"""tools/sass_loops.py: the hot loops of a build's SASS, and what an edit did to the code of
the ops it did not touch; with TW_SEPARATE_MXFP4 a placebo edit leaves the expert GEMV's
machine code byte for byte (docs/perf-notes.md v16)."""

from __future__ import annotations

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
def test_a_placebo_edit_leaves_the_separately_built_expert_gemv_identical(tmp_path):
    pytest.importorskip("cuda.bindings.nvjitlink", reason="nvrtc extra not installed")
    if _wheel_cuobjdump() is None:
        pytest.skip("cuobjdump not installed: pip install -e '.[nvrtc]'")
    lines = report([("sep", "TW_SEPARATE_MXFP4=1"), ("placebo", "TW_SEPARATE_MXFP4=1,TW_ROPE_STAGED=2")], 1,
                   str(tmp_path))
    second = lines[lines.index(next(x for x in lines if x.startswith("== placebo"))):]
    unit = next(x for x in second if "tw_gemv_mma_mxfp4_module" in x)
    kernel = next(x for x in second if x.strip().startswith("tw_megakernel:"))
    assert unit.endswith("(identical to the first)"), unit
    assert kernel.endswith("(changed)"), kernel   # the placebo did change the one-unit part
