// LINEAR: out[t, n0:n1] = norm?(x)[t] @ W[n0:n1]^T (+ resid[t, n0:n1]); bf16 weights.
#pragma once
#include "ops/gemv_bf16.cuh"

__device__ void tw_op_linear(const TwCtx& c, const int* a) {
    const int t = a[TW_LINEAR_T], k = a[TW_LINEAR_K], n1 = a[TW_LINEAR_N1];
    const TwRows x = tw_dense_rows(c, a[TW_LINEAR_X_OFF], a[TW_LINEAR_X_LD], t, k, a[TW_LINEAR_W_NORM]);
    const __nv_bfloat16* w = c.bf16(a[TW_LINEAR_W]);
    const int resid = a[TW_LINEAR_RESID_OFF];
    for (int n = a[TW_LINEAR_N0] + 2 * tw_warp(); n < n1; n += 2 * TW_WARPS) {
        const __nv_bfloat16* rows[2];
        tw_row_pair(w, k, n, n1, rows);
        float acc[2][TW_MAX_T];
        tw_gemv_bf16<2>(x, rows, acc);
        if (tw_lane() == 0) {
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                if (n + i >= n1) break;
#pragma unroll
                for (int r = 0; r < TW_MAX_T; ++r) {
                    if (r < t) {
                        float y = acc[i][r];
                        if (resid >= 0) y += tw_ld(c.arena + resid + r * a[TW_LINEAR_RESID_LD] + n + i);
                        c.arena[a[TW_LINEAR_OUT_OFF] + r * a[TW_LINEAR_OUT_LD] + n + i] = y;
                    }
                }
            }
        }
    }
}
