// The MXFP4 GEMV core: one output row of an expert weight stored as E2M1 codes [N, K/2]
// (low nibble = even k) with E8M0 scales [N, K/32]. Each lane decodes whole 32-element
// blocks: 16 code bytes (one 16-byte load) and one scale byte; value = e2m1(code) *
// 2^(scale - 127), exact in fp32 as in the reference; accumulation in fp32.
#pragma once
#include "core/rows.cuh"

__device__ __forceinline__ float tw_e8m0(unsigned int s) {
    // 2^(s-127): the exponent field for s >= 1, and the subnormal 2^-127 for s == 0.
    return s ? __int_as_float((int)(s << 23)) : __int_as_float(0x00400000);
}

__device__ __forceinline__ float tw_e2m1(unsigned int code) {
    // 0, .5, 1, 1.5, 2, 3, 4, 6 and their negatives (code 8..15).
    const unsigned int m = code & 7u;
    const float mag = m < 4u ? 0.5f * (float)m : (float)(1u << ((m >> 1) - 1u)) * (1.f + 0.5f * (float)(m & 1u));
    return (code & 8u) ? -mag : mag;
}

__device__ __forceinline__ void tw_gemv_mxfp4_row(const TwRows& x, const unsigned char* codes_row,
                                                  const unsigned char* scales_row, float acc[TW_MAX_T]) {
#pragma unroll
    for (int r = 0; r < TW_MAX_T; ++r) acc[r] = 0.f;
    const int lane = tw_lane();
    for (int blk = lane; blk * 32 < x.k; blk += 32) {
        const uint4 raw = __ldg(reinterpret_cast<const uint4*>(codes_row + blk * 16));
        const float scale = tw_e8m0(__ldg(scales_row + blk));
        const unsigned char* b = reinterpret_cast<const unsigned char*>(&raw);
        float w[32];
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            w[2 * i] = tw_e2m1(b[i] & 15u) * scale;
            w[2 * i + 1] = tw_e2m1(b[i] >> 4) * scale;
        }
        const int c0 = blk * 32;
#pragma unroll
        for (int r = 0; r < TW_MAX_T; ++r) {
            if (r < x.n) {
                float s = 0.f;
#pragma unroll
                for (int j = 0; j < 32; ++j) s += x.at(r, c0 + j) * w[j];
                acc[r] += s;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < TW_MAX_T; ++r)
        if (r < x.n) acc[r] = tw_warp_sum(acc[r]);
}
