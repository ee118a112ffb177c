// The MXFP4 format of the tensor-core GEMV (core/gemv_mma.cuh): the experts.
//
// Layout (runtime/mxfp4_mma.py): each 16 x 16 tile of codes is 32 words, a lane's word
// holding its A fragment as nibbles (j, j + 4) -> half2 j; a row tile's words for all k
// tiles are contiguous, so rows n0:n1 of an expert occupy the same bytes as in the
// row-major layout. Scales: [row tile][32-k block][16 rows].
//
// Numbers: a code decodes to its E2M1 value x 2^-14 (exact fp16, subnormals included);
// the input is staged x 2^-2 (exact) and split into hi + lo fp16 halves (two mmas, ~22
// bits of the fp32 input; |x| < 2^18); each 32-k block accumulates fresh, then is scaled
// back by 2^16 and by its rows' E8M0 scales in fp32.
#pragma once
#include <cuda_fp16.h>
#include "core/gemv_mma.cuh"
#include "core/prefetch.cuh"

__device__ __forceinline__ float tw_e8m0(unsigned int s) {
    // 2^(s-127): the exponent field for s >= 1, and the subnormal 2^-127 for s == 0.
    return s ? __int_as_float((int)(s << 23)) : __int_as_float(0x00400000);
}

#define TW_MMA_X_SCALE 0.25f          // 2^-2: the staged input, exact
#define TW_MMA_UNSCALE 65536.f        // 2^16 = 2^14 (decode) * 2^2 (input)
#define TW_MMA_UNSCALE_LOG2 16   // the fold below takes scale bytes up to 254 - 16: runtime/megakernel.py
                                 // E8M0_MAX_FOLDED refuses banks with larger ones at upload

// 2^(s-127) * TW_MMA_UNSCALE in one integer op: the fp32 whose exponent field is s + 16
// (s == 0 included: 2^-111 is normal, no subnormal case). Was a shift, a select for s == 0
// and a multiply: 4 of the T = 1 expert loop's 56 instructions per tile, for every scale.
// TW_E8M0_FOLD=0 is the A/B baseline.
#ifndef TW_E8M0_FOLD
#define TW_E8M0_FOLD 1
#endif
__device__ __forceinline__ float tw_e8m0_unscaled(unsigned int s) {
    if (TW_E8M0_FOLD) return __int_as_float((int)((s + TW_MMA_UNSCALE_LOG2) << 23));
    return tw_e8m0(s) * TW_MMA_UNSCALE;
}

// Half2 j (nibbles j and j + 4) of a fragment word: each E2M1 code x 2^-14 as fp16.
template <int J>
__device__ __forceinline__ unsigned int tw_e2m1x2_half2(unsigned int w) {
    const unsigned int mag = (J <= 2 ? (w << (9 - 4 * J)) : (w >> (4 * J - 9))) & 0x0E000E00u;
    return mag | ((w << (12 - 4 * J)) & 0x80008000u);
}

struct TwMmaFp4 {
    static constexpr int kTileBytes = 256;   // 16 rows x 32 k codes: the two k16 tiles' 32 words each
    static constexpr int kScaleBytes = 16;   // the tile's 16 rows' scales of the block
    static constexpr int kPassTiles = 8;     // a 6-tile gated or 8-tile plain mimo-mini task in one pass
    static constexpr float kXScale = TW_MMA_X_SCALE;

    static __device__ __forceinline__ const unsigned char* tile_block(const TwGemv& g, bool up, int rt, int kb) {
        return static_cast<const unsigned char*>(up ? g.w2 : g.w) + ((long long)rt * (g.k / 16) + 2 * kb) * 128;
    }
    static __device__ __forceinline__ int chunk_src(int q, int) { return q * 16; }
    static __device__ __forceinline__ int chunk_dst(int q) { return q * 16; }
    static __device__ __forceinline__ const unsigned char* scale_row(const TwGemv& g, bool up, int rt, int kb) {
        return (up ? g.w2_scales : g.w_scales) + ((long long)rt * (g.k / 32) + kb) * 16;
    }
    // The lane's copies of 32-k block kb of a pass's ntile tiles (the first np of w, then,
    // gated, the same rows of w2; rt_p the pass's first row tile) into a ring slot: the
    // codes (two tiles per 32 copies: tile 2j + lane / 16, 16-byte piece lane % 16), then the
    // tiles' scale rows (lanes < ntile). Offsets in 32 bits: an expert matrix is < 4 GB
    // (runtime/megakernel.py refuses larger weights).
    static __device__ __forceinline__ void issue_block(const TwGemv& g, int np, int ntile, int rt_p, int kb,
                                                       unsigned char* dst, unsigned char* scale_dst) {
        const int lane = tw_lane(), piece = lane & 15;
        const unsigned tile_bytes = (unsigned)g.k * 8u;   // a 16-row tile over all of k
        const unsigned kofs = (unsigned)kb * 256u + (unsigned)piece * 16u;
#pragma unroll
        for (int j = 0; j < kPassTiles / 2; ++j) {
            const int i = 2 * j + (lane >> 4);
            if (i >= ntile) break;
            const bool up = i >= np;
            const unsigned rt = (unsigned)(rt_p + (up ? i - np : i));
            tw_cp_async16(dst + i * kTileBytes + piece * 16,
                          static_cast<const unsigned char*>(up ? g.w2 : g.w) + (rt * tile_bytes + kofs));
        }
        if (lane < ntile) {
            const bool up = lane >= np;
            const unsigned rt = (unsigned)(rt_p + (up ? lane - np : lane));
            tw_cp_async16(scale_dst + lane * kScaleBytes,
                          (up ? g.w2_scales : g.w_scales) + (rt * (unsigned)(g.k / 32) + (unsigned)kb) * 16u);
        }
    }
    // The lane's A fragment of k16 step s: its word of the step's 32, decoded.
    static __device__ __forceinline__ void fragment(const unsigned char* tile, int s, unsigned int (&a)[4]) {
        const unsigned int wd = reinterpret_cast<const unsigned int*>(tile)[s * 32 + tw_lane()];
        a[0] = tw_e2m1x2_half2<0>(wd);
        a[1] = tw_e2m1x2_half2<1>(wd);
        a[2] = tw_e2m1x2_half2<2>(wd);
        a[3] = tw_e2m1x2_half2<3>(wd);
    }
    static __device__ __forceinline__ void mma(float (&d)[4], const unsigned int (&a)[4], unsigned int b0,
                                               unsigned int b1) {
        tw_mma16816_f16(d, a, b0, b1);
    }
    static __device__ __forceinline__ void split(float a, float b, unsigned int& hi, unsigned int& lo) {
        tw_split2<__half2>(a, b, hi, lo);
    }
    // Rows gq and gq + 8: their E8M0 block scales, times the decode's and input's 2^16.
    static __device__ __forceinline__ float2 row_factors(const unsigned char* scales, int gq) {
        return make_float2(tw_e8m0_unscaled(scales[gq]), tw_e8m0_unscaled(scales[gq + 8]));
    }
};

