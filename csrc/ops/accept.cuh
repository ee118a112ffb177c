// ACCEPT: greedy DFlash acceptance on the device (pipeline/cpu_ops/accept.py). Proposals
// d_1..d_{t-1} at prop_off, the target's choice per verified row c_0..c_{t-1} at
// choice_off: accept d_i while d_i == c_{i-1}; with n accepted, commit d_1..d_n and c_n.
// Writes out row STATE_STEP = [n + 1, committed tokens, -1 padding] (t + 1 words), the
// next anchor c_n to tok_off, and advances the state: position += n + 1, step += 1. With
// hist_off >= 0 the anchor and d_1..d_n first go to the token history at pos.. (COPY_DRAFT).
// (At a temperature the choices are samples; the rule is the same: see accept.py.)
#pragma once
#include "core/context.cuh"

#if TW_HOIST_LOADS
// Warp 0, every load in one round trip (core/util.cuh TW_HOIST_LOADS): thread 0 alone walked
// the proposals and then copied them, one load after another (~20 round trips a DFlash
// step, on its critical path). Lane i holds proposal i and choice i; the accepted count is
// the first mismatch (a ballot); the writes go out in parallel. The same words as below.
__device__ void tw_op_accept(const TwCtx& c, const int* a) {
    if (tw_warp() != 0) return;
    const int lane = tw_lane(), t = a[TW_ACCEPT_T];
    int* state = c.arena_i + a[TW_ACCEPT_STATE_OFF];
    int* tok = c.arena_i + a[TW_ACCEPT_TOK_OFF];
    const int hist_off = a[TW_ACCEPT_HIST_OFF];
    const int p = lane < t - 1 ? tw_ldi(c.arena_i + a[TW_ACCEPT_PROP_OFF] + lane) : 0;
    const int ch = lane < t ? tw_ldi(c.arena_i + a[TW_ACCEPT_CHOICE_OFF] + lane) : 0;
    const int step = tw_ldi(state + TW_STATE_STEP), pos = tw_ldi(state + TW_STATE_POS);
    const int anchor = hist_off >= 0 && lane == 0 ? tw_ldi(tok) : 0;
    const unsigned int miss = __ballot_sync(0xffffffffu, lane < t - 1 && p != ch);
    const int n = miss ? __ffs(miss) - 1 : t - 1;   // proposals accepted
    const int next = __shfl_sync(0xffffffffu, ch, n);
    if (hist_off >= 0) {
        int* hist = c.arena_i + hist_off + pos;
        if (lane == 0) hist[0] = anchor;
        if (lane < n) hist[1 + lane] = p;
    }
    int* row = c.arena_i + a[TW_ACCEPT_OUT_OFF] + step * a[TW_ACCEPT_OUT_LD];
    if (lane < t) row[1 + lane] = lane < n ? p : lane == n ? next : -1;
    if (lane == 0) {
        row[0] = n + 1;
        *tok = next;
        state[TW_STATE_POS] = pos + n + 1;
        state[TW_STATE_STEP] = step + 1;
    }
}
#else
__device__ void tw_op_accept(const TwCtx& c, const int* a) {
    if (threadIdx.x != 0) return;
    const int t = a[TW_ACCEPT_T];
    const int* prop = c.arena_i + a[TW_ACCEPT_PROP_OFF];
    const int* choice = c.arena_i + a[TW_ACCEPT_CHOICE_OFF];
    int* state = c.arena_i + a[TW_ACCEPT_STATE_OFF];
    const int step = tw_ldi(state + TW_STATE_STEP);
    int* row = c.arena_i + a[TW_ACCEPT_OUT_OFF] + step * a[TW_ACCEPT_OUT_LD];
    int n = 0;
    while (n < t - 1 && tw_ldi(prop + n) == tw_ldi(choice + n)) ++n;
    const int next = tw_ldi(choice + n);
    if (a[TW_ACCEPT_HIST_OFF] >= 0) {
        int* hist = c.arena_i + a[TW_ACCEPT_HIST_OFF] + tw_ldi(state + TW_STATE_POS);
        hist[0] = tw_ldi(c.arena_i + a[TW_ACCEPT_TOK_OFF]);
        for (int i = 0; i < n; ++i) hist[1 + i] = tw_ldi(prop + i);
    }
    row[0] = n + 1;
    for (int i = 0; i < t; ++i) row[1 + i] = i < n ? tw_ldi(prop + i) : i == n ? next : -1;
    c.arena_i[a[TW_ACCEPT_TOK_OFF]] = next;
    state[TW_STATE_POS] = tw_ldi(state + TW_STATE_POS) + n + 1;
    state[TW_STATE_STEP] = step + 1;
}
#endif
