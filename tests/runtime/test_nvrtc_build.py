"""compile_cubin end to end with the real NVRTC: csrc/core compiles for sm_90a, the
report is clean, the cache holds, and errors point at file:line.

Real NVRTC compiles cost time on a 2-core CI machine, so only three happen here (one
good kernel, one front-end error, one ptxas error); cache and key behaviour reuse the
good kernel's cubin through a fake NVRTC.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip(
    "cuda.bindings.nvrtc",
    reason="NVRTC is not installed: pip install 'tilewarp[nvrtc]' (no GPU needed)")

from tilewarp.pipeline.errors import DeviceError  # noqa: E402
from tilewarp.runtime import nvrtc_build  # noqa: E402
from tilewarp.runtime.cubin_elf import section_sizes  # noqa: E402
from tilewarp.runtime.cuda_paths import cuda_paths  # noqa: E402
from tilewarp.runtime.nvrtc_build import BuildError, NvrtcOutput, compile_cubin  # noqa: E402

try:
    cuda_paths()
except DeviceError as exc:  # bindings present but no NVRTC library / headers
    pytest.skip(f"CUDA wheels incomplete: {exc}", allow_module_level=True)

KERNEL = "tw_test_events"

# A small consumer/producer step built from csrc/core, the way the megakernel uses it.
TEST_SOURCE = r"""
#include "core/status.cuh"
#include "core/events.cuh"

#ifndef TW_TEST_SCALE
#define TW_TEST_SCALE 2
#endif

extern "C" __global__ void tw_test_events(tw_event_t* counters, TwStatus* status,
                                          volatile int* abort_flag, const int* ops,
                                          unsigned long long step,
                                          unsigned long long bound_ns, float* data) {
    __shared__ float tile[128];
    __shared__ int go;
    const int task = (int)blockIdx.x;
    if (threadIdx.x == 0) {
        go = tw_event_wait(&counters[task], step, bound_ns, abort_flag, status, task, task,
                           ops[task]);
        if (go && ops[task] != 1) {
            tw_report_error(status, abort_flag, TW_STATUS_BAD_OP, task, -1, 0, 0, ops[task]);
            go = 0;
        }
    }
    __syncthreads();
    if (!go || tw_aborted(abort_flag)) return;
    tile[threadIdx.x] = data[task * 128 + threadIdx.x];
    __syncthreads();
    data[task * 128 + threadIdx.x] = tile[127 - threadIdx.x] * TW_TEST_SCALE;
    __syncthreads();
    if (threadIdx.x == 0) tw_event_signal(&counters[gridDim.x + task]);
}
"""


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cubin-cache")


@pytest.fixture(scope="module")
def built(module_cache: Path) -> nvrtc_build.BuildResult:
    return compile_cubin(TEST_SOURCE, name="tw_test_events.cu", cache_dir=module_cache)


@pytest.fixture
def fake_nvrtc(monkeypatch: pytest.MonkeyPatch, built: nvrtc_build.BuildResult) -> list[list[str]]:
    """Replace the NVRTC compile with one that returns the real kernel's cubin and log."""
    calls: list[list[str]] = []

    def fake(text: str, name: str, options: list[str], *, want_ptx: bool) -> NvrtcOutput:
        calls.append(list(options))
        return NvrtcOutput(True, "NVRTC_SUCCESS", built.log, built.cubin, None, 0.01)

    monkeypatch.setattr(nvrtc_build, "run_nvrtc", fake)
    return calls


def test_cubin_is_an_sm90a_elf_with_the_kernel(built: nvrtc_build.BuildResult) -> None:
    assert not built.from_cache
    assert built.cubin[:4] == b"\x7fELF"
    assert f".text.{KERNEL}" in section_sizes(built.cubin)
    for opt in ("-arch=sm_90a", "-std=c++17", "-default-device", "-lineinfo",
                "--ptxas-options=-v", f"-I{nvrtc_build.csrc_dir()}"):
        assert opt in built.options
    assert built.nvrtc_version[0] >= 12


def test_report_is_clean(built: nvrtc_build.BuildResult) -> None:
    k = built.report.kernel(KERNEL)
    assert k.arch == "sm_90a"
    assert 0 < k.registers <= 64
    assert k.spill_store_bytes == 0 and k.spill_load_bytes == 0
    assert k.stack_frame_bytes == 0 and k.cumulative_stack_bytes == 0
    assert k.shared_bytes == 128 * 4 + 4  # tile + go
    assert k.cmem_bytes.get(0, 0) > 0  # parameter bank, read from the cubin's ELF
    built.report.require(KERNEL, max_registers=64)
    with pytest.raises(DeviceError, match="not in the ptxas report"):
        built.report.kernel("no_such_kernel")


