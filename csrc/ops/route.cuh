// ROUTE: sigmoid router -> slot table (layout: pipeline/graph/ops.py slot_table_fields).
// Choice = top-k of sigmoid(logit) + bias, in descending order, lowest id on ties;
// weights = the chosen unbiased scores / (their sum + 1e-20) (if norm_topk_prob) * the
// routed scaling. Slots are the distinct chosen experts in ascending id order; each slot
// lists its tokens in ascending order. Group-limited routing (n_group > 1) is refused by
// the runtime before launch.
#pragma once
#include "core/context.cuh"

__device__ void tw_op_route(const TwCtx& c, const int* a) {
    const int t = a[TW_ROUTE_T], e = c.p->num_experts, k = c.p->top_k;
    const int slots = min(t * k, e);
    const float* logits = c.arena + a[TW_ROUTE_LOGITS_OFF];
    const __nv_bfloat16* bias = c.bf16(a[TW_ROUTE_W_BIAS]);
    int* tab = c.arena_i + a[TW_ROUTE_TABLE_OFF];
    // scratch: chosen ids [t][k] (int), weights [t][k], per-expert "used" flags [e]
    int* ids = reinterpret_cast<int*>(c.s_scratch);
    float* wts = c.s_scratch + TW_MAX_T * 8;
    int* used = reinterpret_cast<int*>(c.s_scratch + 2 * TW_MAX_T * 8);
    float* biasf = c.s_scratch + 2 * TW_MAX_T * 8 + e;   // the choice bias [e], read once
    float* score = biasf + e;                            // sigmoid scores [t][e], computed once
    // (The runtime checks that 2 * 16 * 8 + 2e + t * e floats fit TW_SCRATCH_FLOATS.)
    for (int i = threadIdx.x; i < e; i += TW_THREADS) {
        used[i] = 0;
        biasf[i] = tw_bf16(bias[i]);
    }
    for (int i = threadIdx.x; i < t * e; i += TW_THREADS) score[i] = 1.f / (1.f + expf(-tw_ld(logits + i)));
    tw_sync();
    const int w = tw_warp(), lane = tw_lane();
    for (int r = w; r < t; r += TW_WARPS) {
        float sum = 0.f;
        unsigned int taken = 0;   // bit i: expert lane + 32 * i already chosen (E <= 1024)
        for (int j = 0; j < k; ++j) {
            float best = -INFINITY;
            int arg = 0x7fffffff;
            for (int x = lane; x < e; x += 32) {
                if ((taken >> (x >> 5)) & 1u) continue;
                const float ch = score[r * e + x] + biasf[x];   // shared memory only: k passes
                if (ch > best || (ch == best && x < arg)) { best = ch; arg = x; }
            }
            tw_warp_argmax(best, arg);
            if ((arg & 31) == lane) taken |= 1u << (arg >> 5);
            const float sc = score[r * e + arg];
            sum += sc;
            if (lane == 0) {
                ids[r * 8 + j] = arg;
                wts[r * 8 + j] = sc;
                used[arg] = 1;
            }
        }
        if (lane == 0) {
            for (int j = 0; j < k; ++j) {
                float v = wts[r * 8 + j];
                if (c.p->norm_topk_prob) v = v / (sum + 1e-20f);
                wts[r * 8 + j] = v * c.p->routed_scaling;
            }
        }
    }
    tw_sync();
    if (threadIdx.x == 0) {
        const int f_expert = 1, f_count = 1 + slots, f_tokens = 1 + 2 * slots, f_slot = 1 + 2 * slots + slots * t;
        const int f_weight = f_slot + t * k;
        int n = 0;
        for (int x = 0; x < e; ++x) {
            if (!used[x]) continue;
            used[x] = n + 1;  // slot + 1
            tab[f_expert + n] = x;
            int cnt = 0;
            for (int r = 0; r < t; ++r) {
                bool hit = false;
                for (int j = 0; j < k; ++j) hit |= ids[r * 8 + j] == x;
                if (hit) tab[f_tokens + n * t + cnt++] = r;
            }
            tab[f_count + n] = cnt;
            ++n;
        }
        tab[0] = n;
        for (int r = 0; r < t; ++r)
            for (int j = 0; j < k; ++j) {
                tab[f_slot + r * k + j] = used[ids[r * 8 + j]] - 1;
                tab[f_weight + r * k + j] = __float_as_int(wts[r * 8 + j]);
            }
    }
}
