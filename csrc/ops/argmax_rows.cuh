// ARGMAX_ROWS: the greedy token of each row from the LM_HEAD tiles' maxima (lowest id among
// equal maxima, as SAMPLE reduces them), as int32 at out_off; the step state is left alone
// (the draft's proposals, the target's choices before ACCEPT).
#pragma once
#include "ops/sample.cuh"

__device__ void tw_op_argmax_rows(const TwCtx& c, const int* a) {
    const int t = a[TW_ARGMAX_ROWS_T];
    int* s_res = reinterpret_cast<int*>(c.s_scratch);
    tw_tiles_argmax_all(c, c.arena + a[TW_ARGMAX_ROWS_BEST_OFF], a[TW_ARGMAX_ROWS_N_TILES], t, s_res);
    if (threadIdx.x < t)
        c.arena_i[a[TW_ARGMAX_ROWS_OUT_OFF] + threadIdx.x] = tw_tiles_token(c, TW_OP_ARGMAX_ROWS, s_res, threadIdx.x);
}
