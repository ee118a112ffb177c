// COPY_DRAFT: copy drafting inside the chained DFlash program (pipeline/dflash/copy_draft.py,
// pipeline/cpu_ops/copy_draft.py). The sequence is the token history at 0..pos-1 (the host
// writes it before a launch, ACCEPT extends it) and the anchor tokens[0] at pos. Find, in
// its last TW_COPY_WINDOW tokens, the latest end e < pos + 1 of an earlier occurrence of the
// longest suffix (min_match..max_match tokens); its continuation (round the loop of period
// pos + 1 - e where it reaches the anchor) replaces the first k proposals tokens[1..k], k the
// copy length with the largest expected accepted length: sum_j prod_{i<=j} f_i, f_i = trust
// + (1 - trust) * p_i(copy token) on copied slots, the row's softmax maximum on kept ones
// (largest k among equals; trust in thousandths).
//
// The op sits on the step's critical path (between the draft pass and the verify pass), so
// it is a chain of few L2 round trips: the sequence's last TW_COPY_WINDOW tokens are staged
// in shared memory with 16-byte loads while one warp per draft row takes the row's maximum
// and exp-sum in one pass of 16-byte loads, 8 deep; one barrier; every thread matches its
// ends in shared memory; one barrier; warp 0 scores the copy lengths, lane k the length k.
// (Matching from L2, one load after another along a 16-token match, cost ~50 us a step on
// the H200: docs/perf-notes.md, "COPY_DRAFT".)
#pragma once
#include "core/context.cuh"

// Longest suffix compared, and the tokens searched for it (mirror MAX_MATCH_LIMIT and
// SEARCH_WINDOW in pipeline/dflash/copy_draft.py); the window fits the stage.
#define TW_COPY_MAX_MATCH 64
#define TW_COPY_WINDOW 32768
// Builds that carry the op (mirrors COPY_DRAFT_MAX_T in runtime/megakernel.py): DFlash
// blocks of up to 8 tokens. The 16-token build sits at its 168-register cap, and any body
// for this op in its dispatch made ptxas spill there (20 bytes), so it is left out.
#define TW_COPY_DRAFT_MAX_T 8
// 16-byte loads in flight per lane in a row's pass.
#define TW_COPY_ROW_UNROLL 8

#if TW_MAX_T <= TW_COPY_DRAFT_MAX_T
// (max, sum) of two partial softmax statistics, the sum taken at the larger maximum.
__device__ __forceinline__ void tw_softmax_merge(float& m, float& s, float om, float os) {
    const float nm = fmaxf(m, om);
    if (nm == -INFINITY) return;   // both empty
    s = s * expf(m - nm) + os * expf(om - nm);
    m = nm;
}

// A row's softmax maximum and 1 / sum(exp(l - max)), by one warp in one pass (a running
// maximum per lane, its sum rescaled when the maximum rises), then merged across lanes.
__device__ float2 tw_row_softmax_stats(const float* row, int v) {
    const int lane = tw_lane();
    float m = -INFINITY, s = 0.f;
    const bool vec = (v & 3) == 0 && (reinterpret_cast<unsigned long long>(row) & 15) == 0;
    const int n = vec ? v >> 2 : v;
    for (int j0 = lane; j0 < n; j0 += 32 * TW_COPY_ROW_UNROLL) {
        float4 x[TW_COPY_ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < TW_COPY_ROW_UNROLL; ++u) {
            const int j = j0 + 32 * u;
            const float4 pad = make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
            if (j >= n) x[u] = pad;
            else if (vec) x[u] = __ldcg(reinterpret_cast<const float4*>(row) + j);
            else x[u] = make_float4(tw_ld(row + j), -INFINITY, -INFINITY, -INFINITY);
        }
        float bm = m;
#pragma unroll
        for (int u = 0; u < TW_COPY_ROW_UNROLL; ++u) bm = fmaxf(bm, fmaxf(fmaxf(x[u].x, x[u].y), fmaxf(x[u].z, x[u].w)));
        if (bm == -INFINITY) continue;
        float bs = 0.f;
#pragma unroll
        for (int u = 0; u < TW_COPY_ROW_UNROLL; ++u)
            bs += (expf(x[u].x - bm) + expf(x[u].y - bm)) + (expf(x[u].z - bm) + expf(x[u].w - bm));
        s = s * expf(m - bm) + bs;
        m = bm;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float om = __shfl_xor_sync(0xffffffffu, m, o), os = __shfl_xor_sync(0xffffffffu, s, o);
        tw_softmax_merge(m, s, om, os);
    }
    return make_float2(m, 1.f / s);
}

