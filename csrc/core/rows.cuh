// Input rows of a GEMV-like task, with the fused RMSNorm applied once.
//
// A task reads T <= 16 activation rows (tokens) of K floats. They are normalised
// (x * rsqrt(mean(x^2) + eps) * w_norm, as the reference computes) and staged in shared
// memory when T*K fits; otherwise each read goes to L2 and normalises on the fly.
#pragma once
#include "core/util.cuh"

#define TW_STAGE_FLOATS (40 * 1024)  // 160 KB of the dynamic shared memory

struct TwRows {
    const float* src;          // global rows (row r at src + tok[r] * ld), used when not staged
    const int* tok;            // row -> source row index (shared memory)
    int ld;
    int n;                     // rows
    int k;
    const __nv_bfloat16* wn;   // norm weight or nullptr
    const float* inv;          // per-row 1/rms (shared memory), 1 when no norm
    float* staged;             // shared memory [n][k] or nullptr

    __device__ __forceinline__ float at(int r, int c) const {
        if (staged) return staged[r * k + c];
        float v = tw_ld(src + (long long)tok[r] * ld + c) * inv[r];
        return wn ? v * tw_bf16(wn[c]) : v;
    }
};

// Prepares `rows` for src rows tok[0..n) (the caller fills `tok_smem` first, then syncs).
// All threads of the CTA call it; it ends with a barrier.
__device__ TwRows tw_load_rows(const float* src, int ld, const int* tok_smem, int n, int k,
                               const __nv_bfloat16* wn, float eps, float* inv_smem, float* stage_smem) {
    const int w = tw_warp(), lane = tw_lane();
    for (int r = w; r < n; r += TW_WARPS) {
        float ss = 0.f;
        const float* row = src + (long long)tok_smem[r] * ld;
        for (int c = lane; c < k; c += 32) {
            const float v = tw_ld(row + c);
            ss += v * v;
        }
        ss = tw_warp_sum(ss);
        if (lane == 0) inv_smem[r] = wn ? rsqrtf(ss / (float)k + eps) : 1.f;
    }
    __syncthreads();
    TwRows rows{src, tok_smem, ld, n, k, wn, inv_smem, nullptr};
    if (n * k <= TW_STAGE_FLOATS) {
        for (int i = threadIdx.x; i < n * k; i += TW_THREADS) {
            const int r = i / k, c = i - r * k;
            float v = tw_ld(src + (long long)tok_smem[r] * ld + c) * inv_smem[r];
            stage_smem[i] = wn ? v * tw_bf16(wn[c]) : v;
        }
        rows.staged = stage_smem;
        __syncthreads();
    }
    return rows;
}
