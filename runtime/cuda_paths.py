"""Where NVRTC and the CUDA headers are: pip wheels first, a system toolkit second.

CI and developer machines have no CUDA toolkit, only the pip wheels of the `nvrtc`
extra, so the megakernel build must find everything inside site-packages. The wheels
have two layouts:

- CUDA 13 (``nvidia-cuda-nvrtc``, ``nvidia-cuda-runtime``, ``nvidia-cuda-cccl`` 13.x)
  share one tree: ``nvidia/cu13/lib/libnvrtc.so.13``, headers in ``nvidia/cu13/include``
  and CCCL (libcu++, CUB, Thrust) in ``nvidia/cu13/include/cccl``.
- CUDA 12 (``nvidia-cuda-nvrtc-cu12`` ...) use one tree per package:
  ``nvidia/cuda_nvrtc/lib/libnvrtc.so.12``, ``nvidia/cuda_runtime/include`` and
  ``nvidia/cuda_cccl/include``.

A toolkit under ``$CUDA_HOME`` / ``$CUDA_PATH`` / ``/usr/local/cuda`` is the fallback
(CUDA 13 toolkits keep CCCL in ``include/cccl``). NVRTC must come from the same CUDA
major as the headers and as ``cuda-bindings``, so candidates are tried as whole sets and
the set whose major matches the installed ``cuda-bindings`` wins.

CCCL is optional (the ``cuda12`` extra may lack it): device code that includes
``<cuda/...>`` then fails to compile, and the build error says which package to add.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tilewarp.pipeline.errors import DeviceError

INSTALL_HINT = (
    "install the CUDA wheels with one of: pip install 'tilewarp[nvrtc]' (compile only, "
    "no GPU needed), pip install 'tilewarp[cuda13]' or pip install 'tilewarp[cuda12]' "
    "(GPU machines); or point CUDA_HOME at a CUDA toolkit"
)

# Files whose bytes change with the headers' version; hashed into the cubin cache key so
# that upgrading a header wheel (independently of NVRTC) forces a rebuild.
_VERSION_MARKERS = ("cuda_runtime_api.h", "cuda/std/__cccl/version.h")


@dataclass(frozen=True)
class CudaPaths:
    """One consistent CUDA installation: NVRTC library plus the header directories."""

    nvrtc_library: Path
    runtime_include: Path
    cccl_include: Path | None
    major: int
    origin: str  # human-readable: "pip wheels (nvidia/cu13)" or "CUDA_HOME=/usr/local/cuda"

    @property
    def include_dirs(self) -> tuple[Path, ...]:
        """The -I directories, runtime headers first (CCCL expects them before itself)."""
        dirs = [self.runtime_include]
        if self.cccl_include is not None and self.cccl_include != self.runtime_include:
            dirs.append(self.cccl_include)
        return tuple(dirs)

    def headers_fingerprint(self) -> str:
        """sha256 over the version-marker headers, for cache keys."""
        h = hashlib.sha256()
        for d in self.include_dirs:
            for marker in _VERSION_MARKERS:
                f = d / marker
                if f.is_file():
                    h.update(f"{f}\0".encode())
                    h.update(f.read_bytes())
        return h.hexdigest()


@dataclass(frozen=True)
class _Layout:
    """Where one layout keeps the library and headers, relative to its root."""

    name: str
    major: int
    lib_globs: tuple[str, ...]
    runtime_include: str
    cccl_includes: tuple[str, ...]


def _lib_globs(major: int) -> tuple[str, ...]:
    if sys.platform == "win32":
        return (f"bin/nvrtc64_{major}0_0.dll", f"bin/x64/nvrtc64_{major}0_0.dll")
    return (f"lib/libnvrtc.so.{major}", "lib/libnvrtc.so")


_WHEEL_LAYOUTS = (
    _Layout("cu13", 13, tuple(f"cu13/{g}" for g in _lib_globs(13)), "cu13/include",
            ("cu13/include/cccl",)),
    _Layout("cu12", 12, tuple(f"cuda_nvrtc/{g}" for g in _lib_globs(12)),
            "cuda_runtime/include", ("cuda_cccl/include",)),
)


def _toolkit_layout() -> _Layout:
    lib_globs = ("bin/nvrtc64_*.dll", "bin/x64/nvrtc64_*.dll") if sys.platform == "win32" else (
        "lib64/libnvrtc.so.*", "lib/libnvrtc.so.*",
        "targets/x86_64-linux/lib/libnvrtc.so.*", "targets/sbsa-linux/lib/libnvrtc.so.*")
    return _Layout("toolkit", 0, lib_globs, "include", ("include/cccl", "include"))


def _nvidia_roots() -> list[Path]:
    """Every ``nvidia`` namespace directory on sys.path (where the wheels unpack)."""
    roots: list[Path] = []
    try:
        import nvidia  # type: ignore[import-not-found]  # namespace package of the wheels

        roots.extend(Path(p) for p in nvidia.__path__)
    except ImportError:
        pass
    for entry in sys.path:
        cand = Path(entry or ".") / "nvidia"
        if cand.is_dir() and cand not in roots:
            roots.append(cand)
    return roots


def _toolkit_roots() -> list[Path]:
    roots: list[Path] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            roots.append(Path(os.environ[var]))
    roots.append(Path("/usr/local/cuda"))
    return list(dict.fromkeys(roots))


def _first_match(root: Path, globs: Iterable[str]) -> Path | None:
    for pattern in globs:
        hits = sorted(root.glob(pattern), reverse=True)  # highest soname version first
        for hit in hits:
            if hit.is_file():
                return hit
    return None


def _major_from_library(lib: Path) -> int:
    """CUDA major from a library name: libnvrtc.so.13 / libnvrtc.so.12.4.99 / nvrtc64_130_0."""
    m = re.search(r"libnvrtc\.so\.(\d+)", lib.name) or re.search(r"nvrtc64_(\d+?)\d_", lib.name)
    return int(m.group(1)) if m else 0


def _probe(root: Path, layout: _Layout, origin: str, searched: list[str]) -> CudaPaths | None:
    """A complete installation under `root` in `layout`, or None (recording what was looked at)."""
    lib = _first_match(root, layout.lib_globs)
    runtime_inc = root / layout.runtime_include
    searched.append(f"{origin}: {root}/{{{', '.join(layout.lib_globs)}}} and {runtime_inc}/cuda_runtime.h")
    if lib is None or not (runtime_inc / "cuda_runtime.h").is_file():
        return None
    cccl = next((root / c for c in layout.cccl_includes
                 if (root / c / "cuda" / "std" / "version").is_file()), None)
    major = layout.major or _major_from_library(lib)
    return CudaPaths(lib, runtime_inc, cccl, major, origin)


def _bindings_major() -> int | None:
    """Major version of the installed cuda-bindings (which libnvrtc it can drive)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - py<3.8
        return None
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return int(version(dist).split(".")[0])
        except (PackageNotFoundError, ValueError):
            continue
    return None


