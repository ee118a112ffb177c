// The MXFP4 GEMV core: output rows of an expert weight stored as E2M1 codes [N, K/2]
// (low nibble = even k) with E8M0 scales [N, K/32]. Each lane decodes whole 32-element
// blocks: 16 code bytes (one 16-byte load) and one scale byte; value = e2m1(code) *
// 2^(scale - 127), exact in fp32 as in the reference; fp32 accumulation, the scale applied
// once per block. A chunk is TW_MXFP4_UNROLL blocks per lane of both rows of a group,
// copied into a shared-memory ring slot; core/gemv_walk.cuh keeps the ring's next chunks
// in flight while one is consumed.
#pragma once
#include "core/rows.cuh"
#include "core/prefetch.cuh"
#include "core/cp_async.cuh"

// Blocks per lane per chunk: one chunk fills one ring slot (core/gemv_walk.cuh).
#define TW_MXFP4_UNROLL 2

__device__ __forceinline__ float tw_e8m0(unsigned int s) {
    // 2^(s-127): the exponent field for s >= 1, and the subnormal 2^-127 for s == 0.
    return s ? __int_as_float((int)(s << 23)) : __int_as_float(0x00400000);
}

// E2M1 code (s e1 e0 m) -> fp32 in two bit operations: placing e1 e0 m at fp32 bits
// 24..22 gives 2^(e-127) * (1 + m/2) for e > 0 and the subnormal m * 2^-127 for e == 0,
// i.e. exactly value * 2^-126 (the sign bit passes straight through). No multiply puts
// the 2^126 back per code: the input rows of an MXFP4 GEMV are staged times 2^100
// (TW_MXFP4_X_SCALE, exact), so each product is the true one times 2^-26, well inside
// the normal range, and the block's partial sum is scaled back once (TW_MXFP4_UNSCALE,
// exact) before its scale is applied. Every rounding is the unscaled one, times a power
// of two: the same bits as decoding each code exactly (products below 2^-100 aside).
#define TW_MXFP4_X_SCALE 1.2676506002282294e30f   // 2^100
#define TW_MXFP4_UNSCALE 67108864.f               // 2^26 = 2^126 / 2^100

__device__ __forceinline__ float tw_e2m1_raw(unsigned int word, int shift) {
    const unsigned int c = word >> shift;
    return __int_as_float((int)(((c & 8u) << 28) | ((c & 7u) << 22)));
}

// Two MXFP4 rows: codes [k/2] and scales [k/32] each (null: no row).
struct TwFp4Core {
    struct Ptrs {
        const unsigned char* codes[2];
        const unsigned char* scales[2];
    };
    // A ring slot: each lane's 16-byte code blocks, the aligned 4-byte words holding their
    // scales (cp.async copies 4-byte-aligned words) and each scale's byte within its word,
    // [row][unroll][lane] (consecutive lanes, consecutive addresses).
    struct Slot {
        uint4 raw[2][TW_MXFP4_UNROLL][32];
        unsigned int sc[2][TW_MXFP4_UNROLL][32];
        unsigned char at[2][TW_MXFP4_UNROLL][32];
    };
    static __device__ __forceinline__ int chunks(int k) {
        return (k / 32 + 32 * TW_MXFP4_UNROLL - 1) / (32 * TW_MXFP4_UNROLL);
    }

    // Issues the lane's copies of one chunk into `slot` (zeros for a missing row).
    static __device__ __forceinline__ void load(Slot& slot, const Ptrs& p, int k, int chunk) {
        const int lane = tw_lane(), b0 = chunk * 32 * TW_MXFP4_UNROLL + lane, blocks = k / 32;
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int u = 0; u < TW_MXFP4_UNROLL; ++u) {
                const int bl = b0 + u * 32;
                if (bl >= blocks) continue;   // fma skips it too
                if (p.codes[i]) {
                    tw_cp_async16(&slot.raw[i][u][lane], p.codes[i] + bl * 16);
                    // The aligned word holding the scale (allocations are 4-byte granular).
                    const unsigned long long a = reinterpret_cast<unsigned long long>(p.scales[i] + bl);
                    tw_cp_async4(&slot.sc[i][u][lane], reinterpret_cast<const void*>(a & ~3ull));
                    slot.at[i][u][lane] = static_cast<unsigned char>(a & 3);
                } else {
                    slot.raw[i][u][lane] = make_uint4(0, 0, 0, 0);
                    slot.sc[i][u][lane] = 0u;
                    slot.at[i][u][lane] = 0;
                }
            }
    }

    static __device__ __forceinline__ void fma(const Slot& slot, const TwRows& x, int chunk, float (&acc)[2][TW_MAX_T]) {
        const int lane = tw_lane(), b0 = chunk * 32 * TW_MXFP4_UNROLL + lane, blocks = x.k / 32;
        // One block's body (~7 instructions per code, 64 codes) is already long enough to
        // keep the issue slots busy; unrolling blocks only doubled the code the instruction
        // cache must hold (Nsight: a third of this loop's stalls were no_instruction).
#pragma unroll 1
        for (int u = 0; u < TW_MXFP4_UNROLL; ++u) {
            const int bl = b0 + u * 32;
            if (bl >= blocks) continue;
            const uint4 raw[2] = {slot.raw[0][u][lane], slot.raw[1][u][lane]};
            const unsigned int sc[2] = {(slot.sc[0][u][lane] >> (8 * slot.at[0][u][lane])) & 0xffu,
                                        (slot.sc[1][u][lane] >> (8 * slot.at[1][u][lane])) & 0xffu};
#pragma unroll
            for (int r = 0; r < TW_MAX_T; ++r) {
                if (r >= x.n) break;
                float s[2] = {0.f, 0.f};
#pragma unroll
                for (int q = 0; q < 8; ++q) {   // codes 4q..4q+3: word q / 2, nibbles from 16 * (q % 2)
                    const float4 xv = x.at4(r, bl * 32 + 4 * q);
#pragma unroll
                    for (int i = 0; i < 2; ++i) {
                        const uint4& w = raw[i];
                        const unsigned int wq = (q >> 1) == 0 ? w.x : (q >> 1) == 1 ? w.y : (q >> 1) == 2 ? w.z : w.w;
                        const int sh = 16 * (q & 1);
                        s[i] += xv.x * tw_e2m1_raw(wq, sh);
                        s[i] += xv.y * tw_e2m1_raw(wq, sh + 4);
                        s[i] += xv.z * tw_e2m1_raw(wq, sh + 8);
                        s[i] += xv.w * tw_e2m1_raw(wq, sh + 12);
                    }
                }
                // The block scale is a power of two: applying it to the block's partial sum
                // equals applying it to every weight (no rounding differs).
#pragma unroll
                for (int i = 0; i < 2; ++i) acc[i][r] += (s[i] * TW_MXFP4_UNSCALE) * tw_e8m0(sc[i]);
            }
        }
    }
};

// Prefetch rows n0..n1 of one expert's MXFP4 weight: its codes, then its scales.
__device__ __forceinline__ void tw_prefetch_rows_mxfp4(TwPrefetch& pf, const unsigned char* codes,
                                                      const unsigned char* scales, int k, int n0, int n1) {
    pf.range(codes + (long long)n0 * (k / 2), (unsigned long long)(n1 - n0) * (k / 2));
    pf.range(scales + (long long)n0 * (k / 32), (unsigned long long)(n1 - n0) * (k / 32));
}
