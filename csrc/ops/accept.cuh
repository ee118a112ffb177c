// ACCEPT: greedy DFlash acceptance on the device (pipeline/cpu_ops/accept.py). Proposals
// d_1..d_{t-1} at prop_off, the target's choice per verified row c_0..c_{t-1} at
// choice_off: accept d_i while d_i == c_{i-1}; with n accepted, commit d_1..d_n and c_n.
// Writes out row STATE_STEP = [n + 1, committed tokens, -1 padding] (t + 1 words), the
// next anchor c_n to tok_off, and advances the state: position += n + 1, step += 1. With
// hist_off >= 0 the anchor and d_1..d_n first go to the token history at pos.. (COPY_DRAFT).
// (At a temperature the choices are samples; the rule is the same: see accept.py.)
#pragma once
#include "core/context.cuh"

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
