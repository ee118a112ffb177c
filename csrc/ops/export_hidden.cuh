// EXPORT_HIDDEN: out[t, c0:c1] = x[t, c0:c1]. The verify step copies the output of each
// target layer the drafter reads into its column block of one [T, K*H] matrix (out_off
// points at that block): the input of the drafter's fc projection. x was written by other
// SMs: L2 loads, 16 bytes at a time where the columns allow.
#pragma once
#include "core/context.cuh"

__device__ void tw_op_export_hidden(const TwCtx& c, const int* a) {
    const int t = a[TW_EXPORT_HIDDEN_T], c0 = a[TW_EXPORT_HIDDEN_C0], c1 = a[TW_EXPORT_HIDDEN_C1];
    const int xld = a[TW_EXPORT_HIDDEN_X_LD], old = a[TW_EXPORT_HIDDEN_OUT_LD];
    const float* x = c.arena + a[TW_EXPORT_HIDDEN_X_OFF] + c0;
    float* out = c.arena + a[TW_EXPORT_HIDDEN_OUT_OFF] + c0;
    const bool vec = ((c1 - c0) & 3) == 0 && (xld & 3) == 0 && (old & 3) == 0 &&
                     ((reinterpret_cast<unsigned long long>(x) | reinterpret_cast<unsigned long long>(out)) & 15) == 0;
    const int v = vec ? 4 : 1, w = (c1 - c0) / v;
    for (int i = threadIdx.x; i < t * w; i += TW_THREADS) {
        const int r = i / w, col = (i % w) * v;
        if (vec)
            *reinterpret_cast<float4*>(out + r * old + col) =
                __ldcg(reinterpret_cast<const float4*>(x + r * xld + col));
        else
            out[r * old + col] = tw_ld(x + r * xld + col);
    }
}
