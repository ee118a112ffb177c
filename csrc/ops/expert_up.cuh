// EXPERT_UP: for the tokens of one slot, act = silu(x Wg^T) * (x Wu^T) on rows n0:n1 of the
// slot's expert (MXFP4), on the shared GEMV executor (core/gemv_task.cuh, gated mode).
#pragma once
#include "core/gemv_task.cuh"
#include "ops/slots.cuh"

// False for an unused slot (the task does nothing).
__device__ __forceinline__ bool tw_gemv_expert_up(const TwCtx& c, const int* a, TwGemv& g) {
    const int t = a[TW_EXPERT_UP_T], k = a[TW_EXPERT_UP_K];
    int expert, count;
    c.mark_phase(13);
    if (!tw_slot_tokens(c, a[TW_EXPERT_UP_TABLE_OFF], a[TW_EXPERT_UP_SLOT], t, &expert, &count)) return false;
    c.mark_phase(8);
    const TwFp4Matrix gm = tw_expert_matrix(c.weight(a[TW_EXPERT_UP_W]), expert, k);
    const TwFp4Matrix um = tw_expert_matrix(c.weight(a[TW_EXPERT_UP_W2]), expert, k);
    g = TwGemv{};
    g.x = c.arena + a[TW_EXPERT_UP_X_OFF];
    g.x_ld = a[TW_EXPERT_UP_X_LD];
    g.n = count;
    g.k = k;
    g.norm = c.vec_or_null(a[TW_EXPERT_UP_W_NORM]);
    g.fmt = TW_FMT_MXFP4;
    g.w = gm.codes;
    g.w_scales = gm.scales;
    g.w2 = um.codes;
    g.w2_scales = um.scales;
    g.n0 = a[TW_EXPERT_UP_N0];
    g.n1 = a[TW_EXPERT_UP_N1];
    g.out = c.arena + a[TW_EXPERT_UP_ACT_OFF];
    g.out_ld = a[TW_EXPERT_UP_ACT_LD];
    g.scatter = true;
    return true;
}

// Once the routing is known: the gate and up rows n0:n1 of the slot's expert.
__device__ void tw_prefetch_expert_up(const TwCtx& c, const int* a, TwPrefetch& pf) {
    const int expert = tw_slot_expert(c, a[TW_EXPERT_UP_TABLE_OFF], a[TW_EXPERT_UP_SLOT]);
    if (expert < 0) return;
    const int k = a[TW_EXPERT_UP_K], n0 = a[TW_EXPERT_UP_N0], n1 = a[TW_EXPERT_UP_N1];
    const TwFp4Matrix g = tw_expert_matrix(c.weight(a[TW_EXPERT_UP_W]), expert, k);
    const TwFp4Matrix u = tw_expert_matrix(c.weight(a[TW_EXPERT_UP_W2]), expert, k);
    tw_prefetch_rows_mxfp4(pf, g.codes, g.scales, k, n0, n1);
    tw_prefetch_rows_mxfp4(pf, u.codes, u.scales, k, n0, n1);
}
