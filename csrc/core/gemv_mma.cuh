// The tensor-core GEMV walk every weight format shares: mma.sync.m16n8k16 with the weights
// as the A operand (16 rows x 16 k) and the tokens as B (16 k x 8 tokens), fp32
// accumulation. A format F (ops/gemv_mxfp4.cuh: MXFP4 experts; ops/gemv_bf16.cuh: bf16
// weights at T >= 2) says where a tile's bytes are, how a lane gets its A fragment from
// shared memory, the mma's input type and how the input is split into it.
//
// Work split: K is cut across the compute warps (tasks have few 16-row tiles: 3 gated
// or 8 plain on mimo-mini's experts); each warp accumulates every tile of a pass over its
// K range into its own C fragments in shared memory (tw_mma_tile_pair), which the
// epilogue then sums over the warps in a fixed order.
//
// Streaming: each warp copies its 32-k blocks, all tiles of a pass together, through its
// own cp.async ring in the stage above the input rows. Why not loads into registers one
// block ahead (the MXFP4 core's first version): a block is 12-16 loads per lane, and a
// warp tracks outstanding register loads on six scoreboards, so the next block's loads
// shared scoreboards with the current one's and each block waited for the full memory
// latency. Commit groups keep up to TW_MMA_MAX_DEPTH blocks in flight, the first ones
// issued right behind the copies of the task's input rows (core/rows.cuh TW_ROWS_ASYNC) and
// before the wait for them. Measured on mimo-mini (docs/perf-notes.md v9): an EXPERT_UP task
// body went from 26 to 17 us; depths 2, 4 and 8 are within 2%.
#pragma once
#include <cuda_fp16.h>
#include "core/gemv_desc.cuh"
#include "core/cp_async.cuh"
#include "core/rows.cuh"
#include "core/prefetch.cuh"

#define TW_MMA_TILES 8                // accumulator tiles per warp in shared memory (the most a pass has)
// Up to this many tokens, the hi and lo halves of a token's input share one mma as two of
// its 8 columns (hi in column 2t, lo in 2t + 1): half the mmas, one accumulator chain per
// tile. 0 switches it off (the A/B baseline); at most 4 (8 columns).
#ifndef TW_MMA_PACK_T
#define TW_MMA_PACK_T 4
#endif
static_assert(TW_MMA_PACK_T >= 0 && TW_MMA_PACK_T <= 4, "a packed mma holds hi and lo columns of up to 4 tokens");
// Without TW_ROWS_ASYNC: issue the weight stream before staging the input rows (1) or after (0).
#ifndef TW_MMA_PRIME_FIRST
#define TW_MMA_PRIME_FIRST 1
#endif
#ifndef TW_MMA_MAX_DEPTH
#define TW_MMA_MAX_DEPTH 8
#endif
static_assert(TW_MMA_MAX_DEPTH >= 1 && TW_MMA_MAX_DEPTH <= 8, "tw_cp_async_wait_n covers up to 8 newer groups");
static_assert(TW_WARPS * TW_MMA_TILES * 32 * 4 <= TW_SCRATCH_FLOATS, "every warp's accumulator tiles fit the scratch");
// Floats of the stage kept for format F's ring when the input rows are staged: one slot
// per warp.
template <class F>
__device__ __forceinline__ constexpr int tw_mma_min_ring_floats() {
    return TW_WARPS * F::kPassTiles * (F::kTileBytes + F::kScaleBytes) / 4;
}

// 16-bit pairs of either mma input type, packed from and widened to fp32.
__device__ __forceinline__ void tw_pack2(float a, float b, __half2& h) { h = __floats2half2_rn(a, b); }
__device__ __forceinline__ void tw_pack2(float a, float b, __nv_bfloat162& h) { h = __floats2bfloat162_rn(a, b); }
__device__ __forceinline__ float2 tw_widen2(__half2 h) { return __half22float2(h); }
__device__ __forceinline__ float2 tw_widen2(__nv_bfloat162 h) { return __bfloat1622float2(h); }

// (a, b) as hi and lo pairs of type H2 (__half2: ~22 bits of a and b; __nv_bfloat162:
// ~16 bits), a = hi.x + lo.x: the x of a tensor-core GEMV fed to two mmas.
template <class H2>
__device__ __forceinline__ void tw_split2(float a, float b, unsigned int& hi, unsigned int& lo) {
    H2 h, l;
    tw_pack2(a, b, h);
    const float2 back = tw_widen2(h);
    tw_pack2(a - back.x, b - back.y, l);
    hi = *reinterpret_cast<const unsigned int*>(&h);
    lo = *reinterpret_cast<const unsigned int*>(&l);
}

