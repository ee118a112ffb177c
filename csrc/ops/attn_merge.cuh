// ATTN_MERGE: combine a kv head's chunk partials into attention output rows. The sink
// logit (if any) joins the max and the denominator only: it carries no value.
//
// A warp per row and no CTA barrier: the lanes read every chunk's (max, sum) and, in the
// same round trip to L2, the values of the first TW_MERGE_CHUNKS chunks (lane l: v dims
// l, l + 32, ...), then weigh them; later chunks follow TW_MERGE_CHUNKS at a time. The
// (max, sum) pairs wait in shared memory (the stage: this op stages nothing) until the
// row's max is known. Each
// round trip costs ~1 us while the step's weights stream (perf-notes v11): the first
// version read a row's values one chunk after another (5.4 us for a sliding-window
// layer's 4 chunks at T = 1), the second in two barrier-separated passes (6.1 us).
#pragma once
#include "core/context.cuh"

#define TW_MERGE_CHUNKS 4   // chunks whose values one lane holds in registers at a time
#define TW_MERGE_DIMS 4     // v dims per lane: v_dim <= 128

// This lane's values of chunks ch0 .. ch0 + TW_MERGE_CHUNKS - 1 of one row (0 past the end).
__device__ __forceinline__ void tw_merge_values(const float* pr, long long cs, int ch0, int nc, int vd,
                                                float (&v)[TW_MERGE_CHUNKS][TW_MERGE_DIMS]) {
    const int lane = tw_lane();
#pragma unroll
    for (int u = 0; u < TW_MERGE_CHUNKS; ++u)
#pragma unroll
        for (int q = 0; q < TW_MERGE_DIMS; ++q) {
            const int d = lane + 32 * q;
            v[u][q] = ch0 + u < nc && d < vd ? tw_ld(pr + (ch0 + u) * cs + 2 + d) : 0.f;
        }
}

__device__ void tw_op_attn_merge(const TwCtx& c, const int* a) {
    const TwLayer L = c.layers[a[TW_ATTN_MERGE_LAYER]];
    const int t = a[TW_ATTN_MERGE_T], h = a[TW_ATTN_MERGE_KVH], nc = a[TW_ATTN_MERGE_N_CHUNKS];
    const int vd = L.v_dim, grp = L.heads / L.kv_heads, rows = t * grp, ow = 2 + vd;
    const long long cs = (long long)rows * ow;   // chunk stride of the partials
    const float* part = c.arena + a[TW_ATTN_MERGE_PART_OFF];
    const __nv_bfloat16* sink = c.vec_or_null(a[TW_ATTN_MERGE_W_SINK]);
    float* out = c.arena + a[TW_ATTN_MERGE_OUT_OFF];
    const int out_ld = a[TW_ATTN_MERGE_OUT_LD];
    const int w = tw_warp(), lane = tw_lane();
    // Per warp, for its current row: each chunk's max, then its weight exp(m - max); its sum.
    float* wts = c.s_stage + w * (TW_STAGE_FLOATS / TW_WARPS);
    float* sums = wts + nc;
    if (2 * nc > TW_STAGE_FLOATS / TW_WARPS || vd > 32 * TW_MERGE_DIMS) {   // ~2000 chunks: past any planned context
        if (threadIdx.x == 0) c.fail(TW_STATUS_BAD_DESCRIPTOR, TW_OP_ATTN_MERGE, (unsigned long long)nc, vd);
        return;
    }
    for (int r = w; r < rows; r += TW_WARPS) {
        const float* pr = part + (long long)r * ow;
        float v[TW_MERGE_CHUNKS][TW_MERGE_DIMS];
        tw_merge_values(pr, cs, 0, nc, vd, v);   // issued before the (max, sum) reads: one round trip for both
        float big = -INFINITY;
        for (int ch = lane; ch < nc; ch += 32) {
            const float m = tw_ld(pr + ch * cs);
            sums[ch] = tw_ld(pr + ch * cs + 1);
            wts[ch] = m;
            big = fmaxf(big, m);
        }
        const int hq = r % grp;
        const float sk = sink ? tw_bf16(sink[h * grp + hq]) : -INFINITY;
        big = fmaxf(tw_warp_max(big), sk);
        float denom = 0.f;
        for (int ch = lane; ch < nc; ch += 32) {
            const float m = wts[ch];
            const float e = m != -INFINITY ? expf(m - big) : 0.f;
            wts[ch] = e;
            denom += sums[ch] * e;
        }
        denom = tw_warp_sum(denom) + (sink ? expf(sk - big) : 0.f);
        __syncwarp();   // every chunk's weight is in shared memory
        float acc[TW_MERGE_DIMS] = {};
        for (int ch0 = 0; ch0 < nc; ch0 += TW_MERGE_CHUNKS) {
            if (ch0 > 0) tw_merge_values(pr, cs, ch0, nc, vd, v);
#pragma unroll
            for (int u = 0; u < TW_MERGE_CHUNKS; ++u) {
                const float wu = ch0 + u < nc ? wts[ch0 + u] : 0.f;
#pragma unroll
                for (int q = 0; q < TW_MERGE_DIMS; ++q) acc[q] += v[u][q] * wu;
            }
        }
        const int tq = r / grp;
        float* orow = out + (long long)tq * out_ld + (h * grp + hq) * vd;
#pragma unroll
        for (int q = 0; q < TW_MERGE_DIMS; ++q)
            if (lane + 32 * q < vd) orow[lane + 32 * q] = acc[q] / denom;
        __syncwarp();   // the weights are reused by the warp's next row
    }
}
