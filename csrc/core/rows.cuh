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
#include "core/cp_async.cuh"

#define TW_STAGE_FLOATS (44 * 1024)  // 176 KB of the dynamic shared memory
#ifndef TW_STAGE_UNROLL
#define TW_STAGE_UNROLL 4
#endif
// GEMV input rows copied by cp.async ahead of the task's weight stream (tw_rows_issue /
// tw_rows_finish: 1), or loaded with plain loads before the bf16 ring / after the MXFP4
// prime (tw_load_rows: 0, the A/B baseline). Measured on an H200, mimo-mini: 1.497 -> 1.428
// ms per decode step, 4.780 -> 4.477 per verify step of 8 (docs/perf-notes.md v15): staged
// first, the rows' L2 round trip held up the weights' (qkv: 2.7 us of prologue before
// the first weight request); primed first, the rows queued behind ~130 KB of weights.
#ifndef TW_ROWS_ASYNC
#define TW_ROWS_ASYNC 1
#endif

// Candidate (off): TW_NORM_DEFERRED=1 applies a one-row norm in one pass instead of two: the
// staged row times the norm weight, each warp's part of its sum of squares kept, and 1/rms
// left for the GEMV to apply to its sums (TwRows::post), so the row's scaling no longer
// waits for the reduction (tw_rows_finish_deferred). Why: the pass costs 0.7-1.7 us of a
// T = 1 task where its arithmetic is ~0.3, one warp summing the 2,048 floats alone between
// two barriers (docs/perf-notes.md v18 1). Only for the bf16 walk (fp32 FMAs), whose input
// may then be as large as the un-normed row; the tensor-core walks split theirs into fp16.
#ifndef TW_NORM_DEFERRED
#define TW_NORM_DEFERRED 0
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
#if TW_NORM_DEFERRED
    float post = 1.f;          // a factor for the GEMV's sums: 1/rms when the norm was deferred
#endif

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

__device__ __forceinline__ bool tw_rows_stageable(const float* src, int ld, int n, int k, int stage_floats) {
    return n * k <= stage_floats && (k & 31) == 0 && (ld & 3) == 0
           && ((reinterpret_cast<unsigned long long>(src) & 15) == 0);
}

// After the staged rows (and the norm weight, as fp32 in wn_f or bf16 in wn_b, both shared
// memory) are in place and a barrier passed: the per-row factor (1/rms times xscale) and,
// for staged rows, the rows scaled in place. All compute threads; ends with a barrier.
__device__ void tw_rows_normalise(TwRows& rows, const float* src, int ld, const int* tok_smem, float eps,
                                  float* inv_smem, float* stage_smem, const float* wn_f, const __nv_bfloat16* wn_b,
                                  float xscale) {
    const int w = tw_warp(), lane = tw_lane(), n = rows.n, k = rows.k, k4 = k / 4;
    const bool stage = stage_smem != nullptr;
    const __nv_bfloat16* wn = rows.wn;
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
                    float4 g;
                    if (wn_f) {
                        g = *reinterpret_cast<const float4*>(wn_f + c);
                    } else if (wn_b) {
                        g = tw_bf16x4(wn_b + c);
                    } else {
                        g = make_float4(tw_bf16(wn[c]), tw_bf16(wn[c + 1]), tw_bf16(wn[c + 2]), tw_bf16(wn[c + 3]));
                    }
                    v.x *= g.x, v.y *= g.y, v.z *= g.z, v.w *= g.w;
                }
                st4[i] = v;
            }
            tw_sync();
        }
        rows.staged = stage_smem;
    }
}

// Prepares `rows` for src rows tok[0..n) (the caller fills `tok_smem` first, then syncs).
// All compute threads call it; it ends with a barrier.
// The rows are staged when they fit `stage_floats`; `wn_smem` (k floats, or nullptr)
// receives the norm weight in the staging pass, so its loads overlap the rows' instead of
// following the sum of squares. Every row comes out times `xscale`, a power of two (so
// exactly), folded into the per-row factor: 1 for bf16 weights, TW_MXFP4_X_SCALE for MXFP4.
__device__ TwRows tw_load_rows(const float* src, int ld, const int* tok_smem, int n, int k,
                               const __nv_bfloat16* wn, float eps, float* inv_smem, float* stage_smem,
                               int stage_floats, float* wn_smem, float xscale) {
    TwRows rows{src, tok_smem, ld, n, k, wn, inv_smem, nullptr};
    const bool stage = tw_rows_stageable(src, ld, n, k, stage_floats);
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
    tw_rows_normalise(rows, src, ld, tok_smem, eps, inv_smem, stage ? stage_smem : nullptr,
                      wn_smem, nullptr, xscale);
    return rows;
}

