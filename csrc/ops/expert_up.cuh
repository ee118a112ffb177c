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
    const TwWeight G = c.wt[a[TW_EXPERT_UP_W]], U = c.wt[a[TW_EXPERT_UP_W2]];
    const long long cpe = (long long)G.rows * (k / 2), spe = (long long)G.rows * (k / 32);
    const unsigned char* gc = reinterpret_cast<const unsigned char*>(G.a) + expert * cpe;
    const unsigned char* gs = reinterpret_cast<const unsigned char*>(G.b) + expert * spe;
    const unsigned char* uc = reinterpret_cast<const unsigned char*>(U.a) + expert * cpe;
    const unsigned char* us = reinterpret_cast<const unsigned char*>(U.b) + expert * spe;
    float* act = c.arena + a[TW_EXPERT_UP_ACT_OFF];
    const int ld = a[TW_EXPERT_UP_ACT_LD];
    for (int n = a[TW_EXPERT_UP_N0] + tw_warp(); n < a[TW_EXPERT_UP_N1]; n += TW_WARPS) {
        // The gate row and the up row of output n, streamed together.
        const TwFp4Row rows[2] = {{gc + (long long)n * (k / 2), gs + (long long)n * (k / 32)},
                                  {uc + (long long)n * (k / 2), us + (long long)n * (k / 32)}};
        float acc[2][TW_MAX_T];
        tw_gemv_mxfp4<2>(x, rows, acc);
        if (tw_lane() == 0) {
#pragma unroll
            for (int r = 0; r < TW_MAX_T; ++r)
                if (r < count) act[c.s_tok[r] * ld + n] = acc[0][r] / (1.f + expf(-acc[0][r])) * acc[1][r];
        }
    }
}
