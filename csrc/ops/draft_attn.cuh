// DRAFT_ATTN: one draft kv head, one chunk of key positions; for each query row (block row
// t, head j of the group; row = t * group + j) the partial [max score, sum of exp, sum of
// exp * v], as ATTN_PARTIAL writes it (ATTN_MERGE combines the chunks and adds the sink).
// Keys: draft cache positions lo .. pos+t-1, lo = max(0, pos - window) (0 without a
// window): the context window before the anchor, then the block's own t keys (written by
// DRAFT_ROPE_KV). Chunk c covers lo + c * chunk_len onwards; a chunk past the end writes
// an empty partial. Non-causal: every row sees every key of the range.
#pragma once
#include "ops/attn_partial.cuh"

__device__ void tw_op_draft_attn(const TwCtx& c, const int* a) {
    const TwLayer L = c.layers[a[TW_DRAFT_ATTN_KV]];
    const int t = a[TW_DRAFT_ATTN_T], len = a[TW_DRAFT_ATTN_CHUNK_LEN];
    const int pos = c.pos(a[TW_DRAFT_ATTN_STATE_OFF]);
    const int lo = (L.window < 0 ? 0 : max(0, pos - L.window)) + a[TW_DRAFT_ATTN_CHUNK] * len;
    const int hi = min(lo + len, pos + t);
    tw_attn_partial_rows(c, L, a[TW_DRAFT_ATTN_KVH], t, c.arena + a[TW_DRAFT_ATTN_Q_OFF], a[TW_DRAFT_ATTN_Q_LD], lo,
                         hi, -1, c.arena + a[TW_DRAFT_ATTN_PART_OFF], TW_OP_DRAFT_ATTN);
}
