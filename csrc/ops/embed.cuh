// EMBED: x[t, c0:c1] = E[tokens[t], c0:c1] (bf16 table -> fp32 arena).
#pragma once
#include "core/context.cuh"

// out[r, c0:c1] = row(r)[c0:c1] for rows r < t, `row(r)` a bf16 row (widened to fp32).
// Shared with DRAFT_EMBED.
template <class Row>
__device__ __forceinline__ void tw_gather_bf16_rows(float* out, int ld, int t, int c0, int c1, Row row) {
    const int w = c1 - c0;
#if TW_HOIST_LOADS   // core/util.cuh: the loads of several elements before their stores
    for (int i0 = threadIdx.x; i0 < t * w; i0 += TW_HOIST_LOAD_TRIPS * TW_THREADS) {
        float v[TW_HOIST_LOAD_TRIPS];
#pragma unroll
        for (int u = 0; u < TW_HOIST_LOAD_TRIPS; ++u) {
            const int i = i0 + u * TW_THREADS, r = i / w;
            if (i < t * w) v[u] = tw_bf16(row(r)[c0 + i % w]);
        }
#pragma unroll
        for (int u = 0; u < TW_HOIST_LOAD_TRIPS; ++u) {
            const int i = i0 + u * TW_THREADS, r = i / w;
            if (i < t * w) out[r * ld + c0 + i % w] = v[u];
        }
    }
#else
    for (int i = threadIdx.x; i < t * w; i += TW_THREADS) {
        const int r = i / w, col = c0 + i % w;
        out[r * ld + col] = tw_bf16(row(r)[col]);
    }
#endif
}

__device__ void tw_op_embed(const TwCtx& c, const int* a) {
    const __nv_bfloat16* table = c.bf16(a[TW_EMBED_W]);
    const int cols = c.weight(a[TW_EMBED_W]).cols;
    const int* tok = c.arena_i + a[TW_EMBED_TOK_OFF];
    tw_gather_bf16_rows(c.arena + a[TW_EMBED_OUT_OFF], a[TW_EMBED_OUT_LD], a[TW_EMBED_T], a[TW_EMBED_C0],
                        a[TW_EMBED_C1], [&](int r) { return table + (long long)tw_ldi(tok + r) * cols; });
}
