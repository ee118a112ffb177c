"""csrc/core on a Hopper GPU: events order CTAs, a stuck wait times out into the status
record instead of hanging, the other CTAs stop on the abort flag, and only the first
error is kept.

Self-contained (cuda.bindings.driver only) so it checks the device headers before the
megakernel launcher exists. Skipped where there is no sm_90 GPU.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

cu = pytest.importorskip("cuda.bindings.driver",
                         reason="cuda-bindings not installed: pip install 'tilewarp[cuda13]'")

from tilewarp.runtime.nvrtc_build import compile_cubin  # noqa: E402

# Host mirror of TwStatus (csrc/core/status.cuh).
STATUS_DTYPE = np.dtype([("code", "<i4"), ("sm", "<i4"), ("task", "<i4"), ("event", "<i4"),
                         ("seen", "<u8"), ("needed", "<u8"), ("op", "<i4"), ("pad", "<i4")])
assert STATUS_DTYPE.itemsize == 40

CTAS = 8  # far below any H100/H200 SM count, so all CTAs are co-resident

SOURCE = r"""
#include "core/events.cuh"

// CTA i waits for counters[i] >= step, records its arrival order, then signals
// counters[i + 1]: a chain across SMs. CTA 0's counter is raised by the host. CTA 0
// gets the short bound so that, when the chain is broken, it is the one that reports.
extern "C" __global__ void tw_chain(tw_event_t* counters, TwStatus* status,
                                    volatile int* abort_flag, unsigned long long step,
                                    unsigned long long bound_ns, int* order, int* ticket) {
    __shared__ int go;
    const int i = (int)blockIdx.x;
    if (threadIdx.x == 0) {
        const unsigned long long bound = i == 0 ? bound_ns : 1000ull * bound_ns;
        go = tw_event_wait(&counters[i], step, bound, abort_flag, status, i, i, 7);
        if (go) order[i] = atomicAdd(ticket, 1);
    }
    __syncthreads();
    if (!go) return;
    if (threadIdx.x == 0) tw_event_signal(&counters[i + 1]);
}

