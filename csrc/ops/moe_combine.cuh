// MOE_COMBINE: out[t, c0:c1] = resid[t, c0:c1] + sum_j w[t, j] * y[slot(t, j) * T + t, c0:c1],
// summed in choice order j as the reference does.
#pragma once
#include "core/context.cuh"

__device__ void tw_op_moe_combine(const TwCtx& c, const int* a) {
    const int t = a[TW_MOE_COMBINE_T], k = c.p->top_k, slots = min(t * k, c.p->num_experts);
    const int* tab = c.arena_i + a[TW_MOE_COMBINE_TABLE_OFF];
    const int f_slot = 1 + 2 * slots + slots * t, f_weight = f_slot + t * k;
    const int c0 = a[TW_MOE_COMBINE_C0], c1 = a[TW_MOE_COMBINE_C1];
    const float* y = c.arena + a[TW_MOE_COMBINE_Y_OFF];
    const int yld = a[TW_MOE_COMBINE_Y_LD];
    for (int i = threadIdx.x; i < t * (c1 - c0); i += TW_THREADS) {
        const int r = i / (c1 - c0), col = c0 + i % (c1 - c0);
        float acc = tw_ld(c.arena + a[TW_MOE_COMBINE_RESID_OFF] + r * a[TW_MOE_COMBINE_RESID_LD] + col);
        for (int j = 0; j < k; ++j) {
            const int s = tw_ldi(tab + f_slot + r * k + j);
            const float wgt = __int_as_float(tw_ldi(tab + f_weight + r * k + j));
            acc += wgt * tw_ld(y + (s * t + r) * yld + col);
        }
        c.arena[a[TW_MOE_COMBINE_OUT_OFF] + r * a[TW_MOE_COMBINE_OUT_LD] + col] = acc;
    }
}
