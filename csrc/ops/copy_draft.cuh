// COPY_DRAFT: copy drafting inside the chained DFlash program (pipeline/dflash/copy_draft.py,
// pipeline/cpu_ops/copy_draft.py). The sequence is the token history at 0..pos-1 (the host
// writes it before a launch, ACCEPT extends it) and the anchor tokens[0] at pos. Find the
// latest end e < pos + 1 of an earlier occurrence of the longest suffix (min_match..max_match
// tokens); its continuation (round the loop of period pos + 1 - e where it reaches the
// anchor) replaces the first k proposals tokens[1..k], k the copy length
// with the largest expected accepted length: sum_j prod_{i<=j} f_i, f_i = trust + (1 - trust)
// * p_i(copy token) on copied slots, the row's softmax maximum on kept ones (largest k among
// equals; trust in thousandths).
// All compute threads: the match lengths over every end (reduced per warp), one warp per
// draft row for its maximum and exp-sum, one barrier, then thread 0 scores the lengths. The
// history, tokens and logits come from other SMs: L2 loads.
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
    // Scratch: per compute warp its best (length << 24 | end), then per draft row its
    // maximum logit, 1 / sum(exp(l - max)) and (thread 0's) copied-slot factor. One
    // barrier: each warp reduces its own ends.
    int* s_best = reinterpret_cast<int*>(c.s_scratch);
    float* s_max = reinterpret_cast<float*>(s_best + TW_WARPS);
    float* s_inv = s_max + TW_COPY_DRAFT_MAX_T;
    float* s_copied = s_inv + TW_COPY_DRAFT_MAX_T;
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

    // Each draft row (slot 1 + r): its maximum and the inverse of its exp-sum.
    for (int r = tw_warp(); r < t - 1; r += TW_WARPS) {
        const float* row = logits + r * ld;
        float mx = -INFINITY;
        for (int j = tw_lane(); j < v; j += 32) mx = fmaxf(mx, tw_ld(row + j));
        mx = tw_warp_max(mx);
        float sum = 0.f;
        for (int j = tw_lane(); j < v; j += 32) sum += expf(tw_ld(row + j) - mx);
        sum = tw_warp_sum(sum);
        if (tw_lane() == 0) { s_max[r] = mx; s_inv[r] = 1.f / sum; }
    }
    tw_sync();

    if (threadIdx.x != 0) return;
    for (int w = 0; w < TW_WARPS; ++w) best = max(best, s_best[w]);
    const int len = best >> 24, e = best & 0xffffff;
    if (len < min_m || len == 0) return;
    const int n = t - 1, period = pos + 1 - e;   // a copy that reaches the anchor goes round the loop
    const float trust = (float)a[TW_COPY_DRAFT_TRUST] / 1000.f;
    for (int i = 0; i < n; ++i) {
        const float p = expf(tw_ld(logits + i * ld + seq(e + i % period)) - s_max[i]) * s_inv[i];
        s_copied[i] = __fadd_rn(trust, __fmul_rn(1.f - trust, p));   // no FMA: as the CPU rounds
    }
    float top = -1.f;
    int k_best = 0;
    for (int k = 0; k <= n; ++k) {
        float score = 0.f, run = 1.f;
        for (int i = 0; i < n; ++i) {
            run = __fmul_rn(run, i < k ? s_copied[i] : s_inv[i]);
            score += run;
        }
        if (score >= top) { top = score; k_best = k; }
    }
    for (int i = 0; i < k_best; ++i) tok[1 + i] = seq(e + i % period);
}
#endif
