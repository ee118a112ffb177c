// Reading a slot table (written by ROUTE) from the expert ops: the slot's expert and
// its token rows (into s_tok), and where an expert's MXFP4 matrix lives.
#pragma once
#include "core/context.cuh"

// The slot's expert, or -1 for an unused slot (or an id out of range, which only a
// loader that read the table early could see). Valid once the task's waits hold.
__device__ __forceinline__ int tw_slot_expert(const TwCtx& c, int table_off, int slot) {
    const int* tab = c.arena_i + table_off;
    if (slot >= tw_ldi(tab)) return -1;
    const int e = tw_ldi(tab + 1 + slot);
    return e >= 0 && e < c.p->num_experts ? e : -1;
}

// All compute threads: false for an unused slot (the task exits); else the slot's
// expert and token count, its token rows in s_tok.
__device__ bool tw_slot_tokens(const TwCtx& c, int table_off, int slot, int t, int* expert, int* count) {
    const int k = c.p->top_k, slots = min(t * k, c.p->num_experts);
    const int* tab = c.arena_i + table_off;
    // Every field's address is known up front: one round trip to L2 for all of them, not
    // three dependent ones (the used count, then the slot's fields, then its tokens).
    // Token entries past the slot's count are stale, never garbage reads: the table holds
    // t entries per slot.
    const int used = tw_ldi(tab), e = tw_ldi(tab + 1 + slot), n = tw_ldi(tab + 1 + slots + slot);
    const int tok = threadIdx.x < t ? tw_ldi(tab + 1 + 2 * slots + slot * t + threadIdx.x) : 0;
    if (slot >= used) return false;
    *expert = e;
    *count = n;
    if (threadIdx.x < n) c.s_tok[threadIdx.x] = tok;
    tw_sync();
    return true;
}

// One expert's matrix of an MXFP4 expert weight (codes [E, N, k/2], scales [E, N, k/32]).
struct TwFp4Matrix {
    const unsigned char* codes;
    const unsigned char* scales;
};

__device__ __forceinline__ TwFp4Matrix tw_expert_matrix(const TwWeight& w, int expert, int k) {
    return {reinterpret_cast<const unsigned char*>(w.a) + expert * ((long long)w.rows * (k / 2)),
            reinterpret_cast<const unsigned char*>(w.b) + expert * ((long long)w.rows * (k / 32))};
}
