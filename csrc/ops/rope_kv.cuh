// ROPE_KV: for kv head h, rotate its q heads and k at positions pos..pos+T-1 (rotate-half
// pairs (i, i + rd/2) within the first rd dims; cos/sin from the program's fp64-built
// table), write q to the arena and K, V * value_scale to the bf16 cache (round to nearest).
// The pieces are shared with DRAFT_ROPE_KV, which adds a per-head RMSNorm before the
// rotation and reads the draft layers' shapes and caches through the same layer table.
#pragma once
#include "core/context.cuh"
#include "core/cp_async.cuh"

// Element d of one head row after rotate-half RoPE at the position whose table rows are
// cs_row / sn_row; `at(e)` gives element e of the (pre-rotation) head row.
template <class At>
__device__ __forceinline__ float tw_rope_elem(At at, int d, int half, const float* cs_row, const float* sn_row) {
    float v = at(d);
    if (d < 2 * half) {
        const int p = d < half ? d : d - half;
        const float cs = cs_row[p], sn = sn_row[p];
        // Explicit roundings, no FMA contraction: K is rounded to bf16 next, and every
        // executor must land on the same side of each rounding boundary.
        v = d < half ? __fsub_rn(__fmul_rn(v, cs), __fmul_rn(at(d + half), sn))
                     : __fadd_rn(__fmul_rn(v, cs), __fmul_rn(at(d - half), sn));
    }
    return v;
}

// The q heads (j < group, rotated into q_out; skipped when q_out is null) and the k head
// (j == group, rotated into the bf16 cache) of kv head h, for rows r < t at positions
// pos + r. `inv` (shared memory, [t][group + 1]) switches on a per-head RMSNorm applied
// before the rotation: x * inv[r][j] * w[d], w = wq for q heads and wk for the k head,
// rounded as the CPU executor rounds (two multiplies).
__device__ void tw_rope_qk(const TwCtx& c, const TwLayer& L, const float* qkv, int ld, int t, int h, int pos,
                           const TwWeight& rope, float* q_out, int q_ld, const float* inv,
                           const __nv_bfloat16* wq, const __nv_bfloat16* wk) {
    const int hd = L.head_dim, grp = L.heads / L.kv_heads, half = L.rotary_dim / 2, nq = L.heads * hd;
    const float* cos_t = reinterpret_cast<const float*>(rope.a);
    const float* sin_t = reinterpret_cast<const float*>(rope.b);
    __nv_bfloat16* kc = reinterpret_cast<__nv_bfloat16*>(L.k);
    const int j0 = q_out ? 0 : grp, nh = grp + 1 - j0;
    // (t, head j0 + jj), d over head_dim.
    for (int i = threadIdx.x; i < t * nh * hd; i += TW_THREADS) {
        const int d = i % hd, j = j0 + (i / hd) % nh, r = i / (hd * nh);
        const float* src = qkv + r * ld + (j < grp ? (h * grp + j) * hd : nq + h * hd);
        const float s = inv ? inv[r * (grp + 1) + j] : 1.f;
        const __nv_bfloat16* wn = j < grp ? wq : wk;
        const long long tr = (long long)(pos + r) * rope.cols;
        const float v = tw_rope_elem(
            [&](int e) {
                const float x = tw_ld(src + e);
                return inv ? __fmul_rn(__fmul_rn(x, s), tw_bf16(wn[e])) : x;
            },
            d, half, cos_t + tr, sin_t + tr);
        if (j < grp) {
            q_out[r * q_ld + (h * grp + j) * hd + d] = v;
        } else {
            const int slot = (pos + r) % L.slots;
            kc[((long long)h * L.slots + slot) * hd + d] = __float2bfloat16_rn(v);
        }
    }
}

// V of kv head h (rows r < t, after the q and k columns of qkv) times the layer's value
// scale into the bf16 cache at positions pos + r.
__device__ void tw_store_v(const TwCtx& c, const TwLayer& L, const float* qkv, int ld, int t, int h, int pos) {
    const int vd = L.v_dim, nqk = (L.heads + L.kv_heads) * L.head_dim;
    __nv_bfloat16* vc = reinterpret_cast<__nv_bfloat16*>(L.v);
    for (int i = threadIdx.x; i < t * vd; i += TW_THREADS) {
        const int d = i % vd, r = i / vd;
        const float v = tw_ld(qkv + r * ld + nqk + h * vd + d) * L.value_scale;
        const int slot = (pos + r) % L.slots;
        vc[((long long)h * L.slots + slot) * vd + d] = __float2bfloat16_rn(v);
    }
}

