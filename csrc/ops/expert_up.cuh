// EXPERT_UP: for the tokens of one slot, act = silu(x Wg^T) * (x Wu^T) on rows n0:n1 of the
// slot's expert (MXFP4). An unused slot does nothing.
#pragma once
#include "ops/gemv_mxfp4.cuh"
#include "ops/slots.cuh"

__device__ void tw_op_expert_up(const TwCtx& c, const int* a) {
    const int t = a[TW_EXPERT_UP_T], k = a[TW_EXPERT_UP_K];
    int expert, count;
    if (!tw_slot_tokens(c, a[TW_EXPERT_UP_TABLE_OFF], a[TW_EXPERT_UP_SLOT], t, &expert, &count)) return;
    const TwRows x = tw_load_rows(c.arena + a[TW_EXPERT_UP_X_OFF], a[TW_EXPERT_UP_X_LD], c.s_tok, count, k,
                                  c.vec_or_null(a[TW_EXPERT_UP_W_NORM]), c.p->rms_eps, c.s_inv, c.s_stage);
    const TwFp4Matrix g = tw_expert_matrix(c.wt[a[TW_EXPERT_UP_W]], expert, k);
    const TwFp4Matrix u = tw_expert_matrix(c.wt[a[TW_EXPERT_UP_W2]], expert, k);
    float* act = c.arena + a[TW_EXPERT_UP_ACT_OFF];
    const int ld = a[TW_EXPERT_UP_ACT_LD];
    // A group is the gate row and the up row of output n, streamed together.
    tw_gemv_walk<TwFp4Core>(
        x, a[TW_EXPERT_UP_N0] + tw_warp(), a[TW_EXPERT_UP_N1], TW_WARPS,
        [&](int n) {
            return TwFp4Core::Ptrs{{g.codes + (long long)n * (k / 2), u.codes + (long long)n * (k / 2)},
                                   {g.scales + (long long)n * (k / 32), u.scales + (long long)n * (k / 32)}};
        },
        [&](int n, const float (&acc)[2][TW_MAX_T]) {
            if (tw_lane() != 0) return;
#pragma unroll
            for (int r = 0; r < TW_MAX_T; ++r)
                if (r < count) act[c.s_tok[r] * ld + n] = tw_silu(acc[0][r]) * acc[1][r];
        });
}

// Once the routing is known: the gate and up rows n0:n1 of the slot's expert.
__device__ void tw_prefetch_expert_up(const TwCtx& c, const int* a, TwPrefetch& pf) {
    const int expert = tw_slot_expert(c, a[TW_EXPERT_UP_TABLE_OFF], a[TW_EXPERT_UP_SLOT]);
    if (expert < 0) return;
    const int k = a[TW_EXPERT_UP_K], n0 = a[TW_EXPERT_UP_N0], n1 = a[TW_EXPERT_UP_N1];
    const TwFp4Matrix g = tw_expert_matrix(c.wt[a[TW_EXPERT_UP_W]], expert, k);
    const TwFp4Matrix u = tw_expert_matrix(c.wt[a[TW_EXPERT_UP_W2]], expert, k);
    tw_prefetch_rows_mxfp4(pf, g.codes, g.scales, k, n0, n1);
    tw_prefetch_rows_mxfp4(pf, u.codes, u.scales, k, n0, n1);
}
