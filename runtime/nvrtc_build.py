"""Compile device code with NVRTC (through cuda-python) to a cubin, with a disk cache.

Why NVRTC: CI and developer machines have no GPU and no CUDA toolkit, only pip wheels
(the ``nvrtc`` extra), yet every change to ``csrc/`` must be proven to build for
``sm_90a`` with a clean resource report. GPU machines use the very same path, so the
cubin CI checked is the cubin that runs.

How:
- Options: ``-arch=sm_90a`` (an ``sm_`` arch makes NVRTC run ptxas and emit a cubin;
  ``compute_`` would stop at PTX), ``-std=c++17``, ``-default-device``, ``-lineinfo``
  (Nsight maps SASS back to source), ``--ptxas-options=-v``, then ``-I`` for the main
  file's folder, the caller's include dirs, ``csrc/`` and the CUDA headers (cuda_paths),
  then ``-D`` defines (sorted) and any extra options.
- Resource report: NVRTC appends ptxas's ``-v`` report to the program log (checked on
  NVRTC 12.9 and 13.5), so ptxas_report parses the log; constant-bank sizes, which
  current ptxas leaves out, come from the cubin's ELF sections (cubin_elf).
- Cache (cubin_cache): key = sha256 of the main source and its name, every source file
  under the project include folders (``csrc/`` included) in sorted order, the full
  option list (arch, defines, include dirs), the NVRTC version and a fingerprint of the
  CUDA headers' version. Project folders are hashed recursively (``.cu .cuh .h .hpp
  .inl .inc`` files), so keep a main file in a source folder such as ``csrc/``, not in
  a large scratch directory. A hit never calls NVRTC. The report is re-parsed from the
  stored log on a hit, so it always has the current parser's shape.
- Errors: a failed compile raises BuildError with ``path:line: error: ...`` lines first
  (ptxas errors mapped back through ``-lineinfo``) and NVRTC's full log after.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from tilewarp.pipeline.errors import DeviceError
from tilewarp.runtime.build_errors import BuildError, build_error, warning_lines
from tilewarp.runtime.cubin_cache import CubinCache, default_cache_dir
from tilewarp.runtime.cubin_elf import constant_banks
from tilewarp.runtime.cuda_paths import INSTALL_HINT, preload_nvrtc
from tilewarp.runtime.ptxas_report import ResourceReport, parse_ptxas_log

__all__ = ["BuildError", "BuildResult", "ResourceReport", "compile_cubin", "csrc_dir"]

log = logging.getLogger(__name__)

DEFAULT_ARCH = "sm_90a"
SOURCE_SUFFIXES = frozenset({".cu", ".cuh", ".h", ".hpp", ".inl", ".inc"})
_KEY_VERSION = b"tilewarp-nvrtc-build-v1"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Source = Union[str, "os.PathLike[str]"]
DefineValue = Union[str, int, float, bool, None]


@dataclass(frozen=True)
class BuildResult:
    """A compiled cubin and everything known about how it was made."""

    cubin: bytes
    ptx: str | None
    log: str
    report: ResourceReport
    options: list[str]
    cache_key: str
    from_cache: bool
    name: str
    nvrtc_version: tuple[int, int]
    compile_seconds: float  # of the compile that produced it (also on a cache hit)


@dataclass(frozen=True)
class NvrtcOutput:
    """What one NVRTC invocation produced."""

    ok: bool
    result: str
    log: str
    cubin: bytes = b""
    ptx: str | None = None
    seconds: float = 0.0


def csrc_dir() -> Path:
    """The shipped device sources (``tilewarp.csrc``), always on the include path."""
    import tilewarp.csrc

    return Path(next(iter(tilewarp.csrc.__path__))).resolve()


def _nvrtc() -> Any:
    """The cuda.bindings.nvrtc module, with libnvrtc loaded from the located install."""
    preload_nvrtc()
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise DeviceError(f"cuda-bindings is not importable ({exc}); {INSTALL_HINT}") from exc
    return nvrtc


def _call(nvrtc: Any, fn: str, *args: Any) -> tuple[Any, ...]:
    """Call an NVRTC entry point; raise DeviceError naming it unless it succeeded."""
    res = getattr(nvrtc, fn)(*args)
    if res[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise DeviceError(f"{fn} failed: {_result_name(res[0])}")
    return tuple(res[1:])


def _result_name(err: Any) -> str:
    return getattr(err, "name", str(err))


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library in use."""
    major, minor = _call(_nvrtc(), "nvrtcVersion")
    return int(major), int(minor)


