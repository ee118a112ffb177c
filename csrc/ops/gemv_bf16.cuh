// The bf16 GEMV core: acc[i][r] = sum_k x[r][k] * W_i[k] for NR weight rows W_i (bf16)
// and up to 16 input rows, fp32 accumulation. A warp takes NR rows at once and issues
// TW_GEMV_UNROLL 16-byte loads per row per lane before using any (latency hiding: a
// decode GEMV is a stream of independent loads, so keep many in flight).
#pragma once
#include "core/rows.cuh"
#include "core/prefetch.cuh"

#define TW_GEMV_UNROLL 4

template <int NR>
__device__ __forceinline__ void tw_gemv_bf16(const TwRows& x, const __nv_bfloat16* const (&w)[NR],
                                             float (&acc)[NR][TW_MAX_T]) {
#pragma unroll
    for (int i = 0; i < NR; ++i)
#pragma unroll
        for (int r = 0; r < TW_MAX_T; ++r) acc[i][r] = 0.f;
    const int lane = tw_lane();
    for (int c0 = 0; c0 < x.k; c0 += 256 * TW_GEMV_UNROLL) {
        uint4 v[NR][TW_GEMV_UNROLL];
#pragma unroll
        for (int i = 0; i < NR; ++i)
#pragma unroll
            for (int u = 0; u < TW_GEMV_UNROLL; ++u) {
                const int c = c0 + (u * 32 + lane) * 8;
                v[i][u] = (w[i] && c < x.k) ? __ldg(reinterpret_cast<const uint4*>(w[i] + c)) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
        for (int u = 0; u < TW_GEMV_UNROLL; ++u) {
            const int c = c0 + (u * 32 + lane) * 8;
            if (c >= x.k) continue;
            float f[NR][8];
#pragma unroll
            for (int i = 0; i < NR; ++i) {
                const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v[i][u]);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const float2 p = __bfloat1622float2(h[j]);
                    f[i][2 * j] = p.x;
                    f[i][2 * j + 1] = p.y;
                }
            }
#pragma unroll
            for (int r = 0; r < TW_MAX_T; ++r) {
                if (r >= x.n) break;
                // x[r][c..c+8] once for all NR weight rows (two conflict-free 16-byte loads).
                const float4 lo = x.at4(r, c), hi = x.at4(r, c + 4);
                const float xs[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
                for (int i = 0; i < NR; ++i) {
                    float s = 0.f;
#pragma unroll
                    for (int j = 0; j < 8; ++j) s += xs[j] * f[i][j];
                    acc[i][r] += s;
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < NR; ++i)
#pragma unroll
        for (int r = 0; r < TW_MAX_T; ++r)
            if (r < x.n) acc[i][r] = tw_warp_sum(acc[i][r]);
}

// Row pointers for output rows n and n + 1 of W [N, k] (null past n_end).
__device__ __forceinline__ void tw_row_pair(const __nv_bfloat16* w, int k, int n, int n_end,
                                            const __nv_bfloat16* (&rows)[2]) {
    rows[0] = n < n_end ? w + (long long)n * k : nullptr;
    rows[1] = n + 1 < n_end ? w + (long long)(n + 1) * k : nullptr;
}

// Output rows n0..n1 of W [N, k] against the input rows, two rows per warp; `store(n, r, v)`
// is called (by lane 0) with output row n, input row r and the fp32 dot product.
template <class Store>
__device__ __forceinline__ void tw_gemv_bf16_tile(const TwRows& x, const __nv_bfloat16* w, int k, int n0, int n1,
                                                  Store store) {
    for (int n = n0 + 2 * tw_warp(); n < n1; n += 2 * TW_WARPS) {
        const __nv_bfloat16* rows[2];
        tw_row_pair(w, k, n, n1, rows);
        float acc[2][TW_MAX_T];
        tw_gemv_bf16<2>(x, rows, acc);
        if (tw_lane() == 0) {
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                if (n + i >= n1) break;
#pragma unroll
                for (int r = 0; r < TW_MAX_T; ++r)
                    if (r < x.n) store(n + i, r, acc[i][r]);
            }
        }
    }
}

// Prefetch rows n0..n1 of W [N, k] (bf16, row-major: one contiguous range).
__device__ __forceinline__ void tw_prefetch_rows_bf16(TwPrefetch& pf, const __nv_bfloat16* w, int k, int n0, int n1) {
    pf.range(w + (long long)n0 * k, (unsigned long long)(n1 - n0) * k * 2);
}
