// Reading a slot table (ROUTE's, or an EXPERT_UP's own) from the expert ops: the slot's
// expert and its token rows (into s_tok), and where an expert's MXFP4 matrix lives.
#pragma once
#include "core/context.cuh"

// Table words as read by the expert ops: ROUTE's table in the arena (another SM wrote
// it: L2 loads), or an EXPERT_UP's own table in shared memory.
struct TwArenaTable {
    const int* p;
    __device__ __forceinline__ int operator[](int i) const { return tw_ldi(p + i); }
};
struct TwSharedTable {
    const int* p;
    __device__ __forceinline__ int operator[](int i) const { return p[i]; }
};

// The slot's expert, or -1 for an unused slot (or an id out of range, which only a
// loader that read the table early could see). Valid once the task's waits hold.
__device__ __forceinline__ int tw_slot_expert(const TwCtx& c, int table_off, int slot) {
    const TwArenaTable tab{c.arena_i + table_off};
    if (slot >= tab[0]) return -1;
    const int e = tab[1 + slot];
    return e >= 0 && e < c.p->num_experts ? e : -1;
}

// All compute threads: false for an unused slot (the task exits); else the slot's
// expert and token count, its token rows in s_tok.
template <class Table>
__device__ bool tw_slot_tokens(const TwCtx& c, Table tab, int slot, int t, int* expert, int* count) {
    const int k = c.p->top_k, slots = min(t * k, c.p->num_experts);
    // Every field's address is known up front: one round trip to L2 for all of them, not
    // three dependent ones (the used count, then the slot's fields, then its tokens).
    // Token entries past the slot's count are stale, never garbage reads: the table holds
    // t entries per slot.
    const int used = tab[0], e = tab[1 + slot], n = tab[1 + slots + slot];
    const int tok = threadIdx.x < t ? tab[1 + 2 * slots + slot * t + threadIdx.x] : 0;
    if (slot >= used) return false;
    *expert = e;
    *count = n;
    if (threadIdx.x < n) c.s_tok[threadIdx.x] = tok;
    tw_sync();
    return true;
}

__device__ __forceinline__ bool tw_slot_tokens(const TwCtx& c, int table_off, int slot, int t, int* expert,
                                               int* count) {
    return tw_slot_tokens(c, TwArenaTable{c.arena_i + table_off}, slot, t, expert, count);
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