def run_nvrtc(text: str, name: str, options: Sequence[str], *, want_ptx: bool) -> NvrtcOutput:
    """One NVRTC compile of `text` (named `name` in messages); never raises on bad code."""
    nvrtc = _nvrtc()
    (prog,) = _call(nvrtc, "nvrtcCreateProgram", text.encode("utf-8"), name.encode("utf-8"),
                    0, [], [])
    try:
        opts = [o.encode("utf-8") for o in options]
        start = time.perf_counter()
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        seconds = time.perf_counter() - start
        ok = err == nvrtc.nvrtcResult.NVRTC_SUCCESS
        (log_size,) = _call(nvrtc, "nvrtcGetProgramLogSize", prog)
        buf = bytearray(log_size)
        _call(nvrtc, "nvrtcGetProgramLog", prog, buf)
        log_text = bytes(buf).rstrip(b"\0").decode("utf-8", "replace")
        ptx = None
        if want_ptx or not ok:  # on failure the PTX maps ptxas errors back to source
            res = nvrtc.nvrtcGetPTXSize(prog)
            if res[0] == nvrtc.nvrtcResult.NVRTC_SUCCESS and res[1] > 1:
                pbuf = bytearray(res[1])
                if nvrtc.nvrtcGetPTX(prog, pbuf)[0] == nvrtc.nvrtcResult.NVRTC_SUCCESS:
                    ptx = bytes(pbuf).rstrip(b"\0").decode("utf-8", "replace")
        if not ok:
            return NvrtcOutput(False, _result_name(err), log_text, ptx=ptx, seconds=seconds)
        (cubin_size,) = _call(nvrtc, "nvrtcGetCUBINSize", prog)
        cbuf = bytearray(cubin_size)
        _call(nvrtc, "nvrtcGetCUBIN", prog, cbuf)
        return NvrtcOutput(True, _result_name(err), log_text, bytes(cbuf), ptx, seconds)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _define_option(key: str, value: DefineValue) -> str:
    if not _IDENT.match(key):
        raise ValueError(f"define {key!r} is not a C identifier")
    if value is None:
        return f"-D{key}"
    if isinstance(value, bool):
        value = int(value)
    return f"-D{key}={value}"


def build_options(arch: str, include_dirs: Sequence[Path], defines: Mapping[str, DefineValue],
                  extra_opts: Sequence[str], lineinfo: bool) -> list[str]:
    """The NVRTC option list, in a deterministic order (it is part of the cache key)."""
    opts = [f"-arch={arch}", "-std=c++17", "-default-device"]
    if lineinfo:
        opts.append("-lineinfo")
    opts.append("--ptxas-options=-v")
    opts += [f"-I{d}" for d in include_dirs]
    opts += [_define_option(k, defines[k]) for k in sorted(defines)]
    opts += list(extra_opts)
    return opts


