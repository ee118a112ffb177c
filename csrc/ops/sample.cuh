// SAMPLE: greedy token per row from the tiles' (max, argmax), lowest id among equal maxima
// (a global argmax). Writes this step's output row, feeds the token back for the next
// decode step, advances the position and the step count.
#pragma once
#include "core/context.cuh"
#include "core/cp_async.cuh"

// Token ids are below 2^24 (exact as floats); LM_HEAD marks a row whose logits are not all
// finite with this id.
#define TW_NONFINITE_TOKEN (1 << 24)

// Row r's token from tw_tiles_argmax_all, or 0 and the error record for a non-finite row.
__device__ __forceinline__ int tw_tiles_token(const TwCtx& c, int op, const int* s_res, int r) {
    const int tok = s_res[r];
    if (tok >= 0) return tok;
    c.fail(TW_STATUS_NONFINITE, op, (unsigned long long)r, 0);
    return 0;
}

// All compute threads: each row r < t's token from the tiles' (max, first argmax) pairs into
// s_res[r] (-1 for a row flagged non-finite: see tw_tiles_token): the lowest id among the
// tiles' equal maxima, which is what one argmax over the whole row gives. Ends with a
// barrier. The pairs are copied to shared memory in one round of cp.async and a warp
// reduces a row; thread 0 alone reading them in a chain of dependent loads took 11 us a
// step at T = 1 and 65 us at T = 8, this 3.9 and 4.7 (docs/perf-notes.md v17).
__device__ void tw_tiles_argmax_all(const TwCtx& c, const float* best, int n_tiles, int t, int* s_res) {
    float* s_b = c.s_stage;   // [n_tiles * t][2]
    const int n = n_tiles * t * 2;
    if ((n & 3) == 0 && (reinterpret_cast<unsigned long long>(best) & 15) == 0) {
        for (int i = threadIdx.x; i < n / 4; i += TW_THREADS) tw_cp_async16(s_b + 4 * i, best + 4 * i);
        tw_cp_async_commit();
        tw_cp_async_wait<0>();
    } else {
        for (int i = threadIdx.x; i < n; i += TW_THREADS) s_b[i] = tw_ld(best + i);
    }
    tw_sync();
    const int lane = tw_lane();
    for (int r = tw_warp(); r < t; r += TW_WARPS) {
        float bv = -INFINITY, bi = 3.0e38f;
        for (int i = lane; i < n_tiles; i += 32) {
            const float v = s_b[(i * t + r) * 2], id = s_b[(i * t + r) * 2 + 1];
            if (v > bv || (v == bv && id < bi)) { bv = v; bi = id; }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o), oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        if (lane == 0) s_res[r] = bi < (float)TW_NONFINITE_TOKEN ? (int)bi : -1;
    }
    tw_sync();
}

__device__ void tw_op_sample(const TwCtx& c, const int* a) {
    const int t = a[TW_SAMPLE_T], nt = a[TW_SAMPLE_N_TILES];
    const float* best = c.arena + a[TW_SAMPLE_BEST_OFF];
    int* state = c.arena_i + a[TW_SAMPLE_STATE_OFF];
    const int tok_off = a[TW_SAMPLE_TOK_OFF];
    tw_sync();
    int* s_res = reinterpret_cast<int*>(c.s_scratch);
    tw_tiles_argmax_all(c, best, nt, t, s_res);
    if (threadIdx.x == 0) {
        const int step = tw_ldi(state + TW_STATE_STEP);
        const int row = tok_off >= 0 ? step : 0;
        for (int r = 0; r < t; ++r) {
            const int tok = tw_tiles_token(c, TW_OP_SAMPLE, s_res, r);
            c.arena_i[a[TW_SAMPLE_OUT_OFF] + row * t + r] = tok;
            if (tok_off >= 0) c.arena_i[tok_off + r] = tok;
        }
        state[TW_STATE_POS] = tw_ldi(state + TW_STATE_POS) + t;
        state[TW_STATE_STEP] = step + 1;
    }
}