// Staged ROPE_KV (TW_ROPE_STAGED): the loops above load, compute and store element by
// element, and a load of the next element cannot pass the store of this one (the pointers
// may alias), so each trip of a thread is one L2 round trip: 22 trips a thread at T = 8
// (~11 us a layer), 3 at T = 1. Here every input is copied to shared memory first with
// cp.async (the kv head's q, k and v rows: no dependence on the position; then the
// table's cos / sin rows at pos..pos+t-1), then the same arithmetic (tw_rope_elem) writes
// the outputs: two round trips at any T.
// TW_ROPE_STAGED=2: the placebo (core/util.cuh TW_SWITCH_TAKEN).
#ifndef TW_ROPE_STAGED
#define TW_ROPE_STAGED 0
#endif

// Floats of the stage a staged rope of t rows and nh rotated heads needs (rows, the cos /
// sin rows, the two norm weights' bf16), or 0 if its copies cannot all be 16-byte ones
// (then the element loops run).
__device__ __forceinline__ int tw_rope_stage_floats(const TwLayer& L, int t, int nh, int ld, const TwWeight& rope) {
    const int hd = L.head_dim, vd = L.v_dim;
    if ((hd | vd | ld | rope.cols) & 3 || (hd & 7)) return 0;
    return t * (nh * hd + vd) + 2 * t * rope.cols + hd;
}

// ROPE_KV / DRAFT_ROPE_KV from shared memory (TW_ROPE_STAGED): for kv head h, rows r < t at
// positions pos + r, the rotated q heads (into q_out, when not null) and k head (into the
// cache), and v times the value scale (into the cache). With `norm`, every head row is first
// scaled as DRAFT_ROPE_KV's per-head RMSNorm: x * inv * w (w = wq for q heads, wk for the k
// head; inv = 1 / sqrt(mean(x^2) + eps), the lanes' sums as the element loops take them).
// Copies: the rows (no dependence on the position), then, once the position is read, the
// cos / sin rows; the same arithmetic as tw_rope_qk / tw_store_v, so the same results.
__device__ void tw_rope_kv_staged(const TwCtx& c, const TwLayer& L, const float* qkv, int ld, int t, int h,
                                  int state_off, const TwWeight& rope, float* q_out, int q_ld, bool norm,
                                  const __nv_bfloat16* wq, const __nv_bfloat16* wk) {
    const int hd = L.head_dim, vd = L.v_dim, grp = L.heads / L.kv_heads, half = L.rotary_dim / 2;
    const int nq = L.heads * hd, nk = L.kv_heads * hd, cols = rope.cols;
    const int j0 = q_out ? 0 : grp, nh = grp + 1 - j0;   // rotated heads: q heads (if any), then k
    const int qw = (grp - j0) * hd, rw = nh * hd + vd;    // a staged row: q heads, k head, v head
    float* rows = c.s_stage;                              // [t][rw]
    float* cs = rows + t * rw;                            // [t][cols] cos, then [t][cols] sin
    float* sn = cs + t * cols;
    __nv_bfloat16* ws = reinterpret_cast<__nv_bfloat16*>(sn + t * cols);   // wq [hd], wk [hd]
    float* inv = c.s_scratch;                             // [t][nh]
    const int q4 = qw / 4, k4 = hd / 4, r4 = q4 + k4 + vd / 4;
    for (int i = threadIdx.x; i < t * r4; i += TW_THREADS) {
        const int r = i / r4, j = i - r * r4;
        const float* src = qkv + (long long)r * ld;
        src += j < q4 ? h * grp * hd + 4 * j : j < q4 + k4 ? nq + h * hd + 4 * (j - q4) : nq + nk + h * vd + 4 * (j - q4 - k4);
        tw_cp_async16(rows + r * rw + 4 * j, src);
    }
    if (norm && threadIdx.x < hd / 4) {   // 8 bf16 per copy: wq's then wk's
        const int half_n = hd / 8, i = threadIdx.x;
        if (i < half_n) {
            if (q_out) tw_cp_async16(ws + 8 * i, wq + 8 * i);
        } else {
            tw_cp_async16(ws + hd + 8 * (i - half_n), wk + 8 * (i - half_n));
        }
    }
    tw_cp_async_commit();
    const int pos = c.pos(state_off);   // while the rows are on their way
    const float* cos_t = reinterpret_cast<const float*>(rope.a) + (long long)pos * cols;
    const float* sin_t = reinterpret_cast<const float*>(rope.b) + (long long)pos * cols;
    for (int i = threadIdx.x; i < t * cols / 4; i += TW_THREADS) {   // rows pos..pos+t-1: contiguous
        tw_cp_async16(cs + 4 * i, cos_t + 4 * i);
        tw_cp_async16(sn + 4 * i, sin_t + 4 * i);
    }
    tw_cp_async_commit();
    tw_cp_async_wait<0>();
    tw_sync();
    if (norm) {   // a warp per head row, as DRAFT_ROPE_KV's element loops
        for (int i = tw_warp(); i < t * nh; i += TW_WARPS) {
            const int r = i / nh, jj = i - r * nh;
            const float* src = rows + r * rw + jj * hd;
            float ss = 0.f;
            for (int d = tw_lane(); d < hd; d += 32) ss += src[d] * src[d];
            ss = tw_warp_sum(ss);
            if (tw_lane() == 0) inv[i] = 1.f / sqrtf(ss / (float)hd + c.p->rms_eps);
        }
        tw_sync();
    }
    __nv_bfloat16* kc = reinterpret_cast<__nv_bfloat16*>(L.k);
    __nv_bfloat16* vc = reinterpret_cast<__nv_bfloat16*>(L.v);
    for (int i = threadIdx.x; i < t * rw; i += TW_THREADS) {
        const int r = i / rw, e = i - r * rw;
        const float* row = rows + r * rw;
        const int slot = (pos + r) % L.slots;
        if (e < nh * hd) {   // a rotated head: q (jj < nh - 1) or k
            const int jj = e / hd, d = e - jj * hd, j = j0 + jj;
            const float* head = row + jj * hd;
            const float s = norm ? inv[r * nh + jj] : 1.f;
            const __nv_bfloat16* w = ws + (j < grp ? 0 : hd);
            const float v = tw_rope_elem(
                [&](int x) { return norm ? __fmul_rn(__fmul_rn(head[x], s), tw_bf16(w[x])) : head[x]; }, d, half,
                cs + r * cols, sn + r * cols);
            if (j < grp) q_out[r * q_ld + (h * grp + j) * hd + d] = v;
            else kc[((long long)h * L.slots + slot) * hd + d] = __float2bfloat16_rn(v);
        } else {
            const int d = e - nh * hd;
            vc[((long long)h * L.slots + slot) * vd + d] = __float2bfloat16_rn(row[e] * L.value_scale);
        }
    }
}

