// DRAFT_EMBED: the DFlash block's input rows, columns c0:c1: row 0 is the target's embedding
// of the anchor (tokens[0]), rows 1..t-1 the drafter's learned mask embedding.
// An anchor outside the table (which the host and ACCEPT never produce) is refused as a
// bad descriptor rather than read out of bounds.
#pragma once
#include "ops/embed.cuh"

__device__ void tw_op_draft_embed(const TwCtx& c, const int* a) {
    const TwWeight& tab = c.weight(a[TW_DRAFT_EMBED_W]);
    const int anchor = tw_ldi(c.arena_i + a[TW_DRAFT_EMBED_TOK_OFF]);
    if (anchor < 0 || anchor >= tab.rows) {
        if (threadIdx.x == 0)
            c.fail(TW_STATUS_BAD_DESCRIPTOR, TW_OP_DRAFT_EMBED, (unsigned long long)(unsigned int)anchor,
                   (unsigned long long)tab.rows);
        return;
    }
    const __nv_bfloat16* row0 = c.bf16(a[TW_DRAFT_EMBED_W]) + (long long)anchor * tab.cols;
    const __nv_bfloat16* mask = c.bf16(a[TW_DRAFT_EMBED_W_MASK]);
    tw_gather_bf16_rows(c.arena + a[TW_DRAFT_EMBED_OUT_OFF], a[TW_DRAFT_EMBED_OUT_LD], a[TW_DRAFT_EMBED_T],
                        a[TW_DRAFT_EMBED_C0], a[TW_DRAFT_EMBED_C1], [&](int r) { return r == 0 ? row0 : mask; });
}