__device__ void tw_op_copy_draft(const TwCtx& c, const int* a) {
    static_assert(TW_COPY_WINDOW <= TW_STAGE_FLOATS, "the search window is staged in shared memory");
    const int t = a[TW_COPY_DRAFT_T], v = a[TW_COPY_DRAFT_V], ld = a[TW_COPY_DRAFT_LOGITS_LD];
    const int min_m = a[TW_COPY_DRAFT_MIN_MATCH], max_m = min(a[TW_COPY_DRAFT_MAX_MATCH], TW_COPY_MAX_MATCH);
    int* tok = c.arena_i + a[TW_COPY_DRAFT_TOK_OFF];
    const int* hist = c.arena_i + a[TW_COPY_DRAFT_HIST_OFF];
    const float* logits = c.arena + a[TW_COPY_DRAFT_LOGITS_OFF];
    const int pos = c.pos(a[TW_COPY_DRAFT_STATE_OFF]);
    // The window: sequence positions base..pos (the history, then the anchor at pos) in
    // s_seq[0..n]; an occurrence ends at e in (base, pos], e local (seq index - base).
    const int base = max(0, pos + 1 - TW_COPY_WINDOW), n = pos - base;
    int* s_seq = reinterpret_cast<int*>(c.s_stage);
    int* s_best = reinterpret_cast<int*>(c.s_scratch);   // per compute warp: length << 24 | end
    float* s_max = reinterpret_cast<float*>(s_best + TW_WARPS);
    float* s_inv = s_max + TW_COPY_DRAFT_MAX_T;
    {
        const int* src = hist + base;
        const int lead = min(n, (int)((16 - (reinterpret_cast<unsigned long long>(src) & 15)) & 15) / 4);
        const int n4 = (n - lead) / 4;   // 16-byte loads once src + lead is aligned
        for (int i = threadIdx.x; i < n4; i += TW_THREADS) {
            const int4 w = __ldcg(reinterpret_cast<const int4*>(src + lead) + i);
            int* d = s_seq + lead + 4 * i;
            d[0] = w.x, d[1] = w.y, d[2] = w.z, d[3] = w.w;
        }
        for (int i = threadIdx.x; i < lead; i += TW_THREADS) s_seq[i] = tw_ldi(src + i);
        for (int i = lead + 4 * n4 + threadIdx.x; i < n; i += TW_THREADS) s_seq[i] = tw_ldi(src + i);
        if (threadIdx.x == 0) s_seq[n] = tw_ldi(tok);
    }
    for (int r = tw_warp(); r < t - 1; r += TW_WARPS) {
        const float2 st = tw_row_softmax_stats(logits + (long long)r * ld, v);
        if (tw_lane() == 0) { s_max[r] = st.x; s_inv[r] = st.y; }
    }
    tw_sync();

    // Ends e in [1, n]: how many tokens before e equal the suffix's, backwards (the suffix
    // never reaches index 0: an occurrence must end earlier).
    const int suf_n = min(max_m, n);
    int best = 0;
    for (int e = 1 + threadIdx.x; e <= n; e += TW_THREADS) {
        int m = 0;
        while (m < suf_n && m < e && s_seq[e - 1 - m] == s_seq[n - m]) ++m;
        if (m) best = max(best, (m << 24) | e);
    }
    best = __reduce_max_sync(0xffffffffu, best);
    if (tw_lane() == 0) s_best[tw_warp()] = best;
    tw_sync();

    if (tw_warp() != 0) return;
    best = 0;
    for (int w = 0; w < TW_WARPS; ++w) best = max(best, s_best[w]);
    const int len = best >> 24, e = best & 0xffffff;
    if (len < min_m || len == 0) return;
    const int slots = t - 1, period = n + 1 - e, lane = tw_lane();   // a copy that reaches the anchor goes round the loop
    const float trust = (float)a[TW_COPY_DRAFT_TRUST] / 1000.f;
    // Lane i < slots: the copy's token at slot i and that slot's factor when copied.
    int copy_tok = 0;
    float copied = 0.f;
    if (lane < slots) {
        copy_tok = s_seq[e + lane % period];
        const float p = expf(tw_ld(logits + (long long)lane * ld + copy_tok) - s_max[lane]) * s_inv[lane];
        copied = __fadd_rn(trust, __fmul_rn(1.f - trust, p));   // no FMA: as the CPU rounds
    }
    // Lane k <= slots: the expected accepted length when copying k slots, summed in slot order.
    float score = -1.f;
    {
        float sum = 0.f, run = 1.f;
        for (int i = 0; i < slots; ++i) {
            const float f = __shfl_sync(0xffffffffu, copied, i);
            run = __fmul_rn(run, i < lane ? f : s_inv[i]);
            sum = __fadd_rn(sum, run);
        }
        if (lane <= slots) score = sum;
    }
    // The best score, the largest k among equals (the CPU's order: k = 0.. with >=).
    int k_best = lane;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float os = __shfl_xor_sync(0xffffffffu, score, o);
        const int ok = __shfl_xor_sync(0xffffffffu, k_best, o);
        if (os > score || (os == score && ok > k_best)) { score = os; k_best = ok; }
    }
    if (lane < k_best) tok[1 + lane] = copy_tok;
}
#endif
