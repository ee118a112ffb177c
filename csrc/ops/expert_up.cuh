// EXPERT_UP: for the tokens of one slot, act = silu(x Wg^T) * (x Wu^T) on rows n0:n1 of the
// slot's expert (MXFP4), on the shared GEMV executor (core/gemv_task.cuh, gated mode).
//
// One-token steps route inside the task (logits_off >= 0; pipeline TilePolicy.route_in_up):
// every up task builds the slot table from the router logits in its shared memory
// (tw_route_one_token), and the task of slot 0 whose n0 is 0 writes it to the arena for
// EXPERT_DOWN and MOE_COMBINE. Why: a ROUTE task is a stage of fixed latency (its logits'
// round trip, two barriers, the table) that every up task waited for, then read back from
// L2; at T = 1 the table is one warp's top-k, and the logits' round trip replaces the table's.
#pragma once
#include "core/gemv_task.cuh"
#include "ops/route.cuh"
#include "ops/slots.cuh"

#if TW_MAX_T == 1
// All compute threads: the slot's expert and token from the task's own routing; false for
// an unused slot. Only T = 1 builds compile it: the runtime refuses a program of more
// tokens whose up tasks route (runtime/megakernel.py check_routing).
__device__ bool tw_expert_up_route(const TwCtx& c, const int* a, int* expert, int* count) {
    const int e = c.p->num_experts, slot = a[TW_EXPERT_UP_SLOT];
    int* tab = reinterpret_cast<int*>(c.s_scratch + 2 * e);
    tw_route_one_token(c, c.arena + a[TW_EXPERT_UP_LOGITS_OFF], c.bf16(a[TW_EXPERT_UP_W_BIAS]), tab, TW_OP_EXPERT_UP);
    tw_sync();
    if (slot == 0 && a[TW_EXPERT_UP_N0] == 0) {
        int* out = c.arena_i + a[TW_EXPERT_UP_TABLE_OFF];
        for (int i = threadIdx.x; i < 1 + 5 * c.p->top_k; i += TW_THREADS) out[i] = tab[i];   // all 1 + 5k words
    }
    return tw_slot_tokens(c, TwSharedTable{tab}, slot, 1, expert, count);
}
#endif

// False for an unused slot (the task does nothing).
__device__ __forceinline__ bool tw_gemv_expert_up(const TwCtx& c, const int* a, TwGemv& g) {
    const int t = a[TW_EXPERT_UP_T], k = a[TW_EXPERT_UP_K];
    int expert, count;
    c.mark_phase(13);
#if TW_MAX_T == 1
    const bool used = a[TW_EXPERT_UP_LOGITS_OFF] >= 0
                          ? tw_expert_up_route(c, a, &expert, &count)
                          : tw_slot_tokens(c, a[TW_EXPERT_UP_TABLE_OFF], a[TW_EXPERT_UP_SLOT], t, &expert, &count);
#else
    const bool used = tw_slot_tokens(c, a[TW_EXPERT_UP_TABLE_OFF], a[TW_EXPERT_UP_SLOT], t, &expert, &count);
#endif
    if (!used) return false;
    c.mark_phase(8);
    const TwFp4Matrix gm = tw_expert_matrix(c.wt[a[TW_EXPERT_UP_W]], expert, k);
    const TwFp4Matrix um = tw_expert_matrix(c.wt[a[TW_EXPERT_UP_W2]], expert, k);
    g = TwGemv{};
    g.x = c.arena + a[TW_EXPERT_UP_X_OFF];
    g.x_ld = a[TW_EXPERT_UP_X_LD];
    g.n = count;
    g.k = k;
    g.norm = c.vec_or_null(a[TW_EXPERT_UP_W_NORM]);
    g.fmt = TW_FMT_MXFP4;
    g.w = gm.codes;
    g.w_scales = gm.scales;
    g.w2 = um.codes;
    g.w2_scales = um.scales;
    g.n0 = a[TW_EXPERT_UP_N0];
    g.n1 = a[TW_EXPERT_UP_N1];
    g.out = c.arena + a[TW_EXPERT_UP_ACT_OFF];
    g.out_ld = a[TW_EXPERT_UP_ACT_LD];
    g.scatter = true;
    return true;
}

// Once the routing is known: the gate and up rows n0:n1 of the slot's expert.
__device__ void tw_prefetch_expert_up(const TwCtx& c, const int* a, TwPrefetch& pf) {
    if (a[TW_EXPERT_UP_LOGITS_OFF] >= 0) return;   // the task routes for itself: nothing is known yet
    const int expert = tw_slot_expert(c, a[TW_EXPERT_UP_TABLE_OFF], a[TW_EXPERT_UP_SLOT]);
    if (expert < 0) return;
    const int k = a[TW_EXPERT_UP_K], n0 = a[TW_EXPERT_UP_N0], n1 = a[TW_EXPERT_UP_N1];
    const TwFp4Matrix g = tw_expert_matrix(c.wt[a[TW_EXPERT_UP_W]], expert, k);
    const TwFp4Matrix u = tw_expert_matrix(c.wt[a[TW_EXPERT_UP_W2]], expert, k);
    tw_prefetch_rows_mxfp4(pf, g.codes, g.scales, k, n0, n1);
    tw_prefetch_rows_mxfp4(pf, u.codes, u.scales, k, n0, n1);
}
