// SAMPLE: greedy token per row from the tiles' (max, argmax), lowest id among equal maxima
// (a global argmax). Writes this step's output row, feeds the token back for the next
// decode step, advances the position and the step count.
#pragma once
#include "core/context.cuh"

// Token ids are below 2^24 (exact as floats); LM_HEAD marks a row whose logits are not all
// finite with this id.
#define TW_NONFINITE_TOKEN (1 << 24)

// Row r's token from n_tiles tiles of (max, argmax as float) rows [tile][t][2]: the lowest
// id among the tiles' equal maxima, which is what one argmax over the whole row gives.
// Shared with ARGMAX_ROWS. A row with a non-finite logit (or no finite maximum) is
// refused: the error record names the op and the row, and the row gets token 0 while
// the kernel stops, so nothing downstream indexes past the vocabulary.
__device__ __forceinline__ int tw_tile_argmax(const TwCtx& c, int op, const float* best, int n_tiles, int t, int r) {
    float bv = -INFINITY, bi = 3.0e38f;
    for (int i = 0; i < n_tiles; ++i) {
        const float v = tw_ld(best + (i * t + r) * 2), id = tw_ld(best + (i * t + r) * 2 + 1);
        if (v > bv || (v == bv && id < bi)) { bv = v; bi = id; }
    }
    if (!(bi < (float)TW_NONFINITE_TOKEN)) {
        c.fail(TW_STATUS_NONFINITE, op, (unsigned long long)r, 0);
        return 0;
    }
    return (int)bi;
}

__device__ void tw_op_sample(const TwCtx& c, const int* a) {
    const int t = a[TW_SAMPLE_T], nt = a[TW_SAMPLE_N_TILES];
    const float* best = c.arena + a[TW_SAMPLE_BEST_OFF];
    int* state = c.arena_i + a[TW_SAMPLE_STATE_OFF];
    const int tok_off = a[TW_SAMPLE_TOK_OFF];
    tw_sync();
    if (threadIdx.x == 0) {
        const int step = tw_ldi(state + TW_STATE_STEP);
        const int row = tok_off >= 0 ? step : 0;
        for (int r = 0; r < t; ++r) {
            const int tok = tw_tile_argmax(c, TW_OP_SAMPLE, best, nt, t, r);
            c.arena_i[a[TW_SAMPLE_OUT_OFF] + row * t + r] = tok;
            if (tok_off >= 0) c.arena_i[tok_off + r] = tok;
        }
        state[TW_STATE_POS] = tw_ldi(state + TW_STATE_POS) + t;
        state[TW_STATE_STEP] = step + 1;
    }
}
