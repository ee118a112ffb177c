// LINEAR: out[t, n0:n1] = norm?(x)[t] @ W[n0:n1]^T (+ resid[t, n0:n1]); bf16 weights.
// Runs on the shared GEMV executor (core/gemv_task.cuh): this file decodes the descriptor.
#pragma once
#include "core/gemv_task.cuh"

__device__ __forceinline__ TwGemv tw_gemv_linear(const TwCtx& c, const int* a) {
    tw_dense_tokens(c, a[TW_LINEAR_T]);
    TwGemv g{};
    g.x = c.arena + a[TW_LINEAR_X_OFF];
    g.x_ld = a[TW_LINEAR_X_LD];
    g.n = a[TW_LINEAR_T];
    g.k = a[TW_LINEAR_K];
    g.norm = c.vec_or_null(a[TW_LINEAR_W_NORM]);
    g.fmt = TW_FMT_BF16;
    g.w = c.bf16(a[TW_LINEAR_W]);
    g.n0 = a[TW_LINEAR_N0];
    g.n1 = a[TW_LINEAR_N1];
    g.out = c.arena + a[TW_LINEAR_OUT_OFF];
    g.out_ld = a[TW_LINEAR_OUT_LD];
    g.resid = a[TW_LINEAR_RESID_OFF] >= 0 ? c.arena + a[TW_LINEAR_RESID_OFF] : nullptr;
    g.resid_ld = a[TW_LINEAR_RESID_LD];
    return g;
}

__device__ void tw_prefetch_linear(const TwCtx& c, const int* a, TwPrefetch& pf) {
    tw_prefetch_rows_bf16(pf, c.bf16(a[TW_LINEAR_W]), a[TW_LINEAR_K], a[TW_LINEAR_N0], a[TW_LINEAR_N1]);
}
