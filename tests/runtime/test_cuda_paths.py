"""Locating NVRTC and the CUDA headers in fake wheel and toolkit trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from tilewarp.pipeline.errors import DeviceError
from tilewarp.runtime.cuda_paths import find_cuda_paths


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cu13_wheels(nvidia: Path, cccl: bool = True) -> Path:
    touch(nvidia / "cu13/lib/libnvrtc.so.13")
    touch(nvidia / "cu13/include/cuda_runtime.h")
    touch(nvidia / "cu13/include/cuda_runtime_api.h", "#define CUDART_VERSION 13050\n")
    if cccl:
        touch(nvidia / "cu13/include/cccl/cuda/std/version")
        touch(nvidia / "cu13/include/cccl/cuda/std/__cccl/version.h", "#define CCCL_VERSION 3\n")
    return nvidia


def cu12_wheels(nvidia: Path, cccl: bool = True) -> Path:
    touch(nvidia / "cuda_nvrtc/lib/libnvrtc.so.12")
    touch(nvidia / "cuda_runtime/include/cuda_runtime.h")
    if cccl:
        touch(nvidia / "cuda_cccl/include/cuda/std/version")
    return nvidia


def test_cuda13_wheel_layout(tmp_path: Path) -> None:
    nv = cu13_wheels(tmp_path / "nvidia")
    p = find_cuda_paths([nv], [], want_major=13)
    assert p.nvrtc_library == nv / "cu13/lib/libnvrtc.so.13"
    assert p.include_dirs == (nv / "cu13/include", nv / "cu13/include/cccl")
    assert p.major == 13 and "cu13" in p.origin


def test_cuda12_wheel_layout_without_cccl(tmp_path: Path) -> None:
    nv = cu12_wheels(tmp_path / "nvidia", cccl=False)
    p = find_cuda_paths([nv], [], want_major=12)
    assert p.nvrtc_library == nv / "cuda_nvrtc/lib/libnvrtc.so.12"
    assert p.include_dirs == (nv / "cuda_runtime/include",)
    assert p.cccl_include is None


def test_major_of_cuda_bindings_picks_between_installs(tmp_path: Path) -> None:
    nv = cu12_wheels(cu13_wheels(tmp_path / "nvidia"))
    assert find_cuda_paths([nv], [], want_major=12).major == 12
    assert find_cuda_paths([nv], [], want_major=13).major == 13


def test_toolkit_fallback(tmp_path: Path) -> None:
    home = tmp_path / "cuda-13.0"
    touch(home / "lib64/libnvrtc.so.13.0.88")
    touch(home / "include/cuda_runtime.h")
    touch(home / "include/cccl/cuda/std/version")
    p = find_cuda_paths([tmp_path / "no-wheels"], [home], want_major=13)
    assert p.major == 13 and p.origin == f"toolkit {home}"
    assert p.include_dirs == (home / "include", home / "include/cccl")


def test_missing_everything_lists_the_search_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as info:
        find_cuda_paths([tmp_path / "nvidia"], [tmp_path / "cuda"], want_major=13)
    msg = str(info.value)
    assert str(tmp_path / "nvidia") in msg and str(tmp_path / "cuda") in msg
    assert "cu13/lib/libnvrtc.so.13" in msg and "cuda_nvrtc/lib/libnvrtc.so.12" in msg
    assert "pip install 'tilewarp[nvrtc]'" in msg and "tilewarp[cuda12]" in msg


def test_wrong_major_says_so(tmp_path: Path) -> None:
    nv = cu12_wheels(tmp_path / "nvidia")
    with pytest.raises(DeviceError, match=r"cuda-bindings 13\.x needs NVRTC 13\.x, but only CUDA 12"):
        find_cuda_paths([nv], [], want_major=13)


def test_headers_fingerprint_follows_version_headers(tmp_path: Path) -> None:
    nv = cu13_wheels(tmp_path / "nvidia")
    before = find_cuda_paths([nv], [], want_major=13).headers_fingerprint()
    touch(nv / "cu13/include/cccl/cuda/std/__cccl/version.h", "#define CCCL_VERSION 4\n")
    assert find_cuda_paths([nv], [], want_major=13).headers_fingerprint() != before
