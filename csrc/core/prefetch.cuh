// Weight prefetch into L2 with the bulk-copy engine (cp.async.bulk.prefetch.L2).
//
// One instruction per contiguous range: no registers held, nothing to wait for. The
// loader warp (core/loader.cuh) issues these for the task after the one the compute warps
// run, so HBM keeps streaming weights while the compute warps stage inputs, wait on
// events or finish the current tile; their own loads then hit L2. A prefetch is a hint:
// ranges are rounded inwards to 16 bytes and cut at the task's byte budget, so nothing
// outside the weight is touched and no task takes L2 from its neighbours.
#pragma once

#ifndef TW_PREFETCH_TASK_BYTES
#define TW_PREFETCH_TASK_BYTES (128 * 1024)   // per task: 132 SMs x 2 tasks x 128 KB = 1/1.5 of L2
#endif
#define TW_PREFETCH_CHUNK (32 * 1024)

struct TwPrefetch {
    unsigned int budget;   // bytes this task may still prefetch

    __device__ __forceinline__ void range(const void* p, unsigned long long bytes) {
        const unsigned long long lo = (reinterpret_cast<unsigned long long>(p) + 15) & ~15ull;
        const unsigned long long hi = (reinterpret_cast<unsigned long long>(p) + bytes) & ~15ull;
        if (p == nullptr || hi <= lo) return;
        unsigned long long n = hi - lo < budget ? hi - lo : budget;
        budget -= (unsigned int)n;
        for (unsigned long long a = lo; n > 0;) {
            const unsigned int m = (unsigned int)(n < TW_PREFETCH_CHUNK ? n : TW_PREFETCH_CHUNK) & ~15u;
            if (m == 0) break;
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" : : "l"(a), "r"(m) : "memory");
            a += m;
            n -= m;
        }
    }
};

// Prefetch rows n0..n1 of one expert's MXFP4 weight: its codes, then its scales.
__device__ __forceinline__ void tw_prefetch_rows_mxfp4(TwPrefetch& pf, const unsigned char* codes,
                                                      const unsigned char* scales, int k, int n0, int n1) {
    pf.range(codes + (long long)n0 * (k / 2), (unsigned long long)(n1 - n0) * (k / 2));
    pf.range(scales + (long long)n0 * (k / 32), (unsigned long long)(n1 - n0) * (k / 32));
}
