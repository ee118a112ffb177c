// Input rows of a GEMV-like task, with the fused RMSNorm applied once.
//
// A task reads T <= 16 activation rows (tokens) of K floats. They are staged in shared
// memory in one vectorised pass (all threads, 16-byte L2 loads, many in flight), then
// normalised in place (x * rsqrt(mean(x^2) + eps) * w_norm, as the reference computes).
// Rows too large for the stage are read from L2 and normalised on the fly.
//
// The stage is swizzled: within each 32-float block, float4 q of block b lives at
// q ^ (b & 7). Both GEMV cores read x as float4s, lanes on consecutive blocks (MXFP4: a
// lane per 32-code block) or 32 bytes apart (bf16: a lane per 8 weights); unswizzled,
// those reads hit one bank 32 and 2 times over. Swizzled, every 8-lane phase of a
// 16-byte shared load touches 8 different bank groups: no conflicts.
#pragma once
#include "core/util.cuh"

#define TW_STAGE_FLOATS (44 * 1024)  // 176 KB of the dynamic shared memory
#ifndef TW_STAGE_UNROLL
#define TW_STAGE_UNROLL 4
#endif

// Index of element c of a staged row (rows are whole 32-float blocks).
__device__ __forceinline__ int tw_swz(int c) { return c ^ (((c >> 5) & 7) << 2); }

struct TwRows {
    const float* src;          // global rows (row r at src + tok[r] * ld), used when not staged
    const int* tok;            // row -> source row index (shared memory)
    int ld;
    int n;                     // rows
    int k;
    const __nv_bfloat16* wn;   // norm weight or nullptr
    const float* inv;          // per-row factor (shared memory): 1/rms (1 with no norm) times the scale
    float* staged;             // shared memory [n][k] (swizzled) or nullptr

    __device__ __forceinline__ float at(int r, int c) const {
        if (staged) return staged[r * k + tw_swz(c)];
        float v = tw_ld(src + (long long)tok[r] * ld + c) * inv[r];
        return wn ? v * tw_bf16(wn[c]) : v;
    }
    // x[r][c..c+3], c a multiple of 4.
    __device__ __forceinline__ float4 at4(int r, int c) const {
        if (staged) return *reinterpret_cast<const float4*>(staged + r * k + tw_swz(c));
        return make_float4(at(r, c), at(r, c + 1), at(r, c + 2), at(r, c + 3));
    }
};

// Prepares `rows` for src rows tok[0..n) (the caller fills `tok_smem` first, then syncs).
// All compute threads call it; it ends with a barrier.
// The rows are staged when they fit `stage_floats`; `wn_smem` (k floats, or nullptr)
// receives the norm weight in the staging pass, so its loads overlap the rows' instead of
// following the sum of squares. Every row comes out times `xscale`, a power of two (so
// exactly), folded into the per-row factor: 1 for bf16 weights, TW_MXFP4_X_SCALE for MXFP4.
__device__ TwRows tw_load_rows(const float* src, int ld, const int* tok_smem, int n, int k,
                               const __nv_bfloat16* wn, float eps, float* inv_smem, float* stage_smem,
                               int stage_floats, float* wn_smem, float xscale) {
    const int w = tw_warp(), lane = tw_lane();
    TwRows rows{src, tok_smem, ld, n, k, wn, inv_smem, nullptr};
    const bool stage = n * k <= stage_floats && (k & 31) == 0 && (ld & 3) == 0
                       && ((reinterpret_cast<unsigned long long>(src) & 15) == 0);
    const int k4 = k / 4;
    if (stage) {
        // TW_STAGE_UNROLL loads in flight per thread before their stores: the rows come from
        // L2, and one load per iteration waited ~1 us for each.
        for (int i0 = threadIdx.x; i0 < n * k4; i0 += TW_STAGE_UNROLL * TW_THREADS) {
            float4 v[TW_STAGE_UNROLL];
#pragma unroll
            for (int u = 0; u < TW_STAGE_UNROLL; ++u) {
                const int i = i0 + u * TW_THREADS, r = i / k4;
                if (i < n * k4) v[u] = __ldcg(reinterpret_cast<const float4*>(src + (long long)tok_smem[r] * ld) + (i - r * k4));
            }
#pragma unroll
            for (int u = 0; u < TW_STAGE_UNROLL; ++u) {
                const int i = i0 + u * TW_THREADS, r = i / k4;
                if (i < n * k4) reinterpret_cast<float4*>(stage_smem + r * k)[tw_swz(4 * (i - r * k4)) >> 2] = v[u];
            }
        }
        if (wn && wn_smem)
            for (int i = threadIdx.x; i < k / 8; i += TW_THREADS) tw_bf16x8(wn + 8 * i, wn_smem + 8 * i);
        tw_sync();
    }
    if (wn) {   // the sum of squares only when there is a norm
        for (int r = w; r < n; r += TW_WARPS) {
            float ss = 0.f;
            if (stage) {
                const float4* row = reinterpret_cast<const float4*>(stage_smem + r * k);
                for (int c4 = lane; c4 < k4; c4 += 32) {
                    const float4 v = row[c4];
                    ss += (v.x * v.x + v.y * v.y) + (v.z * v.z + v.w * v.w);
                }
            } else {
                const float* row = src + (long long)tok_smem[r] * ld;
                for (int c = lane; c < k; c += 32) {
                    const float v = tw_ld(row + c);
                    ss += v * v;
                }
            }
            ss = tw_warp_sum(ss);
            if (lane == 0) inv_smem[r] = rsqrtf(ss / (float)k + eps) * xscale;
        }
    } else if (threadIdx.x < n) {
        inv_smem[threadIdx.x] = xscale;
    }
    tw_sync();
    if (stage) {
        if (wn || xscale != 1.f) {
            // By float4 (one division per four elements): physical float4 c4 of a row holds
            // logical columns tw_swz(4 c4) .. + 3 (the swizzle is its own inverse and moves
            // whole float4s).
            float4* st4 = reinterpret_cast<float4*>(stage_smem);
            for (int i = threadIdx.x; i < n * k4; i += TW_THREADS) {
                const int r = i / k4, c = tw_swz(4 * (i - r * k4));
                const float f = inv_smem[r];
                float4 v = st4[i];
                v.x *= f, v.y *= f, v.z *= f, v.w *= f;
                if (wn) {
                    const float4 g = wn_smem ? *reinterpret_cast<const float4*>(wn_smem + c)
                                             : make_float4(tw_bf16(wn[c]), tw_bf16(wn[c + 1]), tw_bf16(wn[c + 2]),
                                                           tw_bf16(wn[c + 3]));
                    v.x *= g.x, v.y *= g.y, v.z *= g.z, v.w *= g.w;
                }
                st4[i] = v;
            }
            tw_sync();
        }
        rows.staged = stage_smem;
    }
    return rows;
}
