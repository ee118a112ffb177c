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
// or 8 plain on mimo-mini); each warp accumulates every tile of a pass over its K range
// into its own C fragments in shared memory (tw_mma_tile_pair), which the epilogue then
// sums over the warps in a fixed order.
#pragma once
#include <cuda_fp16.h>
#include "core/gemv_desc.cuh"
#include "core/prefetch.cuh"
#include "core/cp_async.cuh"
#include "core/rows.cuh"

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

// Shared-memory stream of a warp's weight blocks (cp.async, core/cp_async.cuh).
//
// Why not loads into registers, one block ahead (this core's first version): a block is
// 12-16 loads per lane, and a warp tracks outstanding register loads on six scoreboards,
// so the next block's loads shared scoreboards with the current one's and each block
// waited for the full memory latency. Copies counted in commit groups keep up to
// TW_MMA_MAX_DEPTH blocks in flight, the first ones issued before the task's input rows
// are staged. Measured on mimo-mini (docs/perf-notes.md v9): an EXPERT_UP task body went
// from 26 to 17 us; depths 2, 4 and 8 are within 2% of each other.
//
// An item is one 32-k block of one pass: its tiles' 256-byte code blocks, then their
// 16-byte scale rows. The warp's items run pass by pass over its K range [kb0, kb0 + nkb).
#ifndef TW_MMA_MAX_DEPTH
#define TW_MMA_MAX_DEPTH 8
#endif
static_assert(TW_MMA_MAX_DEPTH >= 1 && TW_MMA_MAX_DEPTH <= 8, "tw_cp_async_wait_n covers up to 7 newer groups");
#define TW_MMA_TILE_BYTES 256                       // one tile's codes of one 32-k block
#define TW_MMA_SLOT_BYTES(nt) ((nt) * (TW_MMA_TILE_BYTES + 16))
// Floats of the stage kept for the ring when the input rows are staged: one slot per warp.
#define TW_MMA_MIN_RING_FLOATS (TW_WARPS * TW_MMA_SLOT_BYTES(TW_MMA_TILES) / 4)

struct TwMmaStream {
    unsigned char* ring;       // this warp's slots
    int slot_bytes, depth;
    int scale_at;              // byte offset of the scale rows in a slot
    int row_tiles, rt0, per_pass, kt_n, kb_n, kb0, nkb, items;
    bool gated;
    // Cursors, counted up (no division on the item path): the next item to issue (pass,
    // block, slot) and the slot of the next item to consume.
    int loaded, ld_p, ld_kb, ld_slot, cur;

    __device__ __forceinline__ int pass_tiles(int p) const { return min(per_pass, row_tiles - p * per_pass); }
    __device__ __forceinline__ unsigned char* slot(int s) const { return ring + s * slot_bytes; }
    __device__ __forceinline__ void rewind() { loaded = ld_p = ld_kb = ld_slot = cur = 0; }
    __device__ __forceinline__ void next_consumed() { cur = cur + 1 == depth ? 0 : cur + 1; }
};

// Geometry and ring of the task's MXFP4 GEMV for an input of x_floats staged floats.
__device__ __forceinline__ TwMmaStream tw_mma_stream(const TwCtx& c, const TwGemv& g, int x_floats) {
    TwMmaStream st;
    st.gated = g.w2 != nullptr;
    st.row_tiles = (g.n1 - g.n0) / 16;
    st.rt0 = g.n0 / 16;
    // A pass covers up to TW_MMA_TILES accumulator tiles: gated, half gate and half up
    // tiles of the same rows, so the epilogue finds both.
    st.per_pass = st.gated ? TW_MMA_TILES / 2 : TW_MMA_TILES;
    st.kt_n = g.k / 16;
    st.kb_n = g.k / 32;
    const int w = tw_warp();
    st.kb0 = w * st.kb_n / TW_WARPS;
    st.nkb = (w + 1) * st.kb_n / TW_WARPS - st.kb0;
    st.items = st.nkb * ((st.row_tiles + st.per_pass - 1) / st.per_pass);
    // Tiles are computed in pairs: an odd pass's last pair has a phantom tile that reads
    // (stale) codes of the slot's even tile count and is never stored.
    const int nt = st.gated ? 2 * min(st.per_pass, st.row_tiles) : min(st.per_pass, st.row_tiles);
    st.slot_bytes = TW_MMA_SLOT_BYTES((nt + 1) & ~1);
    st.scale_at = ((nt + 1) & ~1) * TW_MMA_TILE_BYTES;
    // The ring: the stage above the input rows, split between the warps.
    const int per_warp = ((TW_STAGE_FLOATS - x_floats) * 4 / TW_WARPS) & ~15;
    st.depth = max(1, min(TW_MMA_MAX_DEPTH, per_warp / st.slot_bytes));
    st.ring = reinterpret_cast<unsigned char*>(c.s_stage + x_floats) + w * per_warp;
    st.rewind();
    return st;
}

