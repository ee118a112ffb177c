// LINEAR_SWIGLU: out[t, n0:n1] = silu(norm?(x) Wg^T) * (norm?(x) Wu^T); bf16 weights. A warp
// streams the gate row and the up row of one output together.
#pragma once
#include "ops/gemv_bf16.cuh"

__device__ void tw_op_linear_swiglu(const TwCtx& c, const int* a) {
    const int t = a[TW_LINEAR_SWIGLU_T], k = a[TW_LINEAR_SWIGLU_K];
    const TwRows x = tw_dense_rows(c, a[TW_LINEAR_SWIGLU_X_OFF], a[TW_LINEAR_SWIGLU_X_LD], t, k,
                                   a[TW_LINEAR_SWIGLU_W_NORM]);
    const __nv_bfloat16* wg = c.bf16(a[TW_LINEAR_SWIGLU_W]);
    const __nv_bfloat16* wu = c.bf16(a[TW_LINEAR_SWIGLU_W2]);
    float* out = c.arena + a[TW_LINEAR_SWIGLU_OUT_OFF];
    const int ld = a[TW_LINEAR_SWIGLU_OUT_LD];
    tw_gemv_walk<TwBf16Core>(
        x, a[TW_LINEAR_SWIGLU_N0] + tw_warp(), a[TW_LINEAR_SWIGLU_N1], TW_WARPS,
        [&](int n) { return TwBf16Core::Ptrs{{wg + (long long)n * k, wu + (long long)n * k}}; },
        [&](int n, const float (&acc)[2][TW_MAX_T]) {
            if (tw_lane() != 0) return;
#pragma unroll
            for (int r = 0; r < TW_MAX_T; ++r)
                if (r < t) out[r * ld + n] = tw_silu(acc[0][r]) * acc[1][r];
        });
}

__device__ void tw_prefetch_linear_swiglu(const TwCtx& c, const int* a, TwPrefetch& pf) {
    const int k = a[TW_LINEAR_SWIGLU_K], n0 = a[TW_LINEAR_SWIGLU_N0], n1 = a[TW_LINEAR_SWIGLU_N1];
    tw_prefetch_rows_bf16(pf, c.bf16(a[TW_LINEAR_SWIGLU_W]), k, n0, n1);
    tw_prefetch_rows_bf16(pf, c.bf16(a[TW_LINEAR_SWIGLU_W2]), k, n0, n1);
}
