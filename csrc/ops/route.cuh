// ROUTE: sigmoid router -> slot table (layout: pipeline/graph/ops.py slot_table_fields).
// Choice = top-k of sigmoid(logit) + bias, in descending order, lowest id on ties;
// weights = the chosen unbiased scores / (their sum + 1e-20) (if norm_topk_prob) * the
// routed scaling. Slots are the distinct chosen experts in ascending id order; each slot
// lists its tokens in ascending order. Group-limited routing (n_group > 1) is refused by
// the runtime before launch.
#pragma once
#include "core/context.cuh"

// Experts a warp's lanes hold in registers for the choice: 12 per lane. More per lane
// spilled the T = 8 / 16 builds; the runtime refuses a model with more (runtime/megakernel.py).
#define TW_ROUTE_MAX_EXPERTS 384

// One token's top-k choice, in a warp: the lane's candidates (experts lane + 32 i, i < PER)
// are read once into registers as order keys (0: taken or past e), then each of the k rounds
// is PER register compares and two warp reductions (the largest key, then the lowest id
// holding it). Returns choice `lane` in lanes < k; `nan`: some candidate was NaN (warp-uniform).
template <int PER>
__device__ __forceinline__ int tw_route_choose(const float* score_row, const float* biasf, int e, int k, bool& nan) {
    const int lane = tw_lane();
    unsigned int key[PER];
    bool bad = false;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int x = lane + 32 * i;
        const float ch = x < e ? score_row[x] + biasf[x] : 0.f;
        bad |= ch != ch;
        key[i] = x < e ? tw_order_key(ch) : 0u;
    }
    nan = __any_sync(0xffffffffu, bad);
    int mine = 0;
    for (int j = 0; j < k; ++j) {
        unsigned int best = 0u;
        int arg = 0x7fffffff;
#pragma unroll
        for (int i = 0; i < PER; ++i)
            if (key[i] > best) {   // strictly: the lowest of the lane's ids among equals
                best = key[i];
                arg = lane + 32 * i;
            }
        const unsigned int top = __reduce_max_sync(0xffffffffu, best);
        arg = (int)__reduce_min_sync(0xffffffffu, best == top ? (unsigned int)arg : 0x7fffffffu);
        if (nan || arg >= e) {
            arg = j;   // keeps every index in range while the kernel stops (NaN) or k > e
        } else {
#pragma unroll
            for (int i = 0; i < PER; ++i)
                if (arg == lane + 32 * i) key[i] = 0u;
        }
        if (lane == j) mine = arg;
    }
    return mine;
}

