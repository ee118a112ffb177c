// LINEAR_SWIGLU: out[t, n0:n1] = silu(norm?(x) Wg^T) * (norm?(x) Wu^T); bf16 weights. A warp
// streams the gate row and the up row of one output together (the shared GEMV executor,
// core/gemv_task.cuh, gated mode).
#pragma once
#include "core/gemv_task.cuh"

__device__ __forceinline__ TwGemv tw_gemv_linear_swiglu(const TwCtx& c, const int* a) {
    tw_dense_tokens(c, a[TW_LINEAR_SWIGLU_T]);
    TwGemv g{};
    g.x = c.arena + a[TW_LINEAR_SWIGLU_X_OFF];
    g.x_ld = a[TW_LINEAR_SWIGLU_X_LD];
    g.n = a[TW_LINEAR_SWIGLU_T];
    g.k = a[TW_LINEAR_SWIGLU_K];
    g.norm = c.vec_or_null(a[TW_LINEAR_SWIGLU_W_NORM]);
    g.fmt = TW_FMT_BF16;
    g.w = c.bf16(a[TW_LINEAR_SWIGLU_W]);
    g.w2 = c.bf16(a[TW_LINEAR_SWIGLU_W2]);
    g.n0 = a[TW_LINEAR_SWIGLU_N0];
    g.n1 = a[TW_LINEAR_SWIGLU_N1];
    g.out = c.arena + a[TW_LINEAR_SWIGLU_OUT_OFF];
    g.out_ld = a[TW_LINEAR_SWIGLU_OUT_LD];
    return g;
}

__device__ void tw_prefetch_linear_swiglu(const TwCtx& c, const int* a, TwPrefetch& pf) {
    const int k = a[TW_LINEAR_SWIGLU_K], n0 = a[TW_LINEAR_SWIGLU_N0], n1 = a[TW_LINEAR_SWIGLU_N1];
    tw_prefetch_rows_bf16(pf, c.bf16(a[TW_LINEAR_SWIGLU_W]), k, n0, n1);
    tw_prefetch_rows_bf16(pf, c.bf16(a[TW_LINEAR_SWIGLU_W2]), k, n0, n1);
}
