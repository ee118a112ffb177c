// ATTN_MERGE: combine a kv head's chunk partials into attention output rows. The sink
// logit (if any) joins the max and the denominator only: it carries no value.
#pragma once
#include "core/context.cuh"

__device__ void tw_op_attn_merge(const TwCtx& c, const int* a) {
    const TwLayer L = c.layers[a[TW_ATTN_MERGE_LAYER]];
    const int t = a[TW_ATTN_MERGE_T], h = a[TW_ATTN_MERGE_KVH], nc = a[TW_ATTN_MERGE_N_CHUNKS];
    const int vd = L.v_dim, grp = L.heads / L.kv_heads, rows = t * grp, ow = 2 + vd;
    const float* part = c.arena + a[TW_ATTN_MERGE_PART_OFF];
    const __nv_bfloat16* sink = c.vec_or_null(a[TW_ATTN_MERGE_W_SINK]);
    const int w = tw_warp(), lane = tw_lane();
    // Chunk weights exp(m - max) per warp in the scratch (a warp per row; chunks across
    // lanes): every chunk's (m, l) is read once and in parallel, where the serial loops
    // this replaces paid one L2 round trip per chunk, per output element (20 us for the
    // 32 chunks of a 4K-context global layer).
    float* wts = c.s_scratch + w * (TW_SCRATCH_FLOATS / TW_WARPS);
    if (nc > TW_SCRATCH_FLOATS / TW_WARPS) {   // ~1700 chunks: past any planned context
        if (threadIdx.x == 0)
            c.fail(TW_STATUS_BAD_DESCRIPTOR, TW_OP_ATTN_MERGE, (unsigned long long)nc, 0);
        return;
    }
    for (int r = w; r < rows; r += TW_WARPS) {
        float big = -INFINITY;
        for (int ch = lane; ch < nc; ch += 32) big = fmaxf(big, tw_ld(part + (ch * rows + r) * ow));
        const float sk = sink ? tw_bf16(sink[h * grp + r % grp]) : -INFINITY;
        big = fmaxf(tw_warp_max(big), sk);
        float denom = 0.f;
        for (int ch = lane; ch < nc; ch += 32) {
            const float* pr = part + (ch * rows + r) * ow;
            const float m = tw_ld(pr);
            const float e = m != -INFINITY ? expf(m - big) : 0.f;
            wts[ch] = e;
            denom += tw_ld(pr + 1) * e;
        }
        denom = tw_warp_sum(denom) + (sink ? expf(sk - big) : 0.f);
        __syncwarp();
        const int tq = r / grp, hq = r % grp;
        float* orow = c.arena + a[TW_ATTN_MERGE_OUT_OFF] + tq * a[TW_ATTN_MERGE_OUT_LD] + (h * grp + hq) * vd;
        for (int d = lane; d < vd; d += 32) {
            float acc = 0.f;
            for (int ch = 0; ch < nc; ++ch) acc += tw_ld(part + (ch * rows + r) * ow + 2 + d) * wts[ch];
            orow[d] = acc / denom;
        }
        __syncwarp();
    }
}