// Issue this lane's copies of the next item (none past the last) and commit a group:
// every call commits one, so wait_group counts stay uniform.
__device__ __forceinline__ void tw_mma_issue(const TwGemv& g, TwMmaStream& st) {
    if (st.loaded < st.items) {
        const int p = st.ld_p, kb = st.kb0 + st.ld_kb;
        const int np = st.pass_tiles(p), ntile = st.gated ? 2 * np : np;
        unsigned char* dst = st.slot(st.ld_slot);
        for (int q = tw_lane(); q < ntile * 17; q += 32) {
            const int i = q < ntile * 16 ? q >> 4 : q - ntile * 16;   // tile
            const bool up = i >= np;
            const int rt = st.rt0 + p * st.per_pass + (up ? i - np : i);
            if (q < ntile * 16) {
                const unsigned char* tile = static_cast<const unsigned char*>(up ? g.w2 : g.w) +
                                            ((long long)rt * st.kt_n + 2 * kb) * 128;
                tw_cp_async16(dst + i * TW_MMA_TILE_BYTES + (q & 15) * 16, tile + (q & 15) * 16);
            } else {
                const unsigned char* srow = (up ? g.w2_scales : g.w_scales) + ((long long)rt * st.kb_n + kb) * 16;
                tw_cp_async16(dst + st.scale_at + i * 16, srow);
            }
        }
    }
    ++st.loaded;
    if (++st.ld_kb == st.nkb) {
        st.ld_kb = 0;
        ++st.ld_p;
    }
    st.ld_slot = st.ld_slot + 1 == st.depth ? 0 : st.ld_slot + 1;
    tw_cp_async_commit();
}

// Until all but this lane's newest n groups have landed (n < TW_MMA_MAX_DEPTH).
__device__ __forceinline__ void tw_cp_async_wait_n(int n) {
    switch (n) {
        case 0: tw_cp_async_wait<0>(); break;
        case 1: tw_cp_async_wait<1>(); break;
        case 2: tw_cp_async_wait<2>(); break;
        case 3: tw_cp_async_wait<3>(); break;
        case 4: tw_cp_async_wait<4>(); break;
        case 5: tw_cp_async_wait<5>(); break;
        case 6: tw_cp_async_wait<6>(); break;
        default: tw_cp_async_wait<7>(); break;
    }
}

// Fill the ring: called before the input rows are staged, which the ring does not overlap.
__device__ __forceinline__ void tw_mma_prime(const TwGemv& g, TwMmaStream& st) {
    for (int s = 0; s < st.depth; ++s) tw_mma_issue(g, st);
}

// (a, b) as fp16 hi and lo halves: a = hi.x + lo.x to ~22 bits.
__device__ __forceinline__ void tw_split_half2(float a, float b, unsigned int& hi, unsigned int& lo) {
    const __half2 h = __floats2half2_rn(a, b);
    const float2 back = __half22float2(h);
    const __half2 l = __floats2half2_rn(a - back.x, b - back.y);
    hi = *reinterpret_cast<const unsigned int*>(&h);
    lo = *reinterpret_cast<const unsigned int*>(&l);
}

// Tiles i and i + 1 of one 32-k block: eight mmas in four independent chains of two (k16
// step s, hi or lo half of x), the block's sum scaled by the rows' E8M0 scales into the
// warp's accumulators in shared memory (acc[tile][lane], one float4 per lane: private,
// so no barrier). Why shared accumulators: they let the tile loop stay rolled, one small
// body for any tile count, where register accumulators need a compile-time tile index
// (the unrolled loop with a `break` per tile serialised every tile's mma chain: 12 of
// the 17 us of an EXPERT_UP task's body, measured with the math switched off).
__device__ __forceinline__ void tw_mma_tile_pair(const unsigned int* words, const unsigned char* scales, int i,
                                                 const unsigned int (&bh)[2][2], const unsigned int (&bl)[2][2],
                                                 float4* acc) {
    const int lane = tw_lane(), gq = lane >> 2;
    float c[2][4][4];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
        for (int s = 0; s < 2; ++s) {
            const unsigned int wd = words[(i + t) * 64 + s * 32 + lane];
            const unsigned int a0 = tw_e2m1x2_half2<0>(wd), a1 = tw_e2m1x2_half2<1>(wd);
            const unsigned int a2 = tw_e2m1x2_half2<2>(wd), a3 = tw_e2m1x2_half2<3>(wd);
#pragma unroll
            for (int e = 0; e < 4; ++e) c[t][2 * s][e] = c[t][2 * s + 1][e] = 0.f;
            tw_mma16816(c[t][2 * s], a0, a1, a2, a3, bh[s][0], bh[s][1]);
            tw_mma16816(c[t][2 * s + 1], a0, a1, a2, a3, bl[s][0], bl[s][1]);
        }
    }
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        // c0, c1: row gq; c2, c3: row gq + 8 (tokens 2tq, 2tq + 1).
        const float lo = tw_e8m0(scales[(i + t) * 16 + gq]) * TW_MMA_UNSCALE;
        const float hi = tw_e8m0(scales[(i + t) * 16 + gq + 8]) * TW_MMA_UNSCALE;
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) v[e] = (c[t][0][e] + c[t][1][e]) + (c[t][2][e] + c[t][3][e]);
        float4 a = acc[(i + t) * 32];
        a.x += v[0] * lo;
        a.y += v[1] * lo;
        a.z += v[2] * hi;
        a.w += v[3] * hi;
        acc[(i + t) * 32] = a;
    }
}

