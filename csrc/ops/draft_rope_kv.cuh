// DRAFT_ROPE_KV: for draft kv head h at positions pos..pos+t-1: per-head RMSNorm of q (its
// group's heads, only when q_off >= 0) and k (weights w_qnorm / w_knorm over head_dim),
// rotate-half RoPE on the first rotary dims, V times the layer's value scale; K and V into
// the draft cache (bf16), rotated q rows to q_off. q_off < 0: context rows, K/V only.
// Shapes, cache and value scale come from the layer table entry `kv` (a draft layer).
#pragma once
#include "ops/rope_kv.cuh"

__device__ void tw_op_draft_rope_kv(const TwCtx& c, const int* a) {
    const TwLayer L = c.layers[a[TW_DRAFT_ROPE_KV_KV]];
    const int t = a[TW_DRAFT_ROPE_KV_T], h = a[TW_DRAFT_ROPE_KV_KVH], ld = a[TW_DRAFT_ROPE_KV_QKV_LD];
    const int hd = L.head_dim, grp = L.heads / L.kv_heads, nq = L.heads * hd;
    const int pos = c.pos(a[TW_DRAFT_ROPE_KV_STATE_OFF]);
    const float* qkv = c.arena + a[TW_DRAFT_ROPE_KV_QKV_OFF];
    const bool with_q = a[TW_DRAFT_ROPE_KV_Q_OFF] >= 0;
#if TW_ROPE_STAGED   // ops/rope_kv.cuh: every input in shared memory first, two round trips
    {
        const TwWeight& rope = c.weight(a[TW_DRAFT_ROPE_KV_W_ROPE]);
        const __nv_bfloat16* wq = c.vec_or_null(a[TW_DRAFT_ROPE_KV_W_QNORM]);
        const __nv_bfloat16* wk = c.bf16(a[TW_DRAFT_ROPE_KV_W_KNORM]);
        const int need = tw_rope_stage_floats(L, t, with_q ? grp + 1 : 1, ld, rope);
        const bool aligned = ((reinterpret_cast<unsigned long long>(wk) | (with_q ? reinterpret_cast<unsigned long long>(wq) : 0)) & 15) == 0;
        if (need > 0 && need <= TW_STAGE_FLOATS && aligned && t * (grp + 1) <= TW_SCRATCH_FLOATS &&
            TW_SWITCH_TAKEN(TW_ROPE_STAGED, t)) {
            tw_rope_kv_staged(c, L, qkv, ld, t, h, a[TW_DRAFT_ROPE_KV_STATE_OFF], rope,
                              with_q ? c.arena + a[TW_DRAFT_ROPE_KV_Q_OFF] : nullptr, a[TW_DRAFT_ROPE_KV_Q_LD], true,
                              wq, wk);
            return;
        }
    }
#endif
    // 1 / rms of every head row (r, j), j == grp the k head: a warp per row. fp32 with
    // correctly rounded divide and sqrt, as the CPU's x * rsqrt(mean(x^2) + eps).
    float* inv = c.s_scratch;   // [t][grp + 1]
    const int j0 = with_q ? 0 : grp, nh = grp + 1 - j0;
    for (int i = tw_warp(); i < t * nh; i += TW_WARPS) {
        const int r = i / nh, j = j0 + i % nh;
        const float* src = qkv + r * ld + (j < grp ? (h * grp + j) * hd : nq + h * hd);
        float ss = 0.f;
        for (int d = tw_lane(); d < hd; d += 32) {
            const float x = tw_ld(src + d);
            ss += x * x;
        }
        ss = tw_warp_sum(ss);
        if (tw_lane() == 0) inv[r * (grp + 1) + j] = 1.f / sqrtf(ss / (float)hd + c.p->rms_eps);
    }
    tw_sync();
    tw_rope_qk(c, L, qkv, ld, t, h, pos, c.weight(a[TW_DRAFT_ROPE_KV_W_ROPE]),
               with_q ? c.arena + a[TW_DRAFT_ROPE_KV_Q_OFF] : nullptr, a[TW_DRAFT_ROPE_KV_Q_LD], inv,
               c.vec_or_null(a[TW_DRAFT_ROPE_KV_W_QNORM]), c.bf16(a[TW_DRAFT_ROPE_KV_W_KNORM]));
    tw_store_v(c, L, qkv, ld, t, h, pos);
}
