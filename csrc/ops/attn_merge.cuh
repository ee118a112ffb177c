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
    for (int r = w; r < rows; r += TW_WARPS) {
        float big = -INFINITY;
        for (int ch = 0; ch < nc; ++ch) big = fmaxf(big, tw_ld(part + (ch * rows + r) * ow));
        const float sk = sink ? tw_bf16(sink[h * grp + r % grp]) : -INFINITY;
        big = fmaxf(big, sk);
        float denom = sink ? expf(sk - big) : 0.f;
        for (int ch = 0; ch < nc; ++ch) {
            const float* pr = part + (ch * rows + r) * ow;
            const float m = tw_ld(pr);
            if (m != -INFINITY) denom += tw_ld(pr + 1) * expf(m - big);
        }
        const int tq = r / grp, hq = r % grp;
        float* orow = c.arena + a[TW_ATTN_MERGE_OUT_OFF] + tq * a[TW_ATTN_MERGE_OUT_LD] + (h * grp + hq) * vd;
        for (int d = lane; d < vd; d += 32) {
            float acc = 0.f;
            for (int ch = 0; ch < nc; ++ch) {
                const float* pr = part + (ch * rows + r) * ow;
                const float m = tw_ld(pr);
                if (m != -INFINITY) acc += tw_ld(pr + 2 + d) * expf(m - big);
            }
            orow[d] = acc / denom;
        }
    }
}
