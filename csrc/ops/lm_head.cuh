// LM_HEAD: logits[t, n0:n1] = norm(x)[t] @ W[n0:n1]^T, plus (max, first argmax) per row of
// the tile, the argmax stored as an exact float (vocab < 2^24). When the step state asks
// for sampling (state_off >= 0, inverse temperature != 0) the maxima are of the sampling
// scores logits * inv_temp + Gumbel(seed, pos + 1 + row, token) (core/counter_rng.cuh);
// the logits are written unperturbed.
#pragma once
#include "core/gemv_task.cuh"
#include "core/counter_rng.cuh"
#include "ops/sample.cuh"

__device__ __forceinline__ TwGemv tw_gemv_lm_head(const TwCtx& c, const int* a) {
    tw_dense_tokens(c, a[TW_LM_HEAD_T]);
    TwGemv g{};
    g.x = c.arena + a[TW_LM_HEAD_X_OFF];
    g.x_ld = a[TW_LM_HEAD_X_LD];
    g.n = a[TW_LM_HEAD_T];
    g.k = a[TW_LM_HEAD_K];
    g.norm = c.vec_or_null(a[TW_LM_HEAD_W_NORM]);
    g.fmt = TW_FMT_BF16;
    g.w = c.bf16(a[TW_LM_HEAD_W]);
    g.n0 = a[TW_LM_HEAD_N0];
    g.n1 = a[TW_LM_HEAD_N1];
    g.out = c.arena + a[TW_LM_HEAD_LOGITS_OFF];
    g.out_ld = a[TW_LM_HEAD_LOGITS_LD];
    return g;
}

// After the GEMV (and a barrier): the tile's (max, first argmax) per row; a row with a NaN
// or infinite logit gets (+inf, TW_NONFINITE_TOKEN) instead, which wins the reduction.
__device__ void tw_lm_head_argmax(const TwCtx& c, const int* a) {
    const int t = a[TW_LM_HEAD_T], n0 = a[TW_LM_HEAD_N0], n1 = a[TW_LM_HEAD_N1];
    const float* logits = c.arena + a[TW_LM_HEAD_LOGITS_OFF];
    const int ld = a[TW_LM_HEAD_LOGITS_LD];
    const int* state = a[TW_LM_HEAD_STATE_OFF] >= 0 ? c.arena_i + a[TW_LM_HEAD_STATE_OFF] : nullptr;
    const float inv_temp = state ? __int_as_float(tw_ldi(state + TW_STATE_INV_TEMP)) : 0.f;
#if TW_HOIST_LOADS
    // Every warp takes a share of every row's columns (a warp per row left the other warps idle
    // and each lane's ~37 loads of a 1156-column tile in a chain of round trips at T = 1), then
    // the warps' (max, first argmax) are reduced in warp order. The same result: the largest
    // value, the lowest column among equals, any non-finite logit flagging its row.
    const unsigned int seed = inv_temp != 0.f ? (unsigned int)tw_ldi(state + TW_STATE_SEED) : 0u;
    const int pos = inv_temp != 0.f ? tw_ldi(state + TW_STATE_POS) : 0;
    float* s_best = c.s_scratch;                                   // [t][TW_WARPS]
    int* s_arg = reinterpret_cast<int*>(s_best + TW_MAX_T * TW_WARPS);
    int* s_bad = s_arg + TW_MAX_T * TW_WARPS;
    const int w = tw_warp(), lane = tw_lane();
    for (int r = 0; r < t; ++r) {
        const unsigned int row_key = inv_temp != 0.f ? tw_rng_row(seed, (unsigned int)(pos + 1 + r)) : 0u;
        float best = -INFINITY;
        int arg = 0x7fffffff;
        bool bad = false;
#pragma unroll 4
        for (int n = n0 + w * 32 + lane; n < n1; n += 32 * TW_WARPS) {
            float v = tw_ld(logits + r * ld + n);
            bad |= !isfinite(v);
            if (inv_temp != 0.f) v = tw_sample_score(v, inv_temp, row_key, (unsigned int)n);
            if (v > best || (v == best && n < arg)) { best = v; arg = n; }
        }
        tw_warp_argmax(best, arg);
        bad = __any_sync(0xffffffffu, bad);
        if (lane == 0) {
            s_best[r * TW_WARPS + w] = best;
            s_arg[r * TW_WARPS + w] = arg;
            s_bad[r * TW_WARPS + w] = bad;
        }
    }
    tw_sync();
    for (int r = threadIdx.x; r < t; r += TW_THREADS) {
        float best = -INFINITY;
        int arg = 0x7fffffff;
        bool bad = false;
        for (int ww = 0; ww < TW_WARPS; ++ww) {
            const float b = s_best[r * TW_WARPS + ww];
            const int g = s_arg[r * TW_WARPS + ww];
            if (b > best || (b == best && g < arg)) { best = b; arg = g; }
            bad |= s_bad[r * TW_WARPS + ww] != 0;
        }
        if (bad) {   // SAMPLE / ARGMAX_ROWS refuse the row (ops/sample.cuh)
            best = INFINITY;
            arg = TW_NONFINITE_TOKEN;
        }
        float* b = c.arena + a[TW_LM_HEAD_BEST_OFF] + r * 2;
        b[0] = best;
        b[1] = (float)arg;
    }
#else
    // Tile max / argmax: a warp per row.
    for (int r = tw_warp(); r < t; r += TW_WARPS) {
        // Row r chooses the token at position pos + 1 + r.
        const unsigned int row_key =
            inv_temp != 0.f ? tw_rng_row((unsigned int)tw_ldi(state + TW_STATE_SEED),
                                         (unsigned int)(tw_ldi(state + TW_STATE_POS) + 1 + r))
                            : 0u;
        float best = -INFINITY;
        int arg = 0x7fffffff;
        bool bad = false;
        for (int n = n0 + tw_lane(); n < n1; n += 32) {
            float v = tw_ld(logits + r * ld + n);
            bad |= !isfinite(v);
            if (inv_temp != 0.f) v = tw_sample_score(v, inv_temp, row_key, (unsigned int)n);
            if (v > best || (v == best && n < arg)) { best = v; arg = n; }
        }
        tw_warp_argmax(best, arg);
        if (__any_sync(0xffffffffu, bad)) {   // SAMPLE / ARGMAX_ROWS refuse the row (ops/sample.cuh)
            best = INFINITY;
            arg = TW_NONFINITE_TOKEN;
        }
        if (tw_lane() == 0) {
            float* b = c.arena + a[TW_LM_HEAD_BEST_OFF] + r * 2;
            b[0] = best;
            b[1] = (float)arg;
        }
    }
#endif
}

__device__ void tw_prefetch_lm_head(const TwCtx& c, const int* a, TwPrefetch& pf) {
    tw_prefetch_rows_bf16(pf, c.bf16(a[TW_LM_HEAD_W]), a[TW_LM_HEAD_K], a[TW_LM_HEAD_N0], a[TW_LM_HEAD_N1]);
}