def _digest_tree(h: hashlib._Hash, root: Path) -> None:
    """Feed every source file under `root` (sorted, hidden folders skipped) into `h`."""
    files = sorted(p for p in root.rglob("*")
                   if p.suffix in SOURCE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") or part == "__pycache__"
                               for part in p.relative_to(root).parts))
    h.update(f"tree\0{root}\0{len(files)}\0".encode())
    for p in files:
        data = p.read_bytes()
        h.update(f"{p.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)


def compute_cache_key(name: str, text: str, options: Sequence[str], arch: str,
                      nvrtc_ver: tuple[int, int], project_dirs: Iterable[Path],
                      headers_fingerprint: str) -> str:
    """sha256 over everything that can change the cubin."""
    h = hashlib.sha256(_KEY_VERSION)
    h.update(f"\0nvrtc\0{nvrtc_ver[0]}.{nvrtc_ver[1]}\0arch\0{arch}\0headers\0"
             f"{headers_fingerprint}\0".encode())
    h.update(("options\0" + "\0".join(options) + "\0").encode())
    src = text.encode("utf-8")
    h.update(f"main\0{name}\0{len(src)}\0".encode())
    h.update(src)
    for d in project_dirs:
        _digest_tree(h, d)
    return h.hexdigest()


def _read_source(source: Source, name: str | None) -> tuple[str, str, Path | None]:
    """(text, program name, folder of the main file or None) for a path or source text.

    A Path (or os.PathLike) is a file. A str is source text, except a one-line str
    ending in .cu/.cuh, which is taken as a file name (no program is one line long).
    """
    is_path = not isinstance(source, str) or (
        "\n" not in source and source.strip().endswith((".cu", ".cuh")))
    if not is_path:
        return str(source), name or "tilewarp_source.cu", None
    path = Path(source).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeviceError(f"cannot read device source {path}: {exc}") from exc
    return text, name or str(path), path.parent


def _report(log_text: str, cubin: bytes) -> ResourceReport:
    """Parse ptxas's report and fill constant-bank sizes from the ELF where it gave none."""
    report = parse_ptxas_log(log_text)
    banks = constant_banks(cubin)
    for kname, k in report.kernels.items():
        if not k.cmem_bytes and kname in banks:
            k.cmem_bytes = dict(sorted(banks[kname].items()))
    return report


def compile_cubin(
    source: Source,
    *,
    arch: str = DEFAULT_ARCH,
    defines: Mapping[str, DefineValue] | None = None,
    include_dirs: Sequence[Source] = (),
    extra_opts: Sequence[str] = (),
    lineinfo: bool = True,
    cache_dir: Source | None = None,
    use_cache: bool = True,
    keep_ptx: bool = False,
    name: str | None = None,
) -> BuildResult:
    """Compile `source` (a main .cu path, or source text) for `arch` to a cubin.

    `defines` become -D options; `include_dirs` are searched before ``csrc/`` and the
    CUDA headers, and their source files are hashed into the cache key. `name` names the
    program in messages (default: the file's path, or "tilewarp_source.cu" for text).
    `cache_dir` defaults to ``$TILEWARP_CACHE_DIR`` or ``~/.cache/tilewarp/cubin``.
    Raises BuildError (a DeviceError) with NVRTC's log when the code does not compile.
    """
    if not arch.startswith("sm_"):
        raise ValueError(f"arch must be a real GPU arch like 'sm_90a' (a cubin), got {arch!r}")
    text, prog_name, main_dir = _read_source(source, name)
    project_dirs: list[Path] = []
    for d in ([main_dir] if main_dir else []) + [Path(p) for p in include_dirs] + [csrc_dir()]:
        d = d.expanduser().resolve()
        if not d.is_dir():
            raise ValueError(f"include dir {d} does not exist")
        if d not in project_dirs:
            project_dirs.append(d)
    paths = preload_nvrtc()
    options = build_options(arch, project_dirs + list(paths.include_dirs), defines or {},
                            extra_opts, lineinfo)
    ver = nvrtc_version()
    key = compute_cache_key(prog_name, text, options, arch, ver, project_dirs,
                            paths.headers_fingerprint())
    label = Path(prog_name).stem
    cache = CubinCache(cache_dir if cache_dir is not None else default_cache_dir())

    if use_cache:
        hit = cache.load(key, need_ptx=keep_ptx)
        if hit is not None and isinstance(hit.meta.get("log"), str):
            log.info("%s (%s): cubin cache hit %s in %s", label, arch, key[:16], cache.root)
            hit_log = hit.meta["log"]
            return BuildResult(hit.cubin, hit.ptx, hit_log, _report(hit_log, hit.cubin), options,
                               key, True, prog_name, ver,
                               float(hit.meta.get("compile_seconds", 0.0)))

    log.info("compiling %s (%s) with NVRTC %d.%d ...", label, arch, *ver)
    out = run_nvrtc(text, prog_name, options, want_ptx=keep_ptx)
    if not out.ok:
        log.info("compiling %s (%s) failed after %.1f s", label, arch, out.seconds)
        raise build_error(prog_name, arch, out.result, out.log, options, out.ptx,
                          cccl_found=paths.cccl_include is not None)
    report = _report(out.log, out.cubin)
    if not report.kernels:
        log.warning("%s (%s): no ptxas resource report in the NVRTC log", label, arch)
    log.info("compiled %s (%s) in %.1f s: %s", label, arch, out.seconds,
             "; ".join(k.summary() for k in report.kernels.values()) or "no kernels")
    for w in warning_lines(out.log) + report.warnings:
        log.warning("%s (%s): %s", label, arch, w)
    if use_cache:
        cache.store(key, out.cubin, out.ptx if keep_ptx else None, {
            "log": out.log, "report": report.to_json(), "options": options, "name": prog_name,
            "arch": arch, "nvrtc_version": list(ver), "compile_seconds": out.seconds,
            "created": time.time(),
        })
    return BuildResult(out.cubin, out.ptx if keep_ptx else None, out.log, report, options, key,
                       False, prog_name, ver, out.seconds)
