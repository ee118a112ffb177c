// MOE_COMBINE: out[t, c0:c1] = resid[t, c0:c1] + sum_j w[t, j] * y[slot(t, j) * T + t, c0:c1],
// summed in choice order j as the reference does.
#pragma once
#include "core/context.cuh"

__device__ void tw_op_moe_combine(const TwCtx& c, const int* a) {
    const int t = a[TW_MOE_COMBINE_T], k = c.p->top_k, slots = min(t * k, c.p->num_experts);
    const int* tab = c.arena_i + a[TW_MOE_COMBINE_TABLE_OFF];
    const int f_slot = 1 + 2 * slots + slots * t, f_weight = f_slot + t * k;
    const int c0 = a[TW_MOE_COMBINE_C0], w = a[TW_MOE_COMBINE_C1] - c0;
    const float* y = c.arena + a[TW_MOE_COMBINE_Y_OFF];
    const int yld = a[TW_MOE_COMBINE_Y_LD];
    // Every (token, choice)'s slot and weight, once, into shared memory: then an output
    // element's k reads of y go out together. Read per element, each choice was a slot
    // load and then a y load, 2k L2 round trips in a row (~23 us per task at T = 8).
    int* s_slot = reinterpret_cast<int*>(c.s_scratch);
    float* s_w = c.s_scratch + TW_MAX_T * TW_MAX_TOP_K;
    for (int i = threadIdx.x; i < t * k; i += TW_THREADS) {
        s_slot[i] = tw_ldi(tab + f_slot + i);
        s_w[i] = __int_as_float(tw_ldi(tab + f_weight + i));
    }
    tw_sync();
#if TW_HOIST_LOADS
    const float* resid = c.arena + a[TW_MOE_COMBINE_RESID_OFF];
    const int rld = a[TW_MOE_COMBINE_RESID_LD];
    float* out = c.arena + a[TW_MOE_COMBINE_OUT_OFF];
    const int old = a[TW_MOE_COMBINE_OUT_LD];
    // TW_HOIST_LOAD_TRIPS elements a thread, every load issued before the first store: a
    // store may alias the next element's loads, so element by element each trip was one
    // L2 round trip after the last (3 at T = 8).
    for (int i0 = threadIdx.x; i0 < t * w; i0 += TW_HOIST_LOAD_TRIPS * TW_THREADS) {
        float yv[TW_HOIST_LOAD_TRIPS][TW_MAX_TOP_K], rv[TW_HOIST_LOAD_TRIPS];
#pragma unroll
        for (int u = 0; u < TW_HOIST_LOAD_TRIPS; ++u) {
            const int i = i0 + u * TW_THREADS, r = i / w, col = c0 + i - r * w;
            if (i >= t * w) break;
#pragma unroll
            for (int j = 0; j < TW_MAX_TOP_K; ++j)
                if (j < k) yv[u][j] = tw_ld(y + (s_slot[r * k + j] * t + r) * yld + col);
            rv[u] = tw_ld(resid + r * rld + col);
        }
#pragma unroll
        for (int u = 0; u < TW_HOIST_LOAD_TRIPS; ++u) {
            const int i = i0 + u * TW_THREADS, r = i / w, col = c0 + i - r * w;
            if (i >= t * w) break;
            float acc = rv[u];
#pragma unroll
            for (int j = 0; j < TW_MAX_TOP_K; ++j)
                if (j < k) acc += s_w[r * k + j] * yv[u][j];
            out[r * old + col] = acc;
        }
    }
#else
    for (int i = threadIdx.x; i < t * w; i += TW_THREADS) {
        const int r = i / w, col = c0 + i - r * w;
        float yv[TW_MAX_TOP_K];
#pragma unroll
        for (int j = 0; j < TW_MAX_TOP_K; ++j)
            if (j < k) yv[j] = tw_ld(y + (s_slot[r * k + j] * t + r) * yld + col);
        float acc = tw_ld(c.arena + a[TW_MOE_COMBINE_RESID_OFF] + r * a[TW_MOE_COMBINE_RESID_LD] + col);
#pragma unroll
        for (int j = 0; j < TW_MAX_TOP_K; ++j)
            if (j < k) acc += s_w[r * k + j] * yv[j];
        c.arena[a[TW_MOE_COMBINE_OUT_OFF] + r * a[TW_MOE_COMBINE_OUT_LD] + col] = acc;
    }
#endif
}
