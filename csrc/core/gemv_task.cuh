// One GEMV executor for every GEMV op (LINEAR, LINEAR_SWIGLU, LM_HEAD, EXPERT_UP, EXPERT_DOWN).
//
// Each op's file only decodes its descriptor into a TwGemv (input rows, weight rows, the
// epilogue); the dispatcher then runs the single inlined copy of the walk below for bf16
// or MXFP4 weights. Why one copy: a resident kernel switches ops every few microseconds,
// and five inlined walks (~30 KB of SASS each) overflow the SM's instruction cache, so
// every task began with a cold fetch of its code from L2 (~10 us measured as fixed cost
// per task). Shared, the hot loops stay warm from one GEMV task to the next.
#pragma once
#include "core/context.cuh"
#include "core/gemv_desc.cuh"
#include "ops/gemv_bf16.cuh"
#include "ops/gemv_mxfp4.cuh"
#include "core/gemv_walk.cuh"

#ifndef TW_BF16_MMA_MIN_T
#define TW_BF16_MMA_MIN_T 2
#endif

// A walk's sum as the epilogue uses it: times the deferred norm's 1/rms (core/rows.cuh
// TW_NORM_DEFERRED); a macro, so that other builds' code is untouched.
#if TW_NORM_DEFERRED
#define TW_WALK_SUM(v) ((v) * post)
#else
#define TW_WALK_SUM(v) (v)
#endif

// Row pointers of a group: rows n and n + 1 of w, or (gated) row n of w and of w2.
template <class Core>
__device__ __forceinline__ typename Core::Ptrs tw_gemv_group(const TwGemv& g, int n);

template <>
__device__ __forceinline__ TwBf16Core::Ptrs tw_gemv_group<TwBf16Core>(const TwGemv& g, int n) {
    const __nv_bfloat16* w = static_cast<const __nv_bfloat16*>(g.w);
    if (g.w2) return {{w + (long long)n * g.k, static_cast<const __nv_bfloat16*>(g.w2) + (long long)n * g.k}};
    return {{w + (long long)n * g.k, n + 1 < g.n1 ? w + (long long)(n + 1) * g.k : nullptr}};
}

template <class Core, bool PrimeFirst, class StageX>
__device__ __forceinline__ void tw_gemv_run_core(const TwCtx& c, const TwGemv& g, StageX stage_x) {
    const bool gated = g.w2 != nullptr;
    // Gated: a warp group is one output (gate and up rows); else two outputs.
    const int per = gated ? 1 : 2;
    int n_rows = 0;   // the input rows, for the epilogue
#if TW_NORM_DEFERRED
    float post = 1.f;   // the deferred norm's 1/rms (core/rows.cuh)
#endif
    tw_gemv_walk<Core, PrimeFirst>(
        g.k, [&] {
            const TwRows x = stage_x();
            n_rows = x.n;
#if TW_NORM_DEFERRED
            post = x.post;
#endif
            return x;
        },
        g.n0 + per * tw_warp(), g.n1, per * TW_WARPS, [&](int n) { return tw_gemv_group<Core>(g, n); },
        [&](int n, const float (&acc)[2][TW_MAX_T]) {
            if (tw_lane() != 0) return;
            // Phase marks (TW_EXP_MARK): warp 0's first and last output groups done.
            if (n == g.n0) c.mark_phase(21);
            if (n + per * TW_WARPS >= g.n1) c.mark_phase(22);
#pragma unroll
            for (int r = 0; r < TW_MAX_T; ++r) {
                if (r >= n_rows) break;
                float* o = g.out + (long long)(g.scatter ? c.s_tok[r] : r) * g.out_ld;
                if (gated) {
                    o[n] = tw_silu(TW_WALK_SUM(acc[0][r])) * TW_WALK_SUM(acc[1][r]);
                    continue;
                }
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    if (n + i >= g.n1) break;
                    float v = TW_WALK_SUM(acc[i][r]);
                    if (g.resid) v += tw_ld(g.resid + (long long)r * g.resid_ld + n + i);
                    o[n + i] = v;
                }
            }
        },
        tw_warp_ring(c.s_stage));
}