// The same rows in two halves around the caller's weight stream (TW_ROWS_ASYNC): issue
// copies the rows and the norm weight's bf16 (to `wn_raw`, k / 2 floats of shared memory,
// 16-byte aligned; when the weight is too) with cp.async and commits them as one group, so
// that they head the SM's memory queue; the caller then issues its weights (`newer`
// commit groups) and tw_rows_finish waits for the rows alone and normalises them. Rows
// that do not fit the stage are read from L2 as tw_load_rows does. All compute threads.
__device__ void tw_rows_issue(const float* src, int ld, const int* tok_smem, int n, int k, const __nv_bfloat16* wn,
                              float* stage_smem, int stage_floats, __nv_bfloat16* wn_raw) {
    if (tw_rows_stageable(src, ld, n, k, stage_floats)) {
        const int k4 = k / 4;
        for (int i = threadIdx.x; i < n * k4; i += TW_THREADS) {
            const int r = i / k4, c = 4 * (i - r * k4);
            tw_cp_async16(stage_smem + r * k + tw_swz(c), src + (long long)tok_smem[r] * ld + c);
        }
        if (wn && wn_raw)
            for (int i = threadIdx.x; i < k / 8; i += TW_THREADS) tw_cp_async16(wn_raw + 8 * i, wn + 8 * i);
    }
    tw_cp_async_commit();
}

__device__ TwRows tw_rows_finish(const float* src, int ld, const int* tok_smem, int n, int k,
                                 const __nv_bfloat16* wn, float eps, float* inv_smem, float* stage_smem,
                                 int stage_floats, const __nv_bfloat16* wn_raw, float xscale, int newer) {
    TwRows rows{src, tok_smem, ld, n, k, wn, inv_smem, nullptr};
    const bool stage = tw_rows_stageable(src, ld, n, k, stage_floats);
    tw_cp_async_wait_n(newer);   // this thread's copies of the rows have landed
    tw_sync();                   // and every thread's
    tw_rows_normalise(rows, src, ld, tok_smem, eps, inv_smem, stage ? stage_smem : nullptr, nullptr,
                      stage ? wn_raw : nullptr, xscale);
    return rows;
}

#if TW_NORM_DEFERRED
// tw_rows_finish for the bf16 walk: one staged row with a norm whose bf16 weight was copied
// to shared memory (wn_raw) is scaled by that weight in one pass of every thread, which also
// sums its squares (partials per warp in inv_smem[0..TW_WARPS)); rows.post = 1/rms for the
// GEMV's sums. Any other rows go the two-pass way (rows.post = 1). All compute threads.
__device__ TwRows tw_rows_finish_deferred(const float* src, int ld, const int* tok_smem, int n, int k,
                                          const __nv_bfloat16* wn, float eps, float* inv_smem, float* stage_smem,
                                          int stage_floats, const __nv_bfloat16* wn_raw, int newer) {
    static_assert(TW_WARPS <= 16, "the warps' partial sums live in the 16-float norm region");
    if (n != 1 || !wn || !wn_raw || !tw_rows_stageable(src, ld, n, k, stage_floats)) {
        return tw_rows_finish(src, ld, tok_smem, n, k, wn, eps, inv_smem, stage_smem, stage_floats, wn_raw, 1.f,
                              newer);
    }
    TwRows rows{src, tok_smem, ld, n, k, wn, inv_smem, stage_smem, 1.f};
    tw_cp_async_wait_n(newer);   // this thread's copies of the row have landed
    tw_sync();                   // and every thread's
    float4* st4 = reinterpret_cast<float4*>(stage_smem);
    float ss = 0.f;
    for (int i = threadIdx.x; i < k / 4; i += TW_THREADS) {
        const int c = tw_swz(4 * i);   // physical float4 i holds logical columns c .. c + 3
        float4 v = st4[i];
        ss += (v.x * v.x + v.y * v.y) + (v.z * v.z + v.w * v.w);
        const float4 g = tw_bf16x4(wn_raw + c);
        v.x *= g.x, v.y *= g.y, v.z *= g.z, v.w *= g.w;
        st4[i] = v;
    }
    ss = tw_warp_sum(ss);
    if (tw_lane() == 0) inv_smem[tw_warp()] = ss;
    tw_sync();
    ss = 0.f;
#pragma unroll
    for (int w = 0; w < TW_WARPS; ++w) ss += inv_smem[w];
    rows.post = rsqrtf(ss / (float)k + eps);
    return rows;
}
#endif