// d += a b, m16n8k16, fp32 accumulation; TYPE is the inputs' PTX type (f16 or bf16).
#define TW_MMA16816(NAME, TYPE)                                                                            \
    __device__ __forceinline__ void NAME(float (&d)[4], const unsigned int (&a)[4], unsigned int b0,       \
                                         unsigned int b1) {                                                \
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE ".f32 {%0,%1,%2,%3}, "         \
                     "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"                                              \
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                      \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));                     \
    }
TW_MMA16816(tw_mma16816_f16, "f16")
TW_MMA16816(tw_mma16816_bf16, "bf16")
#undef TW_MMA16816

// The warp's weight stream. An item is one 32-k block of one pass: its tiles' code blocks
// (F::kTileBytes each), then their F::kScaleBytes scale rows. The warp's items run pass by
// pass over its K range [kb0, kb0 + nkb).
struct TwMmaStream {
    unsigned char* ring;       // this warp's slots
    int slot_bytes, depth;
    int scale_at;              // byte offset of the scale rows in a slot
    int row_tiles, rt0, per_pass, kb0, nkb, items;
    bool gated;
    // Cursors, counted up (no division on the item path: an integer division per item
    // cost ~100 us per token, perf-notes v9): the next item to issue (pass, block, slot)
    // and the slot of the next item to consume.
    int loaded, ld_p, ld_kb, ld_slot, cur;

    __device__ __forceinline__ int pass_tiles(int p) const { return min(per_pass, row_tiles - p * per_pass); }
    __device__ __forceinline__ unsigned char* slot(int s) const { return ring + s * slot_bytes; }
    __device__ __forceinline__ void rewind() { loaded = ld_p = ld_kb = ld_slot = cur = 0; }
    __device__ __forceinline__ void next_consumed() { cur = cur + 1 == depth ? 0 : cur + 1; }
};

// Geometry and ring of the task's GEMV for an input of x_floats staged floats.
template <class F>
__device__ __forceinline__ TwMmaStream tw_mma_stream(const TwCtx& c, const TwGemv& g, int x_floats) {
    TwMmaStream st;
    st.gated = g.w2 != nullptr;
    st.row_tiles = (g.n1 - g.n0) / 16;
    st.rt0 = g.n0 / 16;
    // A pass covers up to F::kPassTiles accumulator tiles: gated, half gate and half up
    // tiles of the same rows, so the epilogue finds both.
    static_assert(F::kPassTiles <= TW_MMA_TILES && F::kPassTiles % 2 == 0, "a pass's tiles fit the accumulators");
    st.per_pass = st.gated ? F::kPassTiles / 2 : F::kPassTiles;
    const int kb_n = g.k / 32, w = tw_warp();
    st.kb0 = w * kb_n / TW_WARPS;
    st.nkb = (w + 1) * kb_n / TW_WARPS - st.kb0;
    st.items = st.nkb * ((st.row_tiles + st.per_pass - 1) / st.per_pass);
    // Tiles are computed in pairs: an odd pass's last pair has a phantom tile that reads
    // (stale) bytes of the slot's even tile count and is never stored.
    const int nt = (st.gated ? 2 * min(st.per_pass, st.row_tiles) : min(st.per_pass, st.row_tiles)) + 1 & ~1;
    st.slot_bytes = nt * (F::kTileBytes + F::kScaleBytes);
    st.scale_at = nt * F::kTileBytes;
    // The ring: the stage above the input rows, split between the warps.
    const int per_warp = ((TW_STAGE_FLOATS - x_floats) * 4 / TW_WARPS) & ~15;
    st.depth = max(1, min(TW_MMA_MAX_DEPTH, per_warp / st.slot_bytes));
    st.ring = reinterpret_cast<unsigned char*>(c.s_stage + x_floats) + w * per_warp;
    st.rewind();
    return st;
}

// After issuing an item of the stream: the cursors on to the next (block kb, then the next
// pass), and one commit group, empty or not, so wait_group counts stay uniform.
__device__ __forceinline__ void tw_stream_advance(TwMmaStream& st) {
    ++st.loaded;
    if (++st.ld_kb == st.nkb) {
        st.ld_kb = 0;
        ++st.ld_p;
    }
    st.ld_slot = st.ld_slot + 1 == st.depth ? 0 : st.ld_slot + 1;
    tw_cp_async_commit();
}

