"""Parsing ptxas -v output from NVRTC logs (no NVRTC needed: logs are captured text)."""

from __future__ import annotations

import json

import pytest

from tilewarp.pipeline.errors import DeviceError
from tilewarp.runtime.ptxas_report import ResourceReport, parse_ptxas_log

# Captured from NVRTC 13.5 (-arch=sm_90a --ptxas-options=-v -maxrregcount=32), plus one
# advisory line in the form ptxas prints for serialized wgmma.
LOG_13 = """\
ptxas info    : Overriding maximum register limit 256 for '_Z2tkILi3EEvPf' with  32 of maxrregcount option
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z2tkILi3EEvPf' for 'sm_90a'
ptxas info    : Function properties for _Z2tkILi3EEvPf
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 0 barriers
ptxas info    : Compile time = 1.505 ms
ptxas info    : Compiling entry function 'spill' for 'sm_90a'
ptxas info    : Function properties for spill
ptxas         .     400 bytes stack frame, 504 bytes spill stores, 508 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 1024 bytes smem, 400 bytes cumulative stack size
ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized
ptxas info    : Compile time = 20.646 ms
ptxas info    : Function properties for _Z6helperPfi
ptxas         .     16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
"""

# The older form, which still listed constant banks on the "Used" line.
LOG_OLD = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z1kPf' for 'sm_90a'
ptxas info    : Function properties for _Z1kPf
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, 384 bytes cmem[0], 8 bytes cmem[2]
ptxas warning : Registers are spilled to local memory in function 'other'
"""


def test_entries_frames_and_extras() -> None:
    r = parse_ptxas_log(LOG_13)
    assert sorted(r.kernels) == ["_Z2tkILi3EEvPf", "spill"]
    tk = r.kernels["_Z2tkILi3EEvPf"]
    assert (tk.registers, tk.barriers, tk.shared_bytes, tk.stack_frame_bytes) == (8, 0, 0, 0)
    assert not tk.spills and tk.compile_ms == pytest.approx(1.505)
    s = r.kernel("spill")
    assert (s.registers, s.barriers, s.shared_bytes) == (32, 1, 1024)
    assert (s.stack_frame_bytes, s.cumulative_stack_bytes) == (400, 400)
    assert (s.spill_store_bytes, s.spill_load_bytes) == (504, 508) and s.spills
    assert r.functions["_Z6helperPfi"].stack_frame_bytes == 16
    assert r.gmem_bytes == 0
    advisory = ("ptxas info    : (C7515) Potential Performance Loss: "
                "wgmma.mma_async instructions are serialized")
    assert r.warnings == [advisory]


def test_old_format_with_cmem_and_unprefixed_frame_line() -> None:
    r = parse_ptxas_log(LOG_OLD)
    k = r.kernel("k")  # plain name finds the mangled _Z1kPf
    assert k.registers == 40 and k.cmem_bytes == {0: 384, 2: 8}
    assert (k.stack_frame_bytes, k.spill_store_bytes, k.spill_load_bytes) == (8, 4, 4)
    assert len(r.warnings) == 1 and "spilled" in r.warnings[0]


def test_kernel_lookup_errors_name_what_exists() -> None:
    r = parse_ptxas_log(LOG_13)
    with pytest.raises(DeviceError, match=r"'nope' is not in the ptxas report; kernels reported: "
                                          r"_Z2tkILi3EEvPf, spill"):
        r.kernel("nope")
    both = parse_ptxas_log(LOG_13.replace("'spill'", "'_Z2tkILi4EEvPf'")
                           .replace("properties for spill", "properties for _Z2tkILi4EEvPf"))
    with pytest.raises(DeviceError, match="ambiguous"):
        both.kernel("tk")
    assert both.kernel("_Z2tkILi4EEvPf").registers == 32


def test_require_names_every_excess() -> None:
    r = parse_ptxas_log(LOG_13)
    assert r.require("_Z2tkILi3EEvPf", max_registers=8).registers == 8
    with pytest.raises(DeviceError) as info:
        r.require("spill", max_registers=24, max_shared_bytes=512)
    msg = str(info.value)
    for part in ("32 registers > 24", "spills 504 B stores / 508 B loads", "400 B stack > 0",
                 "1024 B static smem > 512"):
        assert part in msg


def test_json_round_trip() -> None:
    r = parse_ptxas_log(LOG_OLD + LOG_13)
    assert ResourceReport.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_no_ptxas_lines_gives_empty_report() -> None:
    r = parse_ptxas_log("some front-end warning\n")
    assert r.kernels == {} and r.warnings == []
