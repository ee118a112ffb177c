// The MXFP4 GEMV core (the experts): on tensor cores, mma.sync.m16n8k16 with the weights as the
// A operand (16 rows x 16 k, fp16, exact) and the tokens as B (16 k x 8 tokens).
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
//
// Work split: K is cut across the compute warps (tasks have few 16-row tiles: 3 gated
// or 8 plain on mimo-mini); each warp accumulates every tile of a pass over its K range,
// then the warps' C fragments are summed in shared memory in a fixed order.
#pragma once
#include <cuda_fp16.h>
#include "core/gemv_desc.cuh"
#include "core/prefetch.cuh"

__device__ __forceinline__ float tw_e8m0(unsigned int s) {
    // 2^(s-127): the exponent field for s >= 1, and the subnormal 2^-127 for s == 0.
    return s ? __int_as_float((int)(s << 23)) : __int_as_float(0x00400000);
}


#define TW_MMA_X_SCALE 0.25f          // 2^-2: the staged input, exact
#define TW_MMA_UNSCALE 65536.f        // 2^16 = 2^14 (decode) * 2^2 (input)
#define TW_MMA_TILES 8                // accumulator tiles per pass (registers: 4 floats each)

// Half2 j (nibbles j and j + 4) of a fragment word: each E2M1 code x 2^-14 as fp16.
template <int J>
__device__ __forceinline__ unsigned int tw_e2m1x2_half2(unsigned int w) {
    const unsigned int mag = (J <= 2 ? (w << (9 - 4 * J)) : (w >> (4 * J - 9))) & 0x0E000E00u;
    return mag | ((w << (12 - 4 * J)) & 0x80008000u);
}