__device__ void tw_op_route(const TwCtx& c, const int* a) {
    const int t = a[TW_ROUTE_T], e = c.p->num_experts, k = c.p->top_k;
    const int slots = min(t * k, e);
    const float* logits = c.arena + a[TW_ROUTE_LOGITS_OFF];
    const __nv_bfloat16* bias = c.bf16(a[TW_ROUTE_W_BIAS]);
    int* tab = c.arena_i + a[TW_ROUTE_TABLE_OFF];
    // scratch: chosen ids [t][k] (int), weights [t][k], per-expert "used" flags [e]
    int* ids = reinterpret_cast<int*>(c.s_scratch);
    float* wts = c.s_scratch + TW_MAX_T * TW_MAX_TOP_K;
    int* used = reinterpret_cast<int*>(c.s_scratch + 2 * TW_MAX_T * TW_MAX_TOP_K);
    float* biasf = c.s_scratch + 2 * TW_MAX_T * TW_MAX_TOP_K + e;   // the choice bias [e], read once
    float* score = biasf + e;                            // sigmoid scores [t][e], computed once
    unsigned int* masks = reinterpret_cast<unsigned int*>(score + t * e);   // used-expert ballots [32]
    // (The runtime checks that 2 * 16 * 8 + 2e + t * e + 32 floats fit TW_SCRATCH_FLOATS.)
    for (int i = threadIdx.x; i < e; i += TW_THREADS) {
        used[i] = 0;
        biasf[i] = tw_bf16(bias[i]);
    }
#if TW_HOIST_LOADS   // core/util.cuh: the loads of several elements before their stores
    for (int i0 = threadIdx.x; i0 < t * e; i0 += TW_HOIST_LOAD_TRIPS * TW_THREADS) {
        float l[TW_HOIST_LOAD_TRIPS];
#pragma unroll
        for (int u = 0; u < TW_HOIST_LOAD_TRIPS; ++u)
            if (i0 + u * TW_THREADS < t * e) l[u] = tw_ld(logits + i0 + u * TW_THREADS);
#pragma unroll
        for (int u = 0; u < TW_HOIST_LOAD_TRIPS; ++u)
            if (i0 + u * TW_THREADS < t * e) score[i0 + u * TW_THREADS] = 1.f / (1.f + expf(-l[u]));
    }
#else
#pragma unroll 4
    for (int i = threadIdx.x; i < t * e; i += TW_THREADS) score[i] = 1.f / (1.f + expf(-tw_ld(logits + i)));
#endif
    tw_sync();
    const int w = tw_warp(), lane = tw_lane();
    const bool norm = c.p->norm_topk_prob;
    const float scaling = c.p->routed_scaling;
    // A warp per token (tw_route_choose); choice j ends in lane j, whose weight is then
    // divided in parallel. ROUTE 8.6 -> 7.5 us at T = 1 with two warp reductions per round
    // (a shuffle argmax took ten dependent shuffles), 6.5 -> 5.5 us on an H200 with the
    // candidates in registers (re-read from shared memory every round before); ranking every
    // expert against all others, a thread each, measured slower (12 us; perf-notes v11, v12).
    for (int r = w; r < t; r += TW_WARPS) {
        bool nan;
        const float* row = score + r * e;
        const int mine = e <= 128   ? tw_route_choose<4>(row, biasf, e, k, nan)
                                    : tw_route_choose<TW_ROUTE_MAX_EXPERTS / 32>(row, biasf, e, k, nan);
        if (nan && lane == 0) c.fail(TW_STATUS_NONFINITE, TW_OP_ROUTE, (unsigned long long)r, 0ull);
        const float sc = lane < k ? score[r * e + mine] : 0.f;
        const float sum = tw_warp_sum(sc);
        if (lane < k) {
            ids[r * TW_MAX_TOP_K + lane] = mine;
            wts[r * TW_MAX_TOP_K + lane] = (norm ? sc / (sum + 1e-20f) : sc) * scaling;
            used[mine] = 1;
        }
    }
    tw_sync();
    // The table, built in parallel (it was a serial pass over every expert by one thread;
    // the op went from ~16 to ~9 us): slot of a used expert = used experts below it, counted from
    // per-32-expert ballots. Loops stay rolled: this code runs once per layer, cold in the
    // instruction cache, so its size is its cost.
    const int f_count = 1 + slots, f_tokens = 1 + 2 * slots, f_slot = 1 + 2 * slots + slots * t;
    const int f_weight = f_slot + t * k, nb = (e + 31) / 32;
    for (int b = w; b < nb; b += TW_WARPS) {
        const unsigned int m = __ballot_sync(0xffffffffu, 32 * b + lane < e && used[32 * b + lane]);
        if (lane == 0) masks[b] = m;
    }
    tw_sync();
    for (int x = threadIdx.x; x < e; x += TW_THREADS) {
        if (!used[x]) continue;
        const int b = x >> 5;
        int n = __popc(masks[b] & ((1u << (x & 31)) - 1u));
#pragma unroll 1
        for (int i = 0; i < b; ++i) n += __popc(masks[i]);
        used[x] = n + 1;   // slot + 1 (read back below, after the barrier)
        tab[1 + n] = x;
        int cnt = 0;
#pragma unroll 1
        for (int r = 0; r < t; ++r) {
            bool hit = false;
            for (int j = 0; j < k; ++j) hit |= ids[r * TW_MAX_TOP_K + j] == x;
            if (hit) tab[f_tokens + n * t + cnt++] = r;
        }
        tab[f_count + n] = cnt;
    }
    if (threadIdx.x == 0) {
        int n = 0;
        for (int i = 0; i < nb; ++i) n += __popc(masks[i]);
        tab[0] = n;
    }
    tw_sync();
    for (int i = threadIdx.x; i < t * k; i += TW_THREADS) {
        const int r = i / k, j = i - r * k;
        tab[f_slot + i] = used[ids[r * TW_MAX_TOP_K + j]] - 1;
        tab[f_weight + i] = __float_as_int(wts[r * TW_MAX_TOP_K + j]);
    }
}
