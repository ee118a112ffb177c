// ATTN_PARTIAL: one kv head, one chunk of key positions. For each query row (token t,
// head j of the group; row = t * group + j): [max score, sum exp(s - max), sum exp * v].
// Global layers: chunk c covers positions [c * chunk_len, (c + 1) * chunk_len). SWA layers
// cut pos - window .. pos + T - 1 into chunks from its start. Keys past the current
// length are absent; a chunk with none writes (-inf, 0, 0).
//
// The chunk's K and V are staged once in shared memory (bf16, K rows padded by one word so
// a warp reading one dim of 32 keys hits 32 banks); queries go through in batches that
// fit the scratch space: a thread per (row, key) for scores, a warp per row for the
// softmax, a thread per (row, v dim) for the weighted sum.
//
// The body (tw_attn_partial_rows) is shared with DRAFT_ATTN, which reads a draft layer's
// cache over its own key range with every key visible to every row.
#pragma once
#include "core/context.cuh"
#include "core/prefetch.cuh"

// Partials of kv head h of layer L over key positions lo..hi-1 for the t * group query rows
// of q (row = token * group + head in group; token stride q_ld) into out (rows of 2 + v_dim
// words). causal_pos >= 0: token i sits at causal_pos + i and sees keys at or before it,
// within the layer's window; causal_pos < 0: every row sees every key. `op` names the op in
// an error record.
__device__ void tw_attn_partial_rows(const TwCtx& c, const TwLayer& L, int h, int t, const float* q, int q_ld,
                                     int lo, int hi, int causal_pos, float* out, int op) {
    const int hd = L.head_dim, vd = L.v_dim, grp = L.heads / L.kv_heads;
    const int rows = t * grp;
    const int ow = 2 + vd;
    if (lo >= hi) {
        for (int i = threadIdx.x; i < rows * ow; i += TW_THREADS) out[i] = (i % ow) == 0 ? -INFINITY : 0.f;
        return;
    }
    const int n = hi - lo;
    const int ks = hd + 2;   // padded K row stride (bf16 elements)
    const int v_at = (n * ks + 7) & ~7;   // V rows start 16-byte aligned
    if ((v_at + n * vd) * 2 > TW_STAGE_FLOATS * 4 || (hd & 7) || (vd & 7) || n > L.slots) {
        // The planner sizes chunks to fit (tiling.attention_chunk); refuse rather than overrun.
        if (threadIdx.x == 0)
            c.fail(TW_STATUS_BAD_DESCRIPTOR, op, (unsigned long long)n, 0);
        return;
    }
    __nv_bfloat16* sk = reinterpret_cast<__nv_bfloat16*>(c.s_stage);
    __nv_bfloat16* sv = sk + v_at;
    const __nv_bfloat16* kc = reinterpret_cast<const __nv_bfloat16*>(L.k) + (long long)h * L.slots * hd;
    const __nv_bfloat16* vc = reinterpret_cast<const __nv_bfloat16*>(L.v) + (long long)h * L.slots * vd;
    // Stage K and V (L2 reads: other SMs wrote this step's keys): 16-byte loads, unrolled
    // so several are in flight per thread; K rows land at the padded stride (4-byte stores).
    // Key j sits in ring slot (lo + j) mod slots: one modulo per task, then a wrap test
    // (n <= slots), not a 64-bit modulo per 16-byte load.
    const int k8 = hd / 8, v8 = vd / 8, slot0 = lo % L.slots;
#pragma unroll 4
    for (int i = threadIdx.x; i < n * k8; i += TW_THREADS) {
        const int j = i / k8, d = 8 * (i - j * k8);
        const int slot = slot0 + j < L.slots ? slot0 + j : slot0 + j - L.slots;
        const uint4 raw = __ldcg(reinterpret_cast<const uint4*>(kc + slot * hd + d));
        unsigned int* dst = reinterpret_cast<unsigned int*>(sk + j * ks + d);
        dst[0] = raw.x; dst[1] = raw.y; dst[2] = raw.z; dst[3] = raw.w;
    }
#pragma unroll 4
    for (int i = threadIdx.x; i < n * v8; i += TW_THREADS) {
        const int j = i / v8, d = 8 * (i - j * v8);
        const int slot = slot0 + j < L.slots ? slot0 + j : slot0 + j - L.slots;
        *reinterpret_cast<uint4*>(sv + j * vd + d) = __ldcg(reinterpret_cast<const uint4*>(vc + slot * vd + d));
    }
    q += h * grp * hd;
    const float scale = rsqrtf((float)hd);
    const int batch = max(1, min(rows, TW_SCRATCH_FLOATS / (hd + n)));
    float* sq = c.s_scratch;            // [batch][hd]
    float* s = c.s_scratch + batch * hd;  // [batch][n]
    for (int r0 = 0; r0 < rows; r0 += batch) {
        const int nr = min(batch, rows - r0);
        tw_sync();   // staging done / previous batch finished with sq and s
        for (int i = threadIdx.x; i < nr * hd; i += TW_THREADS) {
            const int r = i / hd, d = i % hd, row = r0 + r;
            sq[i] = tw_ld(q + (row / grp) * q_ld + (row % grp) * hd + d);
        }
        tw_sync();
        for (int i = threadIdx.x; i < nr * n; i += TW_THREADS) {
            const int r = i / n, j = i % n, row = r0 + r;
            const float* qr = sq + r * hd;
            const __nv_bfloat16* kr = sk + j * ks;
            float acc = 0.f;
            for (int d = 0; d < hd; d += 2) {
                const float2 kk = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(kr + d));
                acc += qr[d] * kk.x + qr[d + 1] * kk.y;
            }
            const int kp = lo + j, qp = causal_pos + row / grp;
            const bool vis = causal_pos < 0 || (kp <= qp && (L.window < 0 || kp >= qp - L.window));
            s[i] = vis ? acc * scale : -INFINITY;
        }
        tw_sync();
        for (int r = tw_warp(); r < nr; r += TW_WARPS) {
            const int lane = tw_lane();
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
            if (lane == 0) {
                out[(r0 + r) * ow] = m;
                out[(r0 + r) * ow + 1] = l;
            }
        }
        tw_sync();
        for (int i = threadIdx.x; i < nr * vd; i += TW_THREADS) {
            const int r = i / vd, d = i % vd;
            const float* e = s + r * n;
            float acc = 0.f;
            for (int j = 0; j < n; ++j) acc += e[j] * __bfloat162float(sv[j * vd + d]);
            out[(r0 + r) * ow + 2 + d] = acc;
        }
    }
}

