// Per-thread asynchronous global -> shared copies (cp.async, sm_80+), the GEMV walk's
// weight ring (core/gemv_walk.cuh).
//
// Why cp.async and not loads into registers: a warp tracks its outstanding register loads
// on six scoreboards, so a deep register ring makes the compiler share scoreboards between
// chunks, and consuming the oldest chunk then waits for the newest (measured: a 4-deep
// register ring made the MXFP4 expert GEMV 3x slower). cp.async copies are counted in
// commit groups instead: `wait_group<N>` waits for all but the newest N, however many
// copies each group holds. Each lane copies exactly the bytes it later reads, so the lane's
// own wait is all the ordering needed: no barrier, no mbarrier.
#pragma once

__device__ __forceinline__ unsigned int tw_smem_addr(const void* p) {
    return static_cast<unsigned int>(__cvta_generic_to_shared(p));
}

// 16 bytes, L2 only (weights are read once per step: keep them out of L1).
__device__ __forceinline__ void tw_cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" : : "r"(tw_smem_addr(dst)), "l"(src) : "memory");
}

__device__ __forceinline__ void tw_cp_async_commit() { asm volatile("cp.async.commit_group;" : : : "memory"); }

// Every group this thread committed, except the newest N, has landed in shared memory.
template <int N>
__device__ __forceinline__ void tw_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" : : "n"(N) : "memory");
}

// Until all but this lane's newest n groups have landed (n <= 8; more waits for 8).
__device__ __forceinline__ void tw_cp_async_wait_n(int n) {
    switch (n) {
        case 0: tw_cp_async_wait<0>(); break;
        case 1: tw_cp_async_wait<1>(); break;
        case 2: tw_cp_async_wait<2>(); break;
        case 3: tw_cp_async_wait<3>(); break;
        case 4: tw_cp_async_wait<4>(); break;
        case 5: tw_cp_async_wait<5>(); break;
        case 6: tw_cp_async_wait<6>(); break;
        case 7: tw_cp_async_wait<7>(); break;
        default: tw_cp_async_wait<8>(); break;
    }
}