__device__ void tw_op_rope_kv(const TwCtx& c, const int* a) {
    const TwLayer L = c.layers[a[TW_ROPE_KV_LAYER]];
    const int t = a[TW_ROPE_KV_T], h = a[TW_ROPE_KV_KVH], ld = a[TW_ROPE_KV_QKV_LD];
#if TW_ROPE_STAGED
    const TwWeight& rope = c.weight(a[TW_ROPE_KV_W_ROPE]);
    const int need = tw_rope_stage_floats(L, t, L.heads / L.kv_heads + 1, ld, rope);
    if (need > 0 && need <= TW_STAGE_FLOATS && TW_SWITCH_TAKEN(TW_ROPE_STAGED, t)) {
        tw_rope_kv_staged(c, L, c.arena + a[TW_ROPE_KV_QKV_OFF], ld, t, h, a[TW_ROPE_KV_STATE_OFF], rope,
                          c.arena + a[TW_ROPE_KV_Q_OFF], a[TW_ROPE_KV_Q_LD], false, nullptr, nullptr);
        return;
    }
#endif
    const int pos = c.pos(a[TW_ROPE_KV_STATE_OFF]);
    const float* qkv = c.arena + a[TW_ROPE_KV_QKV_OFF];
    tw_rope_qk(c, L, qkv, ld, t, h, pos, c.weight(a[TW_ROPE_KV_W_ROPE]), c.arena + a[TW_ROPE_KV_Q_OFF],
               a[TW_ROPE_KV_Q_LD], nullptr, nullptr, nullptr);
    tw_store_v(c, L, qkv, ld, t, h, pos);
}
