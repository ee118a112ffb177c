// ROPE_KV: for kv head h, rotate its q heads and k at positions pos..pos+T-1 (rotate-half
// pairs (i, i + rd/2) within the first rd dims; cos/sin from the program's fp64-built
// table), write q to the arena and K, V * value_scale to the bf16 cache (round to nearest).
// The pieces are shared with DRAFT_ROPE_KV, which adds a per-head RMSNorm before the
// rotation and reads the draft layers' shapes and caches through the same layer table.
#pragma once
#include "core/context.cuh"

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

__device__ void tw_op_rope_kv(const TwCtx& c, const int* a) {
    const TwLayer L = c.layers[a[TW_ROPE_KV_LAYER]];
    const int t = a[TW_ROPE_KV_T], h = a[TW_ROPE_KV_KVH], ld = a[TW_ROPE_KV_QKV_LD];
    const int pos = c.pos(a[TW_ROPE_KV_STATE_OFF]);
    const float* qkv = c.arena + a[TW_ROPE_KV_QKV_OFF];
    tw_rope_qk(c, L, qkv, ld, t, h, pos, c.wt[a[TW_ROPE_KV_W_ROPE]], c.arena + a[TW_ROPE_KV_Q_OFF],
               a[TW_ROPE_KV_Q_LD], nullptr, nullptr, nullptr);
    tw_store_v(c, L, qkv, ld, t, h, pos);
}
