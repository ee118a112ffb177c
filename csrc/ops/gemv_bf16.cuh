// The bf16 GEMV core: acc[i][r] = sum_k x[r][k] * W_i[k] for two weight rows W_i (bf16)
// and up to 16 input rows, fp32 accumulation. A chunk is TW_GEMV_UNROLL 16-byte pieces per
// row per lane (8 weights each), copied into a shared-memory ring slot; core/gemv_walk.cuh
// keeps the ring's next chunks in flight while one is consumed.
#pragma once
#include "core/rows.cuh"
#include "core/prefetch.cuh"
#include "core/cp_async.cuh"

// 16-byte loads per row per lane per chunk: one chunk fills one ring slot (2 KB).
#define TW_GEMV_UNROLL 2

struct TwBf16Core {
    struct Ptrs {
        const __nv_bfloat16* w[2];
    };
    // A ring slot: each lane's 16-byte pieces, [row][unroll][lane].
    struct Slot {
        uint4 v[2][TW_GEMV_UNROLL][32];
    };
    static __device__ __forceinline__ int chunks(int k) { return (k + 256 * TW_GEMV_UNROLL - 1) / (256 * TW_GEMV_UNROLL); }

    // Issues the lane's copies of one chunk into `slot` (zeros for a missing row).
    static __device__ __forceinline__ void load(Slot& slot, const Ptrs& p, int k, int chunk) {
        const int lane = tw_lane(), c0 = chunk * 256 * TW_GEMV_UNROLL + lane * 8;
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int u = 0; u < TW_GEMV_UNROLL; ++u) {
                const int c = c0 + u * 256;
                if (c >= k) continue;   // fma skips it too
                if (p.w[i])
                    tw_cp_async16(&slot.v[i][u][lane], p.w[i] + c);
                else
                    slot.v[i][u][lane] = make_uint4(0, 0, 0, 0);
            }
    }

    static __device__ __forceinline__ void fma(const Slot& slot, const TwRows& x, int chunk, float (&acc)[2][TW_MAX_T]) {
        const int lane = tw_lane(), c0 = chunk * 256 * TW_GEMV_UNROLL + lane * 8;
#pragma unroll
        for (int u = 0; u < TW_GEMV_UNROLL; ++u) {
            const int c = c0 + u * 256;
            if (c >= x.k) continue;
            float f[2][8];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const uint4 raw = slot.v[i][u][lane];
                const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const float2 q = __bfloat1622float2(h[j]);
                    f[i][2 * j] = q.x;
                    f[i][2 * j + 1] = q.y;
                }
            }
#pragma unroll
            for (int r = 0; r < TW_MAX_T; ++r) {
                if (r >= x.n) break;
                // x[r][c..c+8] once for both weight rows (two conflict-free 16-byte loads).
                const float4 lo = x.at4(r, c), hi = x.at4(r, c + 4);
                const float xs[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    float s = 0.f;
#pragma unroll
                    for (int j = 0; j < 8; ++j) s += xs[j] * f[i][j];
                    acc[i][r] += s;
                }
            }
        }
    }
};

// Prefetch rows n0..n1 of W [N, k] (bf16, row-major: one contiguous range).
__device__ __forceinline__ void tw_prefetch_rows_bf16(TwPrefetch& pf, const __nv_bfloat16* w, int k, int n0, int n1) {
    pf.range(w + (long long)n0 * k, (unsigned long long)(n1 - n0) * k * 2);
}