// Rows n0:n1 (multiples of 16) of W (and of W2 when gated), MXFP4 in the fragment layout,
// for the tokens of column tile ct (tokens 8ct .. 8ct + 7), consuming the warp's stream
// from item 0 (primed). Epilogue as TwGemv's: gated silu(gate) * up, scatter by s_tok.
__device__ void tw_gemv_mxfp4_mma_cols(const TwCtx& c, const TwGemv& g, const TwRows& x, int ct, TwMmaStream& st) {
    const int lane = tw_lane(), w = tw_warp(), gq = lane >> 2, tq = lane & 3;
    float4* red = reinterpret_cast<float4*>(c.s_scratch);   // [TW_WARPS][TW_MMA_TILES][32 lanes]
    float4* acc = red + w * TW_MMA_TILES * 32 + lane;
    for (int p = 0; p * st.per_pass < st.row_tiles; ++p) {
        const int np = st.pass_tiles(p), ntile = st.gated ? 2 * np : np;
        for (int i = 0; i < TW_MMA_TILES; ++i) acc[i * 32] = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int kb = st.kb0; kb < st.kb0 + st.nkb; ++kb) {
            tw_cp_async_wait_n(st.depth - 1);   // this lane's copies of the item have landed,
            __syncwarp();                       // and so have the other lanes'
            const unsigned int* words = reinterpret_cast<const unsigned int*>(st.slot(st.cur));
            const unsigned char* scales = st.slot(st.cur) + st.scale_at;
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
#pragma unroll 1   // two pairs per trip measured 2% slower (more code, no more overlap)
            for (int i = 0; i < ntile; i += 2) tw_mma_tile_pair(words, scales, i, bh, bl, acc);
            __syncwarp();          // every lane has read the slot: refill it, depth items ahead
            st.next_consumed();
            tw_mma_issue(g, st);
        }
        tw_sync();
        // Epilogue: element (tile i, lane l, e) of the gate (or plain) tiles, summed over the
        // warps in order; gated outputs combine tile i with its up tile i + np.
        const float* redf = c.s_scratch;
        const int n0 = g.n0 + 16 * p * st.per_pass;
        for (int idx = threadIdx.x; idx < np * 128; idx += TW_THREADS) {
            const int i = idx >> 7, l = (idx >> 2) & 31, e = idx & 3;
            const int tok = 8 * ct + 2 * (l & 3) + (e & 1), row = n0 + 16 * i + (l >> 2) + (e >= 2 ? 8 : 0);
            if (tok >= x.n) continue;
            float v = 0.f, u = 0.f;
            for (int ww = 0; ww < TW_WARPS; ++ww) {
                v += redf[((ww * TW_MMA_TILES + i) * 32 + l) * 4 + e];
                if (st.gated) u += redf[((ww * TW_MMA_TILES + i + np) * 32 + l) * 4 + e];
            }
            float* o = g.out + (long long)(g.scatter ? c.s_tok[tok] : tok) * g.out_ld;
            if (st.gated) {
                o[row] = tw_silu(v) * u;
            } else {
                if (g.resid) v += tw_ld(g.resid + (long long)tok * g.resid_ld + row);
                o[row] = v;
            }
        }
        tw_sync();   // the scratch is reused by the next pass
    }
}

// All compute threads, the stream primed (tw_mma_prime) and the input rows staged (times
// TW_MMA_X_SCALE). Column tiles after the first re-stream the weights (T > 8: L2 hits).
__device__ __forceinline__ void tw_gemv_mxfp4_mma(const TwCtx& c, const TwGemv& g, const TwRows& x, TwMmaStream& st) {
    for (int ct = 0; 8 * ct < x.n; ++ct) {
        if (ct > 0) {
            st.rewind();
            tw_mma_prime(g, st);
        }
        tw_gemv_mxfp4_mma_cols(c, g, x, ct, st);
    }
    tw_cp_async_wait<0>();   // only empty groups remain; nothing in flight before the stage is reused
}

// Prefetch rows n0..n1 of one expert's MXFP4 weight: its codes, then its scales.
__device__ __forceinline__ void tw_prefetch_rows_mxfp4(TwPrefetch& pf, const unsigned char* codes,
                                                      const unsigned char* scales, int k, int n0, int n1) {
    pf.range(codes + (long long)n0 * (k / 2), (unsigned long long)(n1 - n0) * (k / 2));
    pf.range(scales + (long long)n0 * (k / 32), (unsigned long long)(n1 - n0) * (k / 32));
}
