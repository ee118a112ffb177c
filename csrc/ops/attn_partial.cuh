// ATTN_PARTIAL: one kv head, one chunk of key positions. For each query row (token t,
// head j of the group; row = t * group + j): [max score, sum exp(s - max), sum exp * v].
// Global layers: chunk c covers positions [c * chunk_len, (c + 1) * chunk_len). SWA layers
// have one chunk: pos - window .. pos + T - 1. Keys past the current length are absent;
// a chunk with none writes (-inf, 0, 0).
#pragma once
#include "core/context.cuh"

__device__ void tw_op_attn_partial(const TwCtx& c, const int* a) {
    const TwLayer L = c.layers[a[TW_ATTN_PARTIAL_LAYER]];
    const int t = a[TW_ATTN_PARTIAL_T], h = a[TW_ATTN_PARTIAL_KVH];
    const int hd = L.head_dim, vd = L.v_dim, grp = L.heads / L.kv_heads;
    const int rows = t * grp;
    const int pos = c.pos(a[TW_ATTN_PARTIAL_STATE_OFF]);
    int lo, hi;
    if (L.window < 0) {
        lo = a[TW_ATTN_PARTIAL_CHUNK] * a[TW_ATTN_PARTIAL_CHUNK_LEN];
        hi = min(lo + a[TW_ATTN_PARTIAL_CHUNK_LEN], pos + t);
    } else {
        lo = max(0, pos - L.window);
        hi = pos + t;
    }
    float* out = c.arena + a[TW_ATTN_PARTIAL_PART_OFF];
    const int ow = 2 + vd;
    if (lo >= hi) {
        for (int i = threadIdx.x; i < rows * ow; i += TW_THREADS) out[i] = (i % ow) == 0 ? -INFINITY : 0.f;
        return;
    }
    const int n = hi - lo;
    const __nv_bfloat16* kc = reinterpret_cast<const __nv_bfloat16*>(L.k) + (long long)h * L.slots * hd;
    const __nv_bfloat16* vc = reinterpret_cast<const __nv_bfloat16*>(L.v) + (long long)h * L.slots * vd;
    const float* q = c.arena + a[TW_ATTN_PARTIAL_Q_OFF] + h * grp * hd;
    const int q_ld = a[TW_ATTN_PARTIAL_Q_LD];
    const float scale = rsqrtf((float)hd);
    const int w = tw_warp(), lane = tw_lane();
    // Rows in batches whose scores fit the scratch space.
    const int batch = max(1, min(rows, TW_SCRATCH_FLOATS / n));
    float* s = c.s_scratch;
    for (int r0 = 0; r0 < rows; r0 += batch) {
        const int nr = min(batch, rows - r0);
        // Scores: a warp per key; lanes split the head dim.
        for (int j = w; j < n; j += TW_WARPS) {
            const int kp = lo + j;
            const __nv_bfloat16* krow = kc + (long long)(kp % L.slots) * hd;
            for (int r = 0; r < nr; ++r) {
                const int row = r0 + r, tq = row / grp, hq = row % grp;
                const float* qrow = q + tq * q_ld + hq * hd;
                float acc = 0.f;
                for (int d = lane; d < hd; d += 32) acc += tw_ld(qrow + d) * tw_bf16(krow[d]);
                acc = tw_warp_sum(acc);
                const int qp = pos + tq;
                const bool vis = kp <= qp && (L.window < 0 || kp >= qp - L.window);
                if (lane == 0) s[r * n + j] = vis ? acc * scale : -INFINITY;
            }
        }
        __syncthreads();
        // Per row: max, exp, sum; then the weighted sum of values (lanes over v dims).
        for (int r = w; r < nr; r += TW_WARPS) {
            float m = -INFINITY;
            for (int j = lane; j < n; j += 32) m = fmaxf(m, s[r * n + j]);
            m = tw_warp_max(m);
            float l = 0.f;
            for (int j = lane; j < n; j += 32) {
                const float e = m == -INFINITY ? 0.f : expf(s[r * n + j] - m);
                s[r * n + j] = e;
                l += e;
            }
            l = tw_warp_sum(l);
            __syncwarp();
            float* orow = out + (r0 + r) * ow;
            for (int d = lane; d < vd; d += 32) {
                float acc = 0.f;
                for (int j = 0; j < n; ++j) acc += s[r * n + j] * tw_bf16(vc[(long long)((lo + j) % L.slots) * vd + d]);
                orow[2 + d] = acc;
            }
            if (lane == 0) {
                orow[0] = m;
                orow[1] = l;
            }
        }
        __syncthreads();
    }
}
