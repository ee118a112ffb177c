// LINEAR: out[t, n0:n1] = norm?(x)[t] @ W[n0:n1]^T (+ resid[t, n0:n1]); bf16 weights.
#pragma once
#include "ops/gemv_bf16.cuh"

__device__ void tw_op_linear(const TwCtx& c, const int* a) {
    const int t = a[TW_LINEAR_T], k = a[TW_LINEAR_K], n1 = a[TW_LINEAR_N1];
    const TwRows x = tw_dense_rows(c, a[TW_LINEAR_X_OFF], a[TW_LINEAR_X_LD], t, k, a[TW_LINEAR_W_NORM]);
    const int resid = a[TW_LINEAR_RESID_OFF], resid_ld = a[TW_LINEAR_RESID_LD];
    float* out = c.arena + a[TW_LINEAR_OUT_OFF];
    const int out_ld = a[TW_LINEAR_OUT_LD];
    tw_gemv_bf16_tile(x, c.bf16(a[TW_LINEAR_W]), k, a[TW_LINEAR_N0], n1, [&](int n, int r, float v) {
        if (resid >= 0) v += tw_ld(c.arena + resid + r * resid_ld + n);
        out[r * out_ld + n] = v;
    });
}

__device__ void tw_prefetch_linear(const TwCtx& c, const int* a, TwPrefetch& pf) {
    tw_prefetch_rows_bf16(pf, c.bf16(a[TW_LINEAR_W]), a[TW_LINEAR_K], a[TW_LINEAR_N0], a[TW_LINEAR_N1]);
}