// Issue this lane's copies of the next item (none past the last) and commit a group:
// every call commits one, so wait_group counts stay uniform.
// TW_MMA_ISSUE_BLOCK=1: a format's own copy loop for one block (F::issue_block), its
// addresses from 32-bit offsets and with no division per chunk. 0: the generic loop below
// (the A/B baseline; its SASS spent ~40 instructions per 16-byte copy).
#ifndef TW_MMA_ISSUE_BLOCK
#define TW_MMA_ISSUE_BLOCK 1
#endif
template <class F>
__device__ __forceinline__ void tw_mma_issue(const TwGemv& g, TwMmaStream& st) {
    if (TW_MMA_ISSUE_BLOCK && st.loaded < st.items) {
        const int np = st.pass_tiles(st.ld_p);
        unsigned char* dst = st.slot(st.ld_slot);
        F::issue_block(g, np, st.gated ? 2 * np : np, st.rt0 + st.ld_p * st.per_pass, st.kb0 + st.ld_kb, dst,
                       dst + st.scale_at);
    } else if (st.loaded < st.items) {
        constexpr int cpt = F::kTileBytes / 16;   // 16-byte chunks per tile
        const int p = st.ld_p, kb = st.kb0 + st.ld_kb;
        const int np = st.pass_tiles(p), ntile = st.gated ? 2 * np : np;
        const int n_chunks = ntile * (cpt + (F::kScaleBytes ? 1 : 0));
        unsigned char* dst = st.slot(st.ld_slot);
        for (int q = tw_lane(); q < n_chunks; q += 32) {
            const bool code = q < ntile * cpt;
            const int i = code ? q / cpt : q - ntile * cpt;   // tile (cpt: a power of two)
            const bool up = i >= np;
            const int rt = st.rt0 + p * st.per_pass + (up ? i - np : i);
            if (code)
                tw_cp_async16(dst + i * F::kTileBytes + F::chunk_dst(q % cpt),
                              F::tile_block(g, up, rt, kb) + F::chunk_src(q % cpt, g.k));
            else
                tw_cp_async16(dst + st.scale_at + i * F::kScaleBytes, F::scale_row(g, up, rt, kb));
        }
    }
    tw_stream_advance(st);
}

// Fill the ring: called before the input rows are staged, which the ring does not overlap.
template <class F>
__device__ __forceinline__ void tw_mma_prime(const TwGemv& g, TwMmaStream& st) {
    for (int s = 0; s < st.depth; ++s) tw_mma_issue<F>(g, st);
}

// Tiles i and i + 1 of one 32-k block: eight mmas in four independent chains of two (k16
// step s, hi or lo half of x), the block's sum scaled by the format's per-row factors
// into the warp's accumulators in shared memory (acc[tile][lane], one float4 per lane:
// private, so no barrier). Why shared accumulators: they let the tile loop stay rolled,
// one small body for any tile count, where register accumulators need a compile-time
// tile index (the unrolled loop with a `break` per tile serialised every tile's mma
// chain: 12 of the 17 us of an EXPERT_UP task's body, measured with the math switched off).
// A compile-time tile count with no `break` (each block's tiles in one straight body,
// step-major, four chains interleaved) did not beat this loop either: level at T = 1 and,
// in the final build, at T = 8 (docs/perf-notes.md v18).
template <class F>
__device__ __forceinline__ void tw_mma_tile_pair(const unsigned char* slot, int scale_at, int i,
                                                 const unsigned int (&bh)[2][2], const unsigned int (&bl)[2][2],
                                                 float4* acc) {
    const int gq = tw_lane() >> 2;
    float c[2][4][4];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
        for (int s = 0; s < 2; ++s) {
            unsigned int a[4];
            F::fragment(slot + (i + t) * F::kTileBytes, s, a);
#pragma unroll
            for (int e = 0; e < 4; ++e) c[t][2 * s][e] = c[t][2 * s + 1][e] = 0.f;
            F::mma(c[t][2 * s], a, bh[s][0], bh[s][1]);
            F::mma(c[t][2 * s + 1], a, bl[s][0], bl[s][1]);
        }
    }
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        // c0, c1: row gq; c2, c3: row gq + 8 (tokens 2tq, 2tq + 1).
        const float2 f = F::row_factors(slot + scale_at + (i + t) * F::kScaleBytes, gq);
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; ++e)
            v[e] = (c[t][0][e] + c[t][1][e]) + (c[t][2][e] + c[t][3][e]);
        float4 a = acc[(i + t) * 32];
        a.x += v[0] * f.x;
        a.y += v[1] * f.x;
        a.z += v[2] * f.y;
        a.w += v[3] * f.y;
        acc[(i + t) * 32] = a;
    }
}