// All compute threads; s_tok holds the input rows' source indices.
__device__ __forceinline__ void tw_gemv_run(const TwCtx& c, const TwGemv& g) {
    // GEMV tasks leave the scratch free: it takes the norm weight when the row fits.
    const bool wn_fits = g.k <= TW_SCRATCH_FLOATS && (g.k & 7) == 0
                         && (reinterpret_cast<unsigned long long>(g.norm) & 15) == 0;
    float* wn_smem = wn_fits ? c.s_scratch : nullptr;
    if (g.fmt == TW_FMT_MXFP4) {
        tw_gemv_mma<TwMmaFp4>(c, g, wn_smem);
        return;
    }
#if TW_MAX_T > 1
    // Two or more tokens (TW_BF16_MMA_MIN_T): bf16 on tensor cores as well, for whole
    // 16-row tiles (the planner aligns T > 1 tiles to 16; any other task takes the walk).
    // Not at T = 1: there the mma core measured slower than the walk (LINEAR 14.7 vs
    // 10.5 us per task, LM_HEAD 322 vs 233 us; docs/perf-notes.md v10).
    if (g.n >= TW_BF16_MMA_MIN_T && ((g.n0 | g.n1) & 15) == 0 && (g.k & 31) == 0 &&
        ((reinterpret_cast<unsigned long long>(g.w) | reinterpret_cast<unsigned long long>(g.w2)) & 15) == 0) {
        tw_gemv_mma<TwMmaBf16>(c, g, wn_smem);
        return;
    }
#endif
    if (TW_ROWS_ASYNC && !TW_EXP_TWICE) {
        // The rows' copies first, the weight ring behind them, then the wait for the rows.
        __nv_bfloat16* wn_raw = reinterpret_cast<__nv_bfloat16*>(wn_smem);
#if TW_EXP_MARK == 18   // timing only: the descriptor decoded, before the first copy
        c.mark_phase(18);
#endif
        tw_rows_issue(g.x, g.x_ld, c.s_tok, g.n, g.k, g.norm, c.s_stage, TW_X_STAGE_FLOATS, wn_raw);
#if TW_EXP_MARK == 14   // #if, not mark_phase: even a call that folds away re-rolled this build
        c.mark_phase(14);
#endif
        tw_gemv_run_core<TwBf16Core, true>(c, g, [&] {
#if TW_EXP_MARK == 15
            c.mark_phase(15);
#endif
            TW_ROWS_LANDED_MARK(c, TW_RING_DEPTH);
#if TW_NORM_DEFERRED
            const TwRows x = tw_rows_finish_deferred(g.x, g.x_ld, c.s_tok, g.n, g.k, g.norm, c.p->rms_eps, c.s_inv,
                                                     c.s_stage, TW_X_STAGE_FLOATS, wn_raw, TW_RING_DEPTH);
#else
            const TwRows x = tw_rows_finish(g.x, g.x_ld, c.s_tok, g.n, g.k, g.norm, c.p->rms_eps, c.s_inv,
                                            c.s_stage, TW_X_STAGE_FLOATS, wn_raw, 1.f, TW_RING_DEPTH);
#endif
            c.mark_phase(0);
            return x;
        });
        return;
    }
    const TwRows x = tw_load_rows(g.x, g.x_ld, c.s_tok, g.n, g.k, g.norm, c.p->rms_eps, c.s_inv, c.s_stage,
                                  TW_X_STAGE_FLOATS, wn_smem, 1.f);
    auto staged = [&] { return x; };
    if (TW_EXP_TWICE) tw_gemv_run_core<TwBf16Core, false>(c, g, staged);
    c.mark_phase(0);
    tw_gemv_run_core<TwBf16Core, false>(c, g, staged);
}

// Dense input rows 0..n-1 (tokens in order): s_tok = identity.
__device__ __forceinline__ void tw_dense_tokens(const TwCtx& c, int n) {
    if (threadIdx.x < n) c.s_tok[threadIdx.x] = threadIdx.x;
    tw_sync();
}
