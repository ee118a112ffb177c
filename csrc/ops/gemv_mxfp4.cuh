// The MXFP4 GEMV core: output rows of an expert weight stored as E2M1 codes [N, K/2]
// (low nibble = even k) with E8M0 scales [N, K/32]. Each lane decodes whole 32-element
// blocks: 16 code bytes (one 16-byte load) and one scale byte; value = e2m1(code) *
// 2^(scale - 127), exact in fp32 as in the reference; fp32 accumulation. A warp takes NR
// rows at once with TW_MXFP4_UNROLL blocks per lane in flight.
#pragma once
#include "core/rows.cuh"

#define TW_MXFP4_UNROLL 2

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

struct TwFp4Row {
    const unsigned char* codes;   // [K/2] or null (no row)
    const unsigned char* scales;  // [K/32]
};

template <int NR>
__device__ __forceinline__ void tw_gemv_mxfp4(const TwRows& x, const TwFp4Row (&w)[NR], float (&acc)[NR][TW_MAX_T]) {
#pragma unroll
    for (int i = 0; i < NR; ++i)
#pragma unroll
        for (int r = 0; r < TW_MAX_T; ++r) acc[i][r] = 0.f;
    const int lane = tw_lane();
    const int blocks = x.k / 32;
    for (int b0 = 0; b0 < blocks; b0 += 32 * TW_MXFP4_UNROLL) {
        uint4 raw[NR][TW_MXFP4_UNROLL];
        unsigned int sc[NR][TW_MXFP4_UNROLL];
#pragma unroll
        for (int i = 0; i < NR; ++i)
#pragma unroll
            for (int u = 0; u < TW_MXFP4_UNROLL; ++u) {
                const int b = b0 + u * 32 + lane;
                const bool ok = w[i].codes && b < blocks;
                raw[i][u] = ok ? __ldg(reinterpret_cast<const uint4*>(w[i].codes + b * 16)) : make_uint4(0, 0, 0, 0);
                sc[i][u] = ok ? __ldg(w[i].scales + b) : 0u;
            }
#pragma unroll
        for (int u = 0; u < TW_MXFP4_UNROLL; ++u) {
            const int b = b0 + u * 32 + lane;
            if (b >= blocks) continue;
#pragma unroll
            for (int i = 0; i < NR; ++i) {
                const float scale = tw_e8m0(sc[i][u]);
                const unsigned char* bytes = reinterpret_cast<const unsigned char*>(&raw[i][u]);
                float f[32];
#pragma unroll
                for (int j = 0; j < 16; ++j) {
                    f[2 * j] = tw_e2m1(bytes[j] & 15u) * scale;
                    f[2 * j + 1] = tw_e2m1(bytes[j] >> 4) * scale;
                }
#pragma unroll
                for (int r = 0; r < TW_MAX_T; ++r) {
                    if (r < x.n) {
                        float s = 0.f;
#pragma unroll
                        for (int j = 0; j < 32; ++j) s += x.at(r, b * 32 + j) * f[j];
                        acc[i][r] += s;
                    }
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
