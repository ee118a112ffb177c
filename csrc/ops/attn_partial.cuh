// ATTN_PARTIAL: one kv head, one chunk of key positions. For each query row (token t,
// head j of the group; row = t * group + j): [max score, sum exp(s - max), sum exp * v].
// Global layers: chunk c covers positions [c * chunk_len, (c + 1) * chunk_len). SWA layers
// cut pos - window .. pos + T - 1 into chunks from its start. Keys past the current
// length are absent; a chunk with none writes (-inf, 0, 0).
//
// The chunk's K and V are staged once in shared memory (bf16, K rows padded by 16 bytes so
// 8 threads reading 16 bytes of 8 keys hit 8 different bank groups), with the first query
// rows, in one round of cp.async; queries go through in batches that fit the scratch
// space: a thread per (row, key) for scores, a warp per row for the softmax, a thread per
// (row, pair of v dims) for the weighted sum.
//
// The body (tw_attn_partial_rows) is shared with DRAFT_ATTN, which reads a draft layer's
// cache over its own key range with every key visible to every row.
#pragma once
#include "core/context.cuh"
#include "core/prefetch.cuh"
#include "core/cp_async.cuh"

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
    // K rows padded by 16 bytes: a thread per key reads its row by 16 bytes, and 8 keys'
    // rows then start in 8 different 4-bank groups (no conflicts for hd a multiple of 8).
    const int ks = hd + 8;
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
    // Stage K and V (L2 reads: other SMs wrote this step's keys) with 16-byte cp.async
    // copies, and the first query rows with them: one round trip to L2 for all three, where
    // loads into registers paid one per loop (their stores waited for them).
    // Key j sits in ring slot (lo + j) mod slots: one modulo per task, then a wrap test
    // (n <= slots), not a 64-bit modulo per 16-byte load.
    const int k8 = hd / 8, v8 = vd / 8, slot0 = lo % L.slots;
    for (int i = threadIdx.x; i < n * k8; i += TW_THREADS) {
        const int j = i / k8, d = 8 * (i - j * k8);
        const int slot = slot0 + j < L.slots ? slot0 + j : slot0 + j - L.slots;
        tw_cp_async16(sk + j * ks + d, kc + slot * hd + d);
    }
    for (int i = threadIdx.x; i < n * v8; i += TW_THREADS) {
        const int j = i / v8, d = 8 * (i - j * v8);
        const int slot = slot0 + j < L.slots ? slot0 + j : slot0 + j - L.slots;
        tw_cp_async16(sv + j * vd + d, vc + slot * vd + d);
    }
    q += h * grp * hd;
    const float scale = rsqrtf((float)hd);
    const int batch = max(1, min(rows, TW_SCRATCH_FLOATS / (hd + n)));
    float* sq = c.s_scratch;            // [batch][hd]
    float* s = c.s_scratch + batch * hd;  // [batch][n]
    // The query rows of batch r0 (their reads go out with the staging's for the first).
    const bool q16 = ((reinterpret_cast<unsigned long long>(q) & 15) | (q_ld & 3) | (hd & 3)) == 0;
    auto load_q = [&](int r0, int nr) {
        if (q16) {
            const int hd4 = hd / 4;
            for (int i = threadIdx.x; i < nr * hd4; i += TW_THREADS) {
                const int r = i / hd4, d = 4 * (i - r * hd4), row = r0 + r;
                tw_cp_async16(sq + r * hd + d, q + (row / grp) * q_ld + (row % grp) * hd + d);
            }
        } else {
#pragma unroll 4
            for (int i = threadIdx.x; i < nr * hd; i += TW_THREADS) {
                const int r = i / hd, d = i - r * hd, row = r0 + r;
                sq[i] = tw_ld(q + (row / grp) * q_ld + (row % grp) * hd + d);
            }
        }
        tw_cp_async_commit();
        tw_cp_async_wait<0>();   // this thread's copies have landed (the barrier after: everyone's)
    };
    load_q(0, min(batch, rows));
    for (int r0 = 0; r0 < rows; r0 += batch) {
        const int nr = min(batch, rows - r0);
        if (r0 > 0) {
            tw_sync();   // the previous batch is done with sq and s
            load_q(r0, nr);
        }
        tw_sync();
        c.mark_phase(7);
        for (int i = threadIdx.x; i < nr * n; i += TW_THREADS) {
            const int r = i / n, j = i - r * n, row = r0 + r;
            // 8 dims per step: one 16-byte K read, two broadcast float4 reads of q.
            const float4* qr = reinterpret_cast<const float4*>(sq + r * hd);
            const uint4* kr = reinterpret_cast<const uint4*>(sk + j * ks);
            float acc = 0.f;
            for (int d8 = 0; d8 < hd / 8; ++d8) {
                const uint4 raw = kr[d8];
                const float4 qa = qr[2 * d8], qb = qr[2 * d8 + 1];
                const float2 k0 = tw_bf16x2(raw.x), k1 = tw_bf16x2(raw.y), k2 = tw_bf16x2(raw.z),
                             k3 = tw_bf16x2(raw.w);
                acc += (qa.x * k0.x + qa.y * k0.y) + (qa.z * k1.x + qa.w * k1.y) +
                       ((qb.x * k2.x + qb.y * k2.y) + (qb.z * k3.x + qb.w * k3.y));
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
        // Two v dims per thread (one 4-byte read of V per key).
        const int vd2 = vd / 2;
        for (int i = threadIdx.x; i < nr * vd2; i += TW_THREADS) {
            const int r = i / vd2, d = 2 * (i - r * vd2);
            const float* e = s + r * n;
            float a0 = 0.f, a1 = 0.f;
            for (int j = 0; j < n; ++j) {
                const float2 v = tw_bf16x2(*reinterpret_cast<const unsigned int*>(sv + j * vd + d));
                a0 += e[j] * v.x;
                a1 += e[j] * v.y;
            }
            out[(r0 + r) * ow + 2 + d] = a0;
            out[(r0 + r) * ow + 3 + d] = a1;
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