def test_second_compile_hits_the_cache_without_nvrtc(
        built: nvrtc_build.BuildResult, module_cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compile(*args: object, **kwargs: object) -> NvrtcOutput:
        raise AssertionError("NVRTC was invoked on a cache hit")

    monkeypatch.setattr(nvrtc_build, "run_nvrtc", no_compile)
    again = compile_cubin(TEST_SOURCE, name="tw_test_events.cu", cache_dir=module_cache)
    assert again.from_cache
    assert again.cache_key == built.cache_key
    assert again.cubin == built.cubin
    assert again.report == built.report


def test_a_define_changes_the_key(tmp_path: Path, fake_nvrtc: list[list[str]]) -> None:
    a = compile_cubin(TEST_SOURCE, name="t.cu", cache_dir=tmp_path, defines={"TW_TEST_SCALE": 3})
    b = compile_cubin(TEST_SOURCE, name="t.cu", cache_dir=tmp_path, defines={"TW_TEST_SCALE": 4})
    assert a.cache_key != b.cache_key
    assert "-DTW_TEST_SCALE=3" in fake_nvrtc[0] and "-DTW_TEST_SCALE=4" in fake_nvrtc[1]
    c = compile_cubin(TEST_SOURCE, name="t.cu", cache_dir=tmp_path, defines={"TW_TEST_SCALE": 3})
    assert c.from_cache and c.cache_key == a.cache_key
    assert len(fake_nvrtc) == 2


def test_editing_an_included_header_changes_the_key(
        tmp_path: Path, fake_nvrtc: list[list[str]]) -> None:
    inc = tmp_path / "inc"
    (inc / "core").mkdir(parents=True)
    header = inc / "core" / "extra.cuh"
    header.write_text("#pragma once\n#define TW_EXTRA 1\n")
    src = '#include "core/extra.cuh"\n' + TEST_SOURCE
    first = compile_cubin(src, name="t.cu", cache_dir=tmp_path / "c", include_dirs=[inc])
    header.write_text("#pragma once\n#define TW_EXTRA 2\n")
    second = compile_cubin(src, name="t.cu", cache_dir=tmp_path / "c", include_dirs=[inc])
    assert first.cache_key != second.cache_key and not second.from_cache
    assert len(fake_nvrtc) == 2


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, fake_nvrtc: list[list[str]]) -> None:
    first = compile_cubin(TEST_SOURCE, name="t.cu", cache_dir=tmp_path)
    (tmp_path / f"{first.cache_key}.cubin").write_bytes(b"\x7fELF truncated")
    rebuilt = compile_cubin(TEST_SOURCE, name="t.cu", cache_dir=tmp_path)
    assert not rebuilt.from_cache and rebuilt.cubin == first.cubin
    (tmp_path / f"{first.cache_key}.json").write_text("{not json")
    assert not compile_cubin(TEST_SOURCE, name="t.cu", cache_dir=tmp_path).from_cache
    assert compile_cubin(TEST_SOURCE, name="t.cu", cache_dir=tmp_path).from_cache
    assert len(fake_nvrtc) == 3


def test_main_file_path_is_read_and_named(tmp_path: Path, fake_nvrtc: list[list[str]]) -> None:
    main = tmp_path / "src" / "main.cu"
    main.parent.mkdir()
    main.write_text(TEST_SOURCE)
    res = compile_cubin(main, cache_dir=tmp_path / "c")
    assert res.name == str(main.resolve())
    assert f"-I{main.parent.resolve()}" in res.options


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "broken.cuh").write_text("#pragma once\n__device__ int tw_broken() { return 1 }\n")
    src = ('#include "broken.cuh"\n'
           'extern "C" __global__ void k(int* x) {\n'
           '    x[0] = tw_broken() + undefined_name;\n'
           '}\n')
    with pytest.raises(BuildError) as info:
        compile_cubin(src, name="tw_bad.cu", include_dirs=[inc], cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert f"{inc / 'broken.cuh'}:2: error:" in msg
    assert 'tw_bad.cu:3: error: identifier "undefined_name" is undefined' in msg
    assert "NVRTC_ERROR_COMPILATION" in msg and "NVRTC log:" in msg
    assert isinstance(info.value, DeviceError) and len(info.value.errors) == 2
    assert not list(tmp_path.rglob("*.cubin"))  # nothing cached for a failed build


def test_ptxas_error_is_mapped_back_to_the_source_line(tmp_path: Path) -> None:
    src = ('extern "C" __global__ void k(int* x) {\n'
           '    int v = x[0];\n'
           '    asm volatile("tw.bogus.u32 %0;" : "+r"(v));\n'
           '    x[1] = v;\n'
           '}\n')
    with pytest.raises(BuildError) as info:
        compile_cubin(src, name="tw_badptx.cu", cache_dir=tmp_path)
    assert "tw_badptx.cu:3: ptxas error" in str(info.value)