def find_cuda_paths(
    nvidia_roots: Sequence[Path] | None = None,
    toolkit_roots: Sequence[Path] | None = None,
    want_major: int | None = None,
) -> CudaPaths:
    """Locate NVRTC and the CUDA headers; raise DeviceError listing every place searched.

    The arguments exist for tests; by default the wheels on sys.path and the usual
    toolkit locations are searched and the major of cuda-bindings is preferred.
    """
    nvidia_roots = list(nvidia_roots) if nvidia_roots is not None else _nvidia_roots()
    toolkit_roots = list(toolkit_roots) if toolkit_roots is not None else _toolkit_roots()
    if want_major is None:
        want_major = _bindings_major()
    searched: list[str] = []
    found: list[CudaPaths] = []
    for root in nvidia_roots:
        for layout in _WHEEL_LAYOUTS:
            hit = _probe(root, layout, f"pip wheels (nvidia/{layout.name})", searched)
            if hit is not None:
                found.append(hit)
    for root in toolkit_roots:
        hit = _probe(root, _toolkit_layout(), f"toolkit {root}", searched)
        if hit is not None:
            found.append(hit)
    for paths in found:
        if want_major is None or paths.major == want_major:
            return paths
    if not searched:
        searched.append("no nvidia/ directory on sys.path and no toolkit root")
    where = "\n  ".join(searched)
    if found:
        have = ", ".join(f"CUDA {p.major} from {p.origin}" for p in found)
        raise DeviceError(
            f"cuda-bindings {want_major}.x needs NVRTC {want_major}.x, but only {have} was "
            f"found. Searched:\n  {where}\nFix: {INSTALL_HINT} (one CUDA major throughout)."
        )
    raise DeviceError(
        f"NVRTC and the CUDA runtime headers were not found. Searched:\n  {where}\n"
        f"Fix: {INSTALL_HINT}."
    )


@functools.lru_cache(maxsize=1)
def cuda_paths() -> CudaPaths:
    """The installation this process uses (searched once)."""
    return find_cuda_paths()


@functools.lru_cache(maxsize=1)
def preload_nvrtc() -> CudaPaths:
    """Load the located libnvrtc globally before cuda.bindings asks for it.

    cuda-bindings dlopens NVRTC by soname; with the library already loaded from the
    wheel, that lookup resolves to it even where LD_LIBRARY_PATH knows no CUDA, and
    NVRTC and the headers cannot come from two different installations.
    """
    paths = cuda_paths()
    mode = getattr(os, "RTLD_GLOBAL", 0) | getattr(os, "RTLD_NOW", 0)
    try:
        ctypes.CDLL(str(paths.nvrtc_library), mode=mode)
    except OSError as exc:
        raise DeviceError(
            f"found NVRTC at {paths.nvrtc_library} ({paths.origin}) but could not load it: "
            f"{exc}. Fix: {INSTALL_HINT}."
        ) from exc
    return paths
