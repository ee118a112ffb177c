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
    const TwWeight D = c.wt[a[TW_EXPERT_DOWN_W]];
    const unsigned char* dc = reinterpret_cast<const unsigned char*>(D.a) + expert * (long long)D.rows * (k / 2);
    const unsigned char* ds = reinterpret_cast<const unsigned char*>(D.b) + expert * (long long)D.rows * (k / 32);
    float* y = c.arena + a[TW_EXPERT_DOWN_Y_OFF];
    const int ld = a[TW_EXPERT_DOWN_Y_LD];
    tw_gemv_mxfp4_tile(x, dc, ds, k, a[TW_EXPERT_DOWN_N0], a[TW_EXPERT_DOWN_N1],
                       [&](int n, int r, float v) { y[c.s_tok[r] * ld + n] = v; });
}
