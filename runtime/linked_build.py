"""A megakernel of several translation units: each compiled by NVRTC with ``-rdc=true``
(cached as any cubin), then linked into one loadable cubin by nvJitLink.

Why: the megakernel is one translation unit, so any edit re-rolls the code generation of
every op (docs/perf-notes.md v16, "the build lottery": a never-taken branch in ROPE_KV moved
the expert tasks by +1 us). A hot op compiled in its own unit and linked keeps its machine
code byte for byte whatever changes elsewhere (``TW_SEPARATE_MXFP4``, runtime/megakernel.py).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Mapping, Sequence

from tilewarp.pipeline.errors import DeviceError
from tilewarp.runtime.nvrtc_build import DEFAULT_ARCH, BuildResult, DefineValue, compile_cubin
from tilewarp.runtime.ptxas_report import ResourceReport

#: A separately compiled unit is a device function, with no launch bounds of its own: it is
#: held to the 12-warp CTA's register budget (65536 / 384 threads, in ptxas's allocation
#: units), which the kernel's own launch bounds give it.
UNIT_MAX_REGISTERS = 168

NVJITLINK_HINT = ("nvJitLink is not installed: pip install 'tilewarp[nvrtc]' or 'tilewarp[cuda13]' "
                  "(nvidia-nvjitlink), or 'tilewarp[cuda12]' (nvidia-nvjitlink-cu12)")


def link_cubins(parts: Sequence[tuple[str, bytes]], arch: str) -> bytes:
    """One cubin for `arch` from relocatable cubins (name, bytes); raises DeviceError with
    nvJitLink's log when a symbol is missing or defined twice."""
    try:
        nvjitlink = importlib.import_module("cuda.bindings.nvjitlink")
    except ImportError as e:
        raise DeviceError(NVJITLINK_HINT) from e
    try:
        handle = nvjitlink.create(1, [f"-arch={arch}"])
    except RuntimeError as e:   # cuda.pathfinder: the library is not on disk
        raise DeviceError(f"{NVJITLINK_HINT} ({str(e).splitlines()[0]})") from e
    try:
        try:
            for name, cubin in parts:
                nvjitlink.add_data(handle, nvjitlink.InputType.CUBIN, cubin, len(cubin), name)
            nvjitlink.complete(handle)
        except nvjitlink.nvJitLinkError as e:
            size = nvjitlink.get_error_log_size(handle)
            text = bytearray(size)
            if size > 1:
                nvjitlink.get_error_log(handle, text)
            detail = text.decode(errors="replace").rstrip("\0").strip()
            raise DeviceError(f"nvJitLink could not link {[n for n, _ in parts]} for {arch}: {e}"
                              + (f"\n{detail}" if detail else "")) from e
        out = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, out)
        return bytes(out)
    finally:
        nvjitlink.destroy(handle)


def build_linked(main: Path, units: Sequence[Path], defines: Mapping[str, DefineValue],
                 cache_dir: str | Path | None = None, arch: str = DEFAULT_ARCH) -> BuildResult:
    """`main` and `units` compiled with the same defines and linked: the BuildResult of
    `main` with the linked cubin, the units' logs appended and their functions' frames
    (spills) in its report."""
    rdc = ["-rdc=true"]
    head = compile_cubin(main, name=str(main), cache_dir=cache_dir, defines=defines, extra_opts=rdc, arch=arch)
    builds = [compile_cubin(u, name=str(u), cache_dir=cache_dir, defines=defines, arch=arch,
                            extra_opts=rdc + [f"-maxrregcount={UNIT_MAX_REGISTERS}"]) for u in units]
    functions = dict(head.report.functions)
    for b in builds:
        functions.update(b.report.functions)
    report = ResourceReport(head.report.kernels, functions, head.report.gmem_bytes,
                            head.report.warnings + [w for b in builds for w in b.report.warnings])
    cubin = link_cubins([(Path(b.name).name, b.cubin) for b in [head, *builds]], arch)
    return dataclasses.replace(head, cubin=cubin, log="".join(b.log for b in [head, *builds]), report=report,
                               from_cache=head.from_cache and all(b.from_cache for b in builds),
                               compile_seconds=head.compile_seconds + sum(b.compile_seconds for b in builds))
