"""Readable build errors from NVRTC logs (captured text; no NVRTC needed)."""

from __future__ import annotations

import pytest

from tilewarp.pipeline.errors import DeviceError
from tilewarp.runtime.build_errors import build_error, error_lines, ptx_source_line, warning_lines
from tilewarp.runtime.cubin_elf import section_sizes

FRONTEND_LOG = """\
/src/core/bad.cuh(2): error: expected a ";"
  __device__ int f() { return 1 }
                                ^

main.cu(7): warning #177-D: variable "x" was declared but never referenced

main.cu(9): catastrophic error: cannot open source file "cuda/ptx"
  #include <cuda/ptx>
                     ^

2 errors detected in the compilation of "main.cu".
"""

PTX = """\
.visible .entry k(
{
\t.loc\t1 1 0
\tld.param.u64 \t%rd1, [k_param_0];
\t.loc\t1 14 28
\tcvta.to.global.u64 \t%rd2, %rd1;
\tbogus.op.u32 %r1;
\tret;
}
\t.file\t1 "/src/main.cu"
"""

PTXAS_LOG = """\
ptxas application ptx input, line 7; error   : Not a name of any known instruction: 'bogus'
ptxas fatal   : Ptx assembly aborted due to errors
"""


def test_frontend_errors_become_path_colon_line() -> None:
    assert error_lines(FRONTEND_LOG) == [
        '/src/core/bad.cuh:2: error: expected a ";"',
        'main.cu:9: catastrophic error: cannot open source file "cuda/ptx"',
    ]


def test_frontend_warnings_are_listed_too() -> None:
    assert warning_lines(FRONTEND_LOG) == [
        'main.cu:7: warning #177-D: variable "x" was declared but never referenced']


def test_ptxas_errors_map_through_loc_directives() -> None:
    assert ptx_source_line(PTX, 7) == "/src/main.cu:14"
    assert ptx_source_line(PTX, 2) is None  # before any .loc
    assert error_lines(PTXAS_LOG, PTX) == [
        "/src/main.cu:14: ptxas error (PTX line 7): Not a name of any known instruction: 'bogus'",
        "ptxas fatal   : Ptx assembly aborted due to errors",
    ]
    assert error_lines(PTXAS_LOG)[0].startswith("<generated PTX>: ptxas error (PTX line 7)")


def test_build_error_message_and_cccl_hint() -> None:
    err = build_error("main.cu", "sm_90a", "NVRTC_ERROR_COMPILATION", FRONTEND_LOG,
                      ["-arch=sm_90a", "-DX=1"], cccl_found=False)
    msg = str(err)
    assert isinstance(err, DeviceError)
    assert msg.startswith("NVRTC failed to compile main.cu for sm_90a (NVRTC_ERROR_COMPILATION)")
    assert "hint: <cuda/ptx> is a CCCL header" in msg
    assert "options: -arch=sm_90a -DX=1" in msg and msg.endswith(FRONTEND_LOG.strip())
    assert err.log == FRONTEND_LOG and len(err.errors) == 2
    assert "hint" not in str(build_error("m", "sm_90a", "E", FRONTEND_LOG, [], cccl_found=True))


def test_non_elf_cubin_is_rejected() -> None:
    with pytest.raises(DeviceError, match="not an ELF file"):
        section_sizes(b"// PTX text, not a cubin")
