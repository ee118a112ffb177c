// Reading a slot table (written by ROUTE) from the expert ops: the slot's expert and
// its token rows (into s_tok). Returns false for an unused slot (the task exits).
#pragma once
#include "core/context.cuh"

__device__ bool tw_slot_tokens(const TwCtx& c, int table_off, int slot, int t, int* expert, int* count) {
    const int k = c.p->top_k, slots = min(t * k, c.p->num_experts);
    const int* tab = c.arena_i + table_off;
    const int used = tw_ldi(tab);
    if (slot >= used) return false;
    *expert = tw_ldi(tab + 1 + slot);
    *count = tw_ldi(tab + 1 + slots + slot);
    if (threadIdx.x < *count) c.s_tok[threadIdx.x] = tw_ldi(tab + 1 + 2 * slots + slot * t + threadIdx.x);
    __syncthreads();
    return true;
}
