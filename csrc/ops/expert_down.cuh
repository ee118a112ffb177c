// EXPERT_DOWN: for the tokens of one slot, y[:, n0:n1] = act @ Wd[n0:n1]^T (MXFP4), on the
// shared GEMV executor (core/gemv_task.cuh).
#pragma once
#include "core/gemv_task.cuh"
#include "ops/slots.cuh"

// False for an unused slot (the task does nothing).
__device__ __forceinline__ bool tw_gemv_expert_down(const TwCtx& c, const int* a, TwGemv& g) {
    const int t = a[TW_EXPERT_DOWN_T], k = a[TW_EXPERT_DOWN_K];
    int expert, count;
    if (!tw_slot_tokens(c, a[TW_EXPERT_DOWN_TABLE_OFF], a[TW_EXPERT_DOWN_SLOT], t, &expert, &count)) return false;
    const TwFp4Matrix d = tw_expert_matrix(c.weight(a[TW_EXPERT_DOWN_W]), expert, k);
    g = TwGemv{};
    g.x = c.arena + a[TW_EXPERT_DOWN_ACT_OFF];
    g.x_ld = a[TW_EXPERT_DOWN_ACT_LD];
    g.n = count;
    g.k = k;
    g.fmt = TW_FMT_MXFP4;
    g.w = d.codes;
    g.w_scales = d.scales;
    g.n0 = a[TW_EXPERT_DOWN_N0];
    g.n1 = a[TW_EXPERT_DOWN_N1];
    g.out = c.arena + a[TW_EXPERT_DOWN_Y_OFF];
    g.out_ld = a[TW_EXPERT_DOWN_Y_LD];
    g.scatter = true;
    return true;
}

// Once the routing is known: rows n0:n1 of the slot's expert.
__device__ void tw_prefetch_expert_down(const TwCtx& c, const int* a, TwPrefetch& pf) {
    const int expert = tw_slot_expert(c, a[TW_EXPERT_DOWN_TABLE_OFF], a[TW_EXPERT_DOWN_SLOT]);
    if (expert < 0) return;
    const TwFp4Matrix d = tw_expert_matrix(c.weight(a[TW_EXPERT_DOWN_W]), expert, a[TW_EXPERT_DOWN_K]);
    tw_prefetch_rows_mxfp4(pf, d.codes, d.scales, a[TW_EXPERT_DOWN_K], a[TW_EXPERT_DOWN_N0], a[TW_EXPERT_DOWN_N1]);
}
