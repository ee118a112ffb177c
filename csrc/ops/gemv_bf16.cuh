// The bf16 GEMV core: for output rows n of a weight W [N, K] (bf16, row-major) and up to
// 16 input rows, acc[r] = sum_k x[r][k] * W[n][k] in fp32. One warp per output row;
// lanes read 16-byte vectors of the weight row (coalesced, read-only path).
#pragma once
#include "core/rows.cuh"

__device__ __forceinline__ void tw_gemv_bf16_row(const TwRows& x, const __nv_bfloat16* wrow, float acc[TW_MAX_T]) {
#pragma unroll
    for (int r = 0; r < TW_MAX_T; ++r) acc[r] = 0.f;
    const int lane = tw_lane();
    for (int c = lane * 8; c < x.k; c += 256) {
        float w[8];
        tw_bf16x8(wrow + c, w);
#pragma unroll
        for (int r = 0; r < TW_MAX_T; ++r) {
            if (r < x.n) {
                float s = 0.f;
#pragma unroll
                for (int j = 0; j < 8; ++j) s += x.at(r, c + j) * w[j];
                acc[r] += s;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < TW_MAX_T; ++r)
        if (r < x.n) acc[r] = tw_warp_sum(acc[r]);
}
