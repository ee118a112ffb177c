// Bulk asynchronous copies (cp.async.bulk, sm_90) from global into shared memory, counted
// on an mbarrier: one thread moves a whole contiguous range with one instruction, and the
// barrier's phase completes once every byte armed on it has landed. Used by the bf16
// walk's ring with TW_WALK_BULK (core/gemv_walk.cuh); the v15 probe found the engine no
// faster at streaming than cp.async, so what it is for is fewer instructions in the
// load/store queue of the SM, not more bytes in flight.
#pragma once
#include "core/cp_async.cuh"

__device__ __forceinline__ void tw_mbar_init(unsigned long long* bar, unsigned int arrivals) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" : : "r"(tw_smem_addr(bar)), "r"(arrivals) : "memory");
}

// After a thread's mbarrier.init and before the CTA barrier that publishes them: the
// initialisations become visible to the copy engine's completions too.
__device__ __forceinline__ void tw_mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;" : : : "memory"); }

// One arrival on `bar` that also expects `bytes` of bulk copies in the current phase.
__device__ __forceinline__ void tw_mbar_arrive_expect(unsigned long long* bar, unsigned int bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" : : "r"(tw_smem_addr(bar)), "r"(bytes)
                 : "memory");
}

// Until the phase of parity `parity` of `bar` has completed (its copies have landed and are
// visible to this thread).
__device__ __forceinline__ void tw_mbar_wait(unsigned long long* bar, unsigned int parity) {
    unsigned int done = 0;
    while (!done) {
        asm volatile(
            "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
            : "=r"(done)
            : "r"(tw_smem_addr(bar)), "r"(parity)
            : "memory");
    }
}

// `bytes` (a multiple of 16; both addresses 16-byte aligned) from global to shared memory,
// counted on `bar` (armed for them first, tw_mbar_arrive_expect).
__device__ __forceinline__ void tw_bulk_copy(void* dst, const void* src, unsigned int bytes, unsigned long long* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 : : "r"(tw_smem_addr(dst)), "l"(src), "r"(bytes), "r"(tw_smem_addr(bar)) : "memory");
}

// This thread's (and, after a __syncwarp, its warp's) ordinary shared-memory accesses are
// ordered before the bulk copies it issues next: a slot just read is refilled.
__device__ __forceinline__ void tw_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" : : : "memory"); }
