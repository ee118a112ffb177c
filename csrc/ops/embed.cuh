// EMBED: x[t, c0:c1] = E[tokens[t], c0:c1] (bf16 table -> fp32 arena).
#pragma once
#include "core/context.cuh"

__device__ void tw_op_embed(const TwCtx& c, const int* a) {
    const int t = a[TW_EMBED_T], c0 = a[TW_EMBED_C0], c1 = a[TW_EMBED_C1];
    const __nv_bfloat16* table = c.bf16(a[TW_EMBED_W]);
    const int cols = c.wt[a[TW_EMBED_W]].cols;
    for (int i = threadIdx.x; i < t * (c1 - c0); i += TW_THREADS) {
        const int r = i / (c1 - c0), col = c0 + i % (c1 - c0);
        const int tok = tw_ldi(c.arena_i + a[TW_EMBED_TOK_OFF] + r);
        c.arena[a[TW_EMBED_OUT_OFF] + r * a[TW_EMBED_OUT_LD] + col] = tw_bf16(table[(long long)tok * cols + col]);
    }
}