// Key positions lo..hi-1 this task reads: chunk c of the keys from the layer's start
// (position 0, or pos - window for a sliding-window layer) up to the step's last token.
__device__ __forceinline__ void tw_attn_partial_range(const TwCtx& c, const int* a, const TwLayer& L, int* lo, int* hi) {
    const int t = a[TW_ATTN_PARTIAL_T], pos = c.pos(a[TW_ATTN_PARTIAL_STATE_OFF]);
    const int start = L.window < 0 ? 0 : max(0, pos - L.window);
    *lo = start + a[TW_ATTN_PARTIAL_CHUNK] * a[TW_ATTN_PARTIAL_CHUNK_LEN];
    *hi = min(*lo + a[TW_ATTN_PARTIAL_CHUNK_LEN], pos + t);
}

__device__ void tw_op_attn_partial(const TwCtx& c, const int* a) {
    const TwLayer L = c.layers[a[TW_ATTN_PARTIAL_LAYER]];
    int lo, hi;
    tw_attn_partial_range(c, a, L, &lo, &hi);
    tw_attn_partial_rows(c, L, a[TW_ATTN_PARTIAL_KVH], a[TW_ATTN_PARTIAL_T], c.arena + a[TW_ATTN_PARTIAL_Q_OFF],
                         a[TW_ATTN_PARTIAL_Q_LD], lo, hi, c.pos(a[TW_ATTN_PARTIAL_STATE_OFF]),
                         c.arena + a[TW_ATTN_PARTIAL_PART_OFF], TW_OP_ATTN_PARTIAL);
}

// Rows lo..hi-1 of a KV ring of `slots` rows (one or two ranges where it wraps).
__device__ __forceinline__ void tw_prefetch_ring(TwPrefetch& pf, const __nv_bfloat16* base, int slots, int row,
                                                 int lo, int hi) {
    if (lo >= hi) return;
    const int n = min(hi - lo, slots), s0 = lo % slots, first = min(n, slots - s0);
    pf.range(base + (long long)s0 * row, (unsigned long long)first * row * 2);
    if (n > first) pf.range(base, (unsigned long long)(n - first) * row * 2);
}

// The task's keys and values (the position is read early, so at a step boundary the range
// may be off by a step: a prefetch is only a hint).
__device__ void tw_prefetch_attn_partial(const TwCtx& c, const int* a, TwPrefetch& pf) {
    const TwLayer L = c.layers[a[TW_ATTN_PARTIAL_LAYER]];
    const int h = a[TW_ATTN_PARTIAL_KVH];
    int lo, hi;
    tw_attn_partial_range(c, a, L, &lo, &hi);
    tw_prefetch_ring(pf, reinterpret_cast<const __nv_bfloat16*>(L.k) + (long long)h * L.slots * L.head_dim, L.slots,
                     L.head_dim, lo, hi);
    tw_prefetch_ring(pf, reinterpret_cast<const __nv_bfloat16*>(L.v) + (long long)h * L.slots * L.v_dim, L.slots,
                     L.v_dim, lo, hi);
}