// Every CTA reports an error at once; exactly one must win.
extern "C" __global__ void tw_race_errors(TwStatus* status, volatile int* abort_flag,
                                          int* winners) {
    if (threadIdx.x == 0) {
        const int i = (int)blockIdx.x;
        winners[i] = tw_report_error(status, abort_flag, TW_STATUS_BAD_OP, i, -1, 0, 0, 100 + i);
    }
}
"""


def check(res: Any) -> Any:
    err = res[0] if isinstance(res, tuple) else res
    if err != cu.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"CUDA driver call failed: {cu.cuGetErrorName(err)[1]}")
    if isinstance(res, tuple):
        return res[1] if len(res) == 2 else res[1:]
    return None


class Gpu:
    """The few driver calls these tests need."""

    def __init__(self, cubin: bytes) -> None:
        self._image = np.frombuffer(cubin, dtype=np.uint8).copy()
        self.module = check(cu.cuModuleLoadData(self._image.ctypes.data))
        self.stream = check(cu.cuStreamCreate(0))
        self.allocs: list[Any] = []

    def alloc(self, nbytes: int) -> int:
        ptr = check(cu.cuMemAlloc(nbytes))
        self.allocs.append(ptr)
        check(cu.cuMemsetD8(ptr, 0, nbytes))
        return int(ptr)

    def upload(self, ptr: int, arr: np.ndarray) -> None:
        check(cu.cuMemcpyHtoD(ptr, arr.ctypes.data, arr.nbytes))

    def download(self, ptr: int, arr: np.ndarray) -> np.ndarray:
        check(cu.cuMemcpyDtoH(arr.ctypes.data, ptr, arr.nbytes))
        return arr

    def launch(self, kernel: str, grid: int, block: int, *args: np.ndarray) -> float:
        fn = check(cu.cuModuleGetFunction(self.module, kernel.encode()))
        params = np.array([a.ctypes.data for a in args], dtype=np.uint64)
        start = time.perf_counter()
        check(cu.cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, self.stream,
                                params.ctypes.data, 0))
        check(cu.cuStreamSynchronize(self.stream))
        return time.perf_counter() - start

    def close(self) -> None:
        for ptr in self.allocs:
            cu.cuMemFree(ptr)
        cu.cuStreamDestroy(self.stream)
        cu.cuModuleUnload(self.module)


def ptr_arg(ptr: int) -> np.ndarray:
    return np.array([ptr], dtype=np.uint64)


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gpu]:
    try:
        check(cu.cuInit(0))
        dev = check(cu.cuDeviceGet(0))
        major = check(cu.cuDeviceGetAttribute(
            cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev))
    except Exception as exc:  # no driver, no device
        pytest.skip(f"no CUDA GPU: {exc}")
    if major != 9:
        pytest.skip(f"the sm_90a cubin needs a Hopper GPU (compute capability 9.x), got {major}.x")
    ctx = check(cu.cuDevicePrimaryCtxRetain(dev))
    check(cu.cuCtxSetCurrent(ctx))
    build = compile_cubin(SOURCE, name="tw_core_gpu.cu",
                          cache_dir=tmp_path_factory.mktemp("cubin"))
    g = Gpu(build.cubin)
    yield g
    g.close()
    cu.cuDevicePrimaryCtxRelease(dev)


def chain_buffers(g: Gpu) -> dict[str, int]:
    return {"counters": g.alloc(8 * (CTAS + 1)), "status": g.alloc(STATUS_DTYPE.itemsize),
            "abort": g.alloc(4), "order": g.alloc(4 * CTAS), "ticket": g.alloc(4)}


def run_chain(g: Gpu, b: dict[str, int], step: int, bound_ns: int) -> float:
    return g.launch("tw_chain", CTAS, 32, ptr_arg(b["counters"]), ptr_arg(b["status"]),
                    ptr_arg(b["abort"]), np.array([step], dtype=np.uint64),
                    np.array([bound_ns], dtype=np.uint64), ptr_arg(b["order"]),
                    ptr_arg(b["ticket"]))


def test_chain_orders_ctas_across_steps_without_reset(gpu: Gpu) -> None:
    b = chain_buffers(gpu)
    for step in (1, 2, 3):  # counters are never zeroed: step s waits for count s
        gpu.upload(b["counters"], np.array([step], dtype=np.uint64))  # host raises CTA 0's
        gpu.upload(b["ticket"], np.zeros(1, dtype=np.int32))
        run_chain(gpu, b, step, bound_ns=2_000_000_000)
        order = gpu.download(b["order"], np.zeros(CTAS, dtype=np.int32))
        assert order.tolist() == list(range(CTAS)), f"step {step}"
        counters = gpu.download(b["counters"], np.zeros(CTAS + 1, dtype=np.uint64))
        assert counters.tolist() == [step] * (CTAS + 1)
    status = gpu.download(b["status"], np.zeros(1, dtype=STATUS_DTYPE))[0]
    assert status["code"] == 0
    assert gpu.download(b["abort"], np.zeros(1, dtype=np.int32))[0] == 0


def test_broken_chain_times_out_records_and_aborts_everyone(gpu: Gpu) -> None:
    b = chain_buffers(gpu)  # CTA 0's counter stays 0: nobody can proceed
    bound_ns = 5_000_000
    seconds = run_chain(gpu, b, 1, bound_ns)
    status = gpu.download(b["status"], np.zeros(1, dtype=STATUS_DTYPE))[0]
    assert (status["code"], status["sm"], status["task"], status["event"]) == (1, 0, 0, 0)
    assert (status["seen"], status["needed"], status["op"], status["pad"]) == (0, 1, 7, 0)
    assert gpu.download(b["abort"], np.zeros(1, dtype=np.int32))[0] == 1
    # The other CTAs had a 1000x longer bound; they stopped on the abort flag instead.
    assert seconds < 1.0, f"kernel took {seconds:.3f} s"
    assert gpu.download(b["counters"], np.zeros(CTAS + 1, dtype=np.uint64)).sum() == 0


def test_only_the_first_error_is_kept(gpu: Gpu) -> None:
    status_ptr, abort_ptr, winners_ptr = gpu.alloc(40), gpu.alloc(4), gpu.alloc(4 * 64)
    gpu.launch("tw_race_errors", 64, 32, ptr_arg(status_ptr), ptr_arg(abort_ptr),
               ptr_arg(winners_ptr))
    winners = gpu.download(winners_ptr, np.zeros(64, dtype=np.int32))
    assert winners.sum() == 1
    w = int(np.argmax(winners))
    status = gpu.download(status_ptr, np.zeros(1, dtype=STATUS_DTYPE))[0]
    assert (status["code"], status["sm"], status["task"], status["op"]) == (2, w, w, 100 + w)
    assert status["event"] == -1
    assert gpu.download(abort_ptr, np.zeros(1, dtype=np.int32))[0] == 1
