// The bf16 GEMV core: acc[i][r] = sum_k x[r][k] * W_i[k] for two weight rows W_i (bf16)
// and up to 16 input rows, fp32 accumulation. A chunk is TW_GEMV_UNROLL 16-byte pieces per
// row per lane (8 weights each), copied into a shared-memory ring slot; core/gemv_walk.cuh
// keeps the ring's next chunks in flight while one is consumed.
#pragma once
#include "core/rows.cuh"
#include "core/prefetch.cuh"
#include "core/cp_async.cuh"
#include "core/gemv_mma.cuh"

// 16-byte loads per row per lane per chunk: one chunk fills one ring slot (2 KB).
#ifndef TW_GEMV_UNROLL
#define TW_GEMV_UNROLL 2
#endif

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

// The bf16 format of the tensor-core GEMV (core/gemv_mma.cuh), for steps of two or more
// tokens, where the CUDA-core walk above does T FMAs per weight (LINEAR at T = 8 took 4.6x
// its T = 1 time, docs/benchmarks.md). A tile's 32-k block is 16 rows x 64 bytes of the
// row-major weight (no repacking), copied in 16-byte chunks whose place in the row is
// XORed with (row >> 1) & 3: ldmatrix's eight row addresses per 8 x 8 matrix then fall
// in eight different bank groups. Numbers: bf16 x bf16 products are exact in fp32; the
// input is split into bf16 hi + lo halves (two mmas, ~16 bits of the fp32 input).
struct TwMmaBf16 {
    static constexpr int kTileBytes = 1024;   // 16 rows x 32 k x 2 bytes
    static constexpr int kScaleBytes = 0;
    static constexpr int kPassTiles = 4;      // 4 KB slots: a few in flight beside 8-16 staged rows
    static constexpr float kXScale = 1.f;

    static __device__ __forceinline__ const unsigned char* tile_block(const TwGemv& g, bool up, int rt, int kb) {
        return static_cast<const unsigned char*>(up ? g.w2 : g.w) + ((long long)rt * 16 * g.k + 32 * kb) * 2;
    }
    // Chunk q: row q / 4, 16-byte piece q % 4 of the row's 64 bytes.
    static __device__ __forceinline__ int chunk_src(int q, int k) { return (q >> 2) * k * 2 + (q & 3) * 16; }
    static __device__ __forceinline__ int chunk_dst(int q) { return (q >> 2) * 64 + (((q & 3) ^ ((q >> 3) & 3)) << 4); }
    static __device__ __forceinline__ const unsigned char* scale_row(const TwGemv&, bool, int, int) { return nullptr; }
    // The lane's copies of 32-k block kb of a pass's ntile tiles (as TwMmaFp4::issue_block):
    // 32 copies per 8 rows of a tile, row 8h + lane / 4 (h: the half tile), 16-byte piece
    // lane % 4 of the row's 64 bytes, placed as chunk_dst places it. Offsets in 32 bits.
    static __device__ __forceinline__ void issue_block(const TwGemv& g, int np, int ntile, int rt_p, int kb,
                                                       unsigned char* dst, unsigned char*) {
        const int lane = tw_lane(), piece = lane & 3;
        const unsigned row_bytes = (unsigned)g.k * 2u;
        const unsigned kofs = (unsigned)kb * 64u + (unsigned)piece * 16u;
#pragma unroll
        for (int h = 0; h < 2 * kPassTiles; ++h) {
            const int i = h >> 1, row = (lane >> 2) + 8 * (h & 1);
            if (i >= ntile) break;
            const bool up = i >= np;
            const unsigned rt = (unsigned)(rt_p + (up ? i - np : i));
            tw_cp_async16(dst + i * kTileBytes + row * 64 + ((piece ^ ((row >> 1) & 3)) << 4),
                          static_cast<const unsigned char*>(up ? g.w2 : g.w) + ((rt * 16u + row) * row_bytes + kofs));
        }
    }
    // ldmatrix.x4: lanes 0-7 / 8-15 / 16-23 / 24-31 address rows 0-7 / 8-15 / 0-7 / 8-15 at
    // k 0-7 / 0-7 / 8-15 / 8-15 of step s: matrices 0..3 are a0..a3 of the mma's A.
    static __device__ __forceinline__ void fragment(const unsigned char* tile, int s, unsigned int (&a)[4]) {
        const int l = tw_lane(), row = l & 15, chunk = 2 * s + (l >> 4);
        const unsigned int addr = tw_smem_addr(tile + row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                     : "r"(addr));
    }
    static __device__ __forceinline__ void mma(float (&d)[4], const unsigned int (&a)[4], unsigned int b0,
                                               unsigned int b1) {
        tw_mma16816_bf16(d, a, b0, b1);
    }
    static __device__ __forceinline__ void split(float a, float b, unsigned int& hi, unsigned int& lo) {
        tw_split2<__nv_bfloat162>(a, b, hi, lo);
    }
    static __device__ __forceinline__ float2 row_factors(const unsigned char*, int) { return make_float2(1.f, 1.f); }
};
