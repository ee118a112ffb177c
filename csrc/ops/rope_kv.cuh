// ROPE_KV: for kv head h, rotate its q heads and k at positions pos..pos+T-1 (rotate-half
// pairs (i, i + rd/2) within the first rd dims; cos/sin from the program's fp64-built
// table), write q to the arena and K, V * value_scale to the bf16 cache (round to nearest).
#pragma once
#include "core/context.cuh"

__device__ void tw_op_rope_kv(const TwCtx& c, const int* a) {
    const TwLayer L = c.layers[a[TW_ROPE_KV_LAYER]];
    const int t = a[TW_ROPE_KV_T], h = a[TW_ROPE_KV_KVH];
    const int hd = L.head_dim, vd = L.v_dim, grp = L.heads / L.kv_heads, half = L.rotary_dim / 2;
    const int nq = L.heads * hd, nk = L.kv_heads * hd;
    const int pos = c.pos(a[TW_ROPE_KV_STATE_OFF]);
    const float* cos_t = reinterpret_cast<const float*>(c.wt[a[TW_ROPE_KV_W_ROPE]].a);
    const float* sin_t = reinterpret_cast<const float*>(c.wt[a[TW_ROPE_KV_W_ROPE]].b);
    const int tab_cols = c.wt[a[TW_ROPE_KV_W_ROPE]].cols;
    const float* qkv = c.arena + a[TW_ROPE_KV_QKV_OFF];
    const int ld = a[TW_ROPE_KV_QKV_LD];
    __nv_bfloat16* kc = reinterpret_cast<__nv_bfloat16*>(L.k);
    __nv_bfloat16* vc = reinterpret_cast<__nv_bfloat16*>(L.v);
    // (t, head j in 0..grp) where j == grp is the k head; d over head_dim.
    for (int i = threadIdx.x; i < t * (grp + 1) * hd; i += TW_THREADS) {
        const int d = i % hd, j = (i / hd) % (grp + 1), r = i / (hd * (grp + 1));
        const float* src = qkv + r * ld + (j < grp ? (h * grp + j) * hd : nq + h * hd);
        float v = tw_ld(src + d);
        if (d < 2 * half) {
            const int p = d < half ? d : d - half;
            const float cs = cos_t[(long long)(pos + r) * tab_cols + p];
            const float sn = sin_t[(long long)(pos + r) * tab_cols + p];
            // Explicit roundings, no FMA contraction: K is rounded to bf16 next, and every
            // executor must land on the same side of each rounding boundary.
            v = d < half ? __fsub_rn(__fmul_rn(v, cs), __fmul_rn(tw_ld(src + d + half), sn))
                         : __fadd_rn(__fmul_rn(v, cs), __fmul_rn(tw_ld(src + d - half), sn));
        }
        if (j < grp) {
            c.arena[a[TW_ROPE_KV_Q_OFF] + r * a[TW_ROPE_KV_Q_LD] + (h * grp + j) * hd + d] = v;
        } else {
            const int slot = (pos + r) % L.slots;
            kc[((long long)h * L.slots + slot) * hd + d] = __float2bfloat16_rn(v);
        }
    }
    for (int i = threadIdx.x; i < t * vd; i += TW_THREADS) {
        const int d = i % vd, r = i / vd;
        const float v = tw_ld(qkv + r * ld + nq + nk + h * vd + d) * c.p->value_scale;
        const int slot = (pos + r) % L.slots;
        vc[((long long)h * L.slots + slot) * vd + d] = __float2bfloat16_rn(v);
    }
}