// Tiles i and i + 1 of one 32-k block with packed columns (TW_MMA_PACK_T): b holds token
// t's hi half in column 2t and its lo half in 2t + 1, so one chain of two mmas (k16 steps
// 0, 1) per tile gives c0 + c1 = row gq and c2 + c3 = row gq + 8, both for token tq.
// Stored in the accumulator's x (row gq) and z (row gq + 8); y and w stay zero.
template <class F>
__device__ __forceinline__ void tw_mma_tile_pair_packed(const unsigned char* slot, int scale_at, int i,
                                                        const unsigned int (&b)[2][2], float4* acc) {
    const int gq = tw_lane() >> 2;
    float c[2][4];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
        for (int e = 0; e < 4; ++e) c[t][e] = 0.f;
#pragma unroll
        for (int s = 0; s < 2; ++s) {
            unsigned int a[4];
            F::fragment(slot + (i + t) * F::kTileBytes, s, a);
            F::mma(c[t], a, b[s][0], b[s][1]);
        }
    }
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        const float2 f = F::row_factors(slot + scale_at + (i + t) * F::kScaleBytes, gq);
        float4 a = acc[(i + t) * 32];
        a.x += (c[t][0] + c[t][1]) * f.x;
        a.z += (c[t][2] + c[t][3]) * f.y;
        acc[(i + t) * 32] = a;
    }
}

// B fragments of block kb's two k16 steps for column tile ct (lane gq, tq: token 8ct + gq,
// k 2tq, 2tq+1, +8, +9), hi and lo halves: once per block, shared by every tile of it. Packed:
// column gq is token gq / 2's hi (even gq) or lo (odd gq) half.
template <class F, bool Packed>
__device__ __forceinline__ void tw_mma_b_fragments(const TwRows& x, int ct, int kb, int gq, int tq,
                                                   unsigned int (&bh)[2][2], unsigned int (&bl)[2][2]) {
    const int tok = Packed ? gq >> 1 : 8 * ct + gq;
    const bool on = tok < x.n;
#pragma unroll
    for (int s = 0; s < 2; ++s) {
        const int k0 = 32 * kb + 16 * s + 2 * tq;
        F::split(on ? x.at(tok, k0) : 0.f, on ? x.at(tok, k0 + 1) : 0.f, bh[s][0], bl[s][0]);
        F::split(on ? x.at(tok, k0 + 8) : 0.f, on ? x.at(tok, k0 + 9) : 0.f, bh[s][1], bl[s][1]);
        if (Packed && (gq & 1)) {
            bh[s][0] = bl[s][0];
            bh[s][1] = bl[s][1];
        }
    }
}

