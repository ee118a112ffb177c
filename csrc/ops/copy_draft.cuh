// COPY_DRAFT: copy drafting inside the chained DFlash program (pipeline/dflash/copy_draft.py,
// pipeline/cpu_ops/copy_draft.py). The sequence is the token history at 0..pos-1 (the host
// writes it before a launch, ACCEPT extends it) and the anchor tokens[0] at pos. Find the
// latest end e < pos + 1 of an earlier occurrence of the longest suffix (min_match..max_match
// tokens); then, slot by slot, the tokens from e on replace the drafter's argmax proposals
// tokens[1..t-1] until a slot whose draft row is confident (softmax maximum >= confident /
// 1000, i.e. confident * sum(exp(l - max)) <= 1000) of another token.
// All compute threads: the match lengths over every end (reduced per warp), one warp per
// draft row, one barrier, then thread 0 writes the copy. The history, tokens and logits come
// from other SMs: L2 loads.
#pragma once
#include "core/context.cuh"

// Longest suffix compared; mirrors MAX_MATCH_LIMIT in pipeline/dflash/copy_draft.py.
#define TW_COPY_MAX_MATCH 64
// Builds that carry the op (mirrors COPY_DRAFT_MAX_T in runtime/megakernel.py): DFlash
// blocks of up to 8 tokens. The 16-token build sits at its 168-register cap, and any body
// for this op in its dispatch made ptxas spill there (20 bytes), so it is left out.
#define TW_COPY_DRAFT_MAX_T 8

#if TW_MAX_T <= TW_COPY_DRAFT_MAX_T
__device__ void tw_op_copy_draft(const TwCtx& c, const int* a) {
    const int t = a[TW_COPY_DRAFT_T], v = a[TW_COPY_DRAFT_V], ld = a[TW_COPY_DRAFT_LOGITS_LD];
    const int min_m = a[TW_COPY_DRAFT_MIN_MATCH], max_m = min(a[TW_COPY_DRAFT_MAX_MATCH], TW_COPY_MAX_MATCH);
    int* tok = c.arena_i + a[TW_COPY_DRAFT_TOK_OFF];
    const int* hist = c.arena_i + a[TW_COPY_DRAFT_HIST_OFF];
    const float* logits = c.arena + a[TW_COPY_DRAFT_LOGITS_OFF];
    const int pos = c.pos(a[TW_COPY_DRAFT_STATE_OFF]);
    const int anchor = tw_ldi(tok);
    // seq(i): the history below pos, the anchor at pos.
    auto seq = [&](int i) { return i < pos ? tw_ldi(hist + i) : anchor; };
    // Scratch words: per compute warp its best (length << 24 | end), then one confidence
    // flag per draft row. One barrier: each warp reduces its own ends.
    int* s_best = reinterpret_cast<int*>(c.s_scratch);
    int* s_conf = s_best + TW_WARPS;
    const int suf_n = min(max_m, pos);   // the suffix never reaches index 0 (an occurrence must end earlier)

    // Ends e in [1, pos]: how many tokens before e equal the suffix's, backwards.
    int best = 0;
    for (int e = 1 + threadIdx.x; e <= pos; e += TW_THREADS) {
        int m = 0;
        while (m < suf_n && m < e && tw_ldi(hist + e - 1 - m) == seq(pos - m)) ++m;
        if (m) best = max(best, (m << 24) | e);
    }
    best = __reduce_max_sync(0xffffffffu, best);
    if (tw_lane() == 0) s_best[tw_warp()] = best;

    // Confidence of each draft row (slot 1 + r): the softmax maximum of its logits.
    for (int r = tw_warp(); r < t - 1; r += TW_WARPS) {
        const float* row = logits + r * ld;
        float mx = -INFINITY;
        for (int j = tw_lane(); j < v; j += 32) mx = fmaxf(mx, tw_ld(row + j));
        mx = tw_warp_max(mx);
        float sum = 0.f;
        for (int j = tw_lane(); j < v; j += 32) sum += expf(tw_ld(row + j) - mx);
        sum = tw_warp_sum(sum);
        if (tw_lane() == 0) s_conf[r] = sum * (float)a[TW_COPY_DRAFT_CONFIDENT] <= 1000.f;
    }
    tw_sync();

    if (threadIdx.x != 0) return;
    for (int w = 0; w < TW_WARPS; ++w) best = max(best, s_best[w]);
    const int len = best >> 24, e = best & 0xffffff;
    if (len < min_m || len == 0) return;
    for (int i = 0; i < t - 1 && e + i <= pos; ++i) {
        const int src = seq(e + i);
        if (s_conf[i] && tw_ldi(tok + 1 + i) != src) break;
        tok[1 + i] = src;
    }
}
#endif