__device__ __forceinline__ void tw_mma16816(float (&d)[4], unsigned int a0, unsigned int a1, unsigned int a2,
                                            unsigned int a3, unsigned int b0, unsigned int b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// One 32-k block of a pass: each tile's two fragment words (k16 steps) and its rows'
// scales (rows gq and gq + 8).
struct TwMmaBlock {
    unsigned int w[TW_MMA_TILES][2];
    unsigned int s[TW_MMA_TILES];   // scale of row gq | scale of row gq + 8 << 8
};

// Where a pass's tiles live: tiles 0..np-1 are rows (rt0 + i) of w, tiles np.. (gated) the
// same rows of w2.
struct TwMmaPass {
    const TwGemv& g;
    int rt0, np, ntile, kt_n, kb_n, lane, gq;
};

__device__ __forceinline__ void tw_mma_fetch(const TwMmaPass& p, int kb, TwMmaBlock& f) {
#pragma unroll
    for (int i = 0; i < TW_MMA_TILES; ++i) {
        if (i >= p.ntile) break;
        const bool up = i >= p.np;
        const int rt = p.rt0 + (up ? i - p.np : i);
        const unsigned int* tile = static_cast<const unsigned int*>(up ? p.g.w2 : p.g.w) +
                                   ((long long)rt * p.kt_n + 2 * kb) * 32 + p.lane;
        const unsigned char* srow = (up ? p.g.w2_scales : p.g.w_scales) + ((long long)rt * p.kb_n + kb) * 16;
        f.w[i][0] = __ldg(tile);
        f.w[i][1] = __ldg(tile + 32);
        f.s[i] = (unsigned int)__ldg(srow + p.gq) | ((unsigned int)__ldg(srow + p.gq + 8) << 8);
    }
}

// (a, b) as fp16 hi and lo halves: a = hi.x + lo.x to ~22 bits.
__device__ __forceinline__ void tw_split_half2(float a, float b, unsigned int& hi, unsigned int& lo) {
    const __half2 h = __floats2half2_rn(a, b);
    const float2 back = __half22float2(h);
    const __half2 l = __floats2half2_rn(a - back.x, b - back.y);
    hi = *reinterpret_cast<const unsigned int*>(&h);
    lo = *reinterpret_cast<const unsigned int*>(&l);
}

// Rows n0:n1 (multiples of 16) of W (and of W2 when gated), MXFP4 in the fragment layout,
// for the tokens of column tile ct (tokens 8ct .. 8ct + 7). Epilogue as TwGemv's: gated
// silu(gate) * up, scatter by s_tok.
__device__ void tw_gemv_mxfp4_mma_cols(const TwCtx& c, const TwGemv& g, const TwRows& x, int ct) {
    const int lane = tw_lane(), w = tw_warp(), gq = lane >> 2, tq = lane & 3;
    const int kt_n = g.k / 16, kb_n = g.k / 32;
    const int row_tiles = (g.n1 - g.n0) / 16, rt0 = g.n0 / 16;
    const bool gated = g.w2 != nullptr;
    // A pass covers up to TW_MMA_TILES accumulator tiles: gated, half gate and half up
    // tiles of the same rows, so the epilogue finds both.
    const int per_pass = gated ? TW_MMA_TILES / 2 : TW_MMA_TILES;
    const int kb0 = w * kb_n / TW_WARPS, kb1 = (w + 1) * kb_n / TW_WARPS;
    float* red = c.s_scratch;   // [TW_WARPS][TW_MMA_TILES][32 lanes][4]
    for (int p0 = 0; p0 < row_tiles; p0 += per_pass) {
        const int np = min(per_pass, row_tiles - p0), ntile = gated ? 2 * np : np;
        float acc[TW_MMA_TILES][4];
#pragma unroll
        for (int i = 0; i < TW_MMA_TILES; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
        // The block's words and scales for every tile, one block ahead of the mmas (two
        // register sets: the loads of block kb + 1 fly while block kb computes).
        const TwMmaPass ps{g, rt0 + p0, np, ntile, kt_n, kb_n, lane, gq};
        TwMmaBlock cur, nxt;
        if (kb0 < kb1) tw_mma_fetch(ps, kb0, cur);
        for (int kb = kb0; kb < kb1; ++kb) {
            if (kb + 1 < kb1) tw_mma_fetch(ps, kb + 1, nxt);
            // B fragments of the block's two k16 steps (token 8ct + gq, k 2tq, 2tq+1, +8,
            // +9): once per block, shared by every tile.
            unsigned int bh[2][2], bl[2][2];
#pragma unroll
            for (int s = 0; s < 2; ++s) {
                const int k0 = 32 * kb + 16 * s + 2 * tq, tok = 8 * ct + gq;
                const bool on = tok < x.n;
                tw_split_half2(on ? x.at(tok, k0) : 0.f, on ? x.at(tok, k0 + 1) : 0.f, bh[s][0], bl[s][0]);
                tw_split_half2(on ? x.at(tok, k0 + 8) : 0.f, on ? x.at(tok, k0 + 9) : 0.f, bh[s][1], bl[s][1]);
            }
#pragma unroll
            for (int i = 0; i < TW_MMA_TILES; ++i) {
                if (i >= ntile) break;
                float blk[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int s = 0; s < 2; ++s) {
                    const unsigned int wd = cur.w[i][s];
                    const unsigned int a0 = tw_e2m1x2_half2<0>(wd), a1 = tw_e2m1x2_half2<1>(wd);
                    const unsigned int a2 = tw_e2m1x2_half2<2>(wd), a3 = tw_e2m1x2_half2<3>(wd);
                    tw_mma16816(blk, a0, a1, a2, a3, bh[s][0], bh[s][1]);
                    tw_mma16816(blk, a0, a1, a2, a3, bl[s][0], bl[s][1]);
                }
                // c0, c1: row gq; c2, c3: row gq + 8 (tokens 2tq, 2tq + 1).
                const float lo = tw_e8m0(cur.s[i] & 0xffu), hi = tw_e8m0(cur.s[i] >> 8);
                acc[i][0] += (blk[0] * TW_MMA_UNSCALE) * lo;
                acc[i][1] += (blk[1] * TW_MMA_UNSCALE) * lo;
                acc[i][2] += (blk[2] * TW_MMA_UNSCALE) * hi;
                acc[i][3] += (blk[3] * TW_MMA_UNSCALE) * hi;
            }
            cur = nxt;
        }
#pragma unroll
        for (int i = 0; i < TW_MMA_TILES; ++i) {
            if (i >= ntile) break;
            *reinterpret_cast<float4*>(red + ((w * TW_MMA_TILES + i) * 32 + lane) * 4) =
                make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
        }
        tw_sync();
        // Epilogue: element (tile i, lane l, e) of the gate (or plain) tiles, summed over the
        // warps in order; gated outputs combine tile i with its up tile i + np.
        for (int idx = threadIdx.x; idx < np * 128; idx += TW_THREADS) {
            const int i = idx >> 7, l = (idx >> 2) & 31, e = idx & 3;
            const int tok = 8 * ct + 2 * (l & 3) + (e & 1), row = g.n0 + 16 * (p0 + i) + (l >> 2) + (e >= 2 ? 8 : 0);
            if (tok >= x.n) continue;
            float v = 0.f, u = 0.f;
            for (int ww = 0; ww < TW_WARPS; ++ww) {
                v += red[((ww * TW_MMA_TILES + i) * 32 + l) * 4 + e];
                if (gated) u += red[((ww * TW_MMA_TILES + i + np) * 32 + l) * 4 + e];
            }
            float* o = g.out + (long long)(g.scatter ? c.s_tok[tok] : tok) * g.out_ld;
            if (gated) {
                o[row] = tw_silu(v) * u;
            } else {
                if (g.resid) v += tw_ld(g.resid + (long long)tok * g.resid_ld + row);
                o[row] = v;
            }
        }
        tw_sync();   // the scratch is reused by the next pass
    }
}

// All compute threads, after the input rows are staged (times TW_MMA_X_SCALE).
__device__ __forceinline__ void tw_gemv_mxfp4_mma(const TwCtx& c, const TwGemv& g, const TwRows& x) {
    for (int ct = 0; 8 * ct < x.n; ++ct) tw_gemv_mxfp4_mma_cols(c, g, x, ct);
}

// Prefetch rows n0..n1 of one expert's MXFP4 weight: its codes, then its scales.
__device__ __forceinline__ void tw_prefetch_rows_mxfp4(TwPrefetch& pf, const unsigned char* codes,
                                                      const unsigned char* scales, int k, int n0, int n1) {
    pf.range(codes + (long long)n0 * (k / 2), (unsigned long long)(n1 - n0) * (k / 2));
    pf.range(scales + (long long)n0 * (k / 32), (unsigned long long)(n1 - n0) * (k / 32));
}
