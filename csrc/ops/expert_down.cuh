// EXPERT_DOWN: for the tokens of one slot, y[:, n0:n1] = act @ Wd[n0:n1]^T (MXFP4).
#pragma once
#include "ops/gemv_mxfp4.cuh"
#include "ops/slots.cuh"

__device__ void tw_op_expert_down(const TwCtx& c, const int* a) {
    const int t = a[TW_EXPERT_DOWN_T], k = a[TW_EXPERT_DOWN_K];
    int expert, count;
    if (!tw_slot_tokens(c, a[TW_EXPERT_DOWN_TABLE_OFF], a[TW_EXPERT_DOWN_SLOT], t, &expert, &count)) return;
    const TwRows x = tw_load_rows(c.arena + a[TW_EXPERT_DOWN_ACT_OFF], a[TW_EXPERT_DOWN_ACT_LD], c.s_tok, count, k,
                                  nullptr, 0.f, c.s_inv, c.s_stage);
    const TwFp4Matrix d = tw_expert_matrix(c.wt[a[TW_EXPERT_DOWN_W]], expert, k);
    float* y = c.arena + a[TW_EXPERT_DOWN_Y_OFF];
    const int ld = a[TW_EXPERT_DOWN_Y_LD];
    tw_gemv_mxfp4_tile(x, d.codes, d.scales, k, a[TW_EXPERT_DOWN_N0], a[TW_EXPERT_DOWN_N1],
                       [&](int n, int r, float v) { y[c.s_tok[r] * ld + n] = v; });
}

// Once the routing is known: rows n0:n1 of the slot's expert.
__device__ void tw_prefetch_expert_down(const TwCtx& c, const int* a, TwPrefetch& pf) {
    const int expert = tw_slot_expert(c, a[TW_EXPERT_DOWN_TABLE_OFF], a[TW_EXPERT_DOWN_SLOT]);
    if (expert < 0) return;
    const TwFp4Matrix d = tw_expert_matrix(c.wt[a[TW_EXPERT_DOWN_W]], expert, a[TW_EXPERT_DOWN_K]);
    tw_prefetch_rows_mxfp4(pf, d.codes, d.scales, a[TW_EXPERT_DOWN_K], a[TW_EXPERT_DOWN_N0], a[TW_EXPERT_DOWN_N1]);
}