// Rows n0:n1 (multiples of 16) of W (and of W2 when gated) for the tokens of column tile
// ct (tokens 8ct .. 8ct + 7), consuming the warp's stream from item 0 (primed). Epilogue
// as TwGemv's: gated silu(gate) * up, scatter by s_tok, residual. Packed: the task's
// x.n <= TW_MMA_PACK_T tokens in hi / lo column pairs of tile 0 (tw_mma_tile_pair_packed).
template <class F, bool Packed>
__device__ void tw_gemv_mma_cols(const TwCtx& c, const TwGemv& g, const TwRows& x, int ct, TwMmaStream& st) {
    const int lane = tw_lane(), w = tw_warp(), gq = lane >> 2, tq = lane & 3;
    float4* red = reinterpret_cast<float4*>(c.s_scratch);   // [TW_WARPS][TW_MMA_TILES][32 lanes]
    float4* acc = red + w * TW_MMA_TILES * 32 + lane;
    for (int p = 0; p * st.per_pass < st.row_tiles; ++p) {
        const int np = st.pass_tiles(p), ntile = st.gated ? 2 * np : np;
        for (int i = 0; i < TW_MMA_TILES; ++i) acc[i * 32] = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int kb = st.kb0; kb < st.kb0 + st.nkb; ++kb) {
            tw_cp_async_wait_n(st.depth - 1);   // this lane's copies of the item have landed,
            __syncwarp();                       // and so have the other lanes'
            if (p == 0 && kb == st.kb0) c.mark_phase(10);
            const unsigned char* slot = st.slot(st.cur);
            unsigned int bh[2][2], bl[2][2];
            tw_mma_b_fragments<F, Packed>(x, ct, kb, gq, tq, bh, bl);
            if (Packed) {
#pragma unroll 1
                for (int i = 0; i < ntile; i += 2) tw_mma_tile_pair_packed<F>(slot, st.scale_at, i, bh, acc);
            } else {
#pragma unroll 1   // two pairs per trip measured 2% slower (more code, no more overlap)
                for (int i = 0; i < ntile; i += 2) tw_mma_tile_pair<F>(slot, st.scale_at, i, bh, bl, acc);
            }
            __syncwarp();          // every lane has read the slot: refill it, depth items ahead
            st.next_consumed();
            tw_mma_issue<F>(g, st);
        }
        c.mark_phase(11);
        tw_sync();
        c.mark_phase(12);
        // Epilogue: element (tile i, lane l, e) of the gate (or plain) tiles, summed over the
        // warps in order; gated outputs combine tile i with its up tile i + np.
        const float* redf = c.s_scratch;
        const int n0 = g.n0 + 16 * p * st.per_pass;
        // Packed: only (tile, token, row) items exist (x.n <= 4 tokens in lanes tq < x.n,
        // rows in x and z), so a thread takes one of those instead of 4 x 4 slots of a lane.
        const int items = Packed ? np * x.n * 16 : np * 128;
        for (int idx = threadIdx.x; idx < items; idx += TW_THREADS) {
            int i, l, e, tok;
            if (Packed) {
                const int r16 = idx & 15, q = idx >> 4;
                tok = q % x.n;
                i = q / x.n;
                l = 4 * (r16 & 7) + tok;
                e = r16 & 8 ? 2 : 0;
            } else {
                i = idx >> 7;
                l = (idx >> 2) & 31;
                e = idx & 3;
                tok = 8 * ct + 2 * (l & 3) + (e & 1);
                if (tok >= x.n) continue;
            }
            const int row = n0 + 16 * i + (l >> 2) + (e >= 2 ? 8 : 0);
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

// All compute threads: prime the stream, stage the input rows (times F::kXScale) below
// it, then run every column tile. Column tiles after the first re-stream the weights
// (T > 8: L2 hits).
template <class F>
__device__ void tw_gemv_mma(const TwCtx& c, const TwGemv& g, float* wn_smem) {
    const int x_max = TW_STAGE_FLOATS - tw_mma_min_ring_floats<F>();
    const int x_floats = g.n * g.k <= x_max ? g.n * g.k : 0;
    TwMmaStream st = tw_mma_stream<F>(c, g, x_floats);
    TwRows x;
    if (TW_ROWS_ASYNC) {
        // The rows' copies head the queue, the weights follow, then the wait for the rows.
        __nv_bfloat16* wn_raw = reinterpret_cast<__nv_bfloat16*>(wn_smem);
        tw_rows_issue(g.x, g.x_ld, c.s_tok, g.n, g.k, g.norm, c.s_stage, x_max, wn_raw);
        tw_mma_prime<F>(g, st);
        c.mark_phase(9);
        TW_ROWS_LANDED_MARK(c, st.depth);
        x = tw_rows_finish(g.x, g.x_ld, c.s_tok, g.n, g.k, g.norm, c.p->rms_eps, c.s_inv, c.s_stage, x_max, wn_raw,
                           F::kXScale, st.depth);
    } else {
        if (TW_MMA_PRIME_FIRST) tw_mma_prime<F>(g, st);   // the weights need none of the rows
        c.mark_phase(9);
        x = tw_load_rows(g.x, g.x_ld, c.s_tok, g.n, g.k, g.norm, c.p->rms_eps, c.s_inv, c.s_stage, x_max,
                         wn_smem, F::kXScale);
        if (!TW_MMA_PRIME_FIRST) tw_mma_prime<F>(g, st);
    }
    for (int pass = TW_EXP_TWICE ? 0 : 1; pass < 2; ++pass) {   // TW_EXP_TWICE: core/gemv_desc.cuh
        if (pass == 1) c.mark_phase(0);
        for (int ct = 0; 8 * ct < x.n; ++ct) {
            if (ct > 0 || pass == 1 && TW_EXP_TWICE) {
                st.rewind();
                tw_mma_prime<F>(g, st);
            }
            if (TW_MAX_T <= TW_MMA_PACK_T || x.n <= TW_MMA_PACK_T)   // a decode build has the packed walk only
                tw_gemv_mma_cols<F, true>(c, g, x, ct, st);
            else
                tw_gemv_mma_cols<F, false>(c, g, x, ct, st);
        }
    }
    tw_cp_async_wait<0>();   // only empty groups remain; nothing in flight before the stage is reused
}
