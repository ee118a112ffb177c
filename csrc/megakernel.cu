// The resident megakernel: one CTA per worker (launched cooperatively, so all are
// resident at once), each running its queue of task descriptors step after step.
//
// Roles in a CTA of TW_CTA_THREADS threads:
// * the controller (thread 0) copies each task descriptor to shared memory and resolves
//   its waits on monotonic event counters: counter >= need * step (the previous step's
//   count for loop-carried waits), every wait bounded in time; after the op it releases
//   the task's signals;
// * the compute warps (TW_WARPS, the controller's among them) run the op, synchronised
//   with named barrier 1 (tw_sync);
// * the loader warp (core/loader.cuh) runs one task ahead, streaming the next task's
//   weights into L2 while the compute warps work or wait.
// A timeout or an unknown op writes the error record, raises the abort flag and ends the
// kernel cleanly.
#include "core/status.cuh"
#include "core/events.cuh"
#include "core/context.cuh"
#include "core/loader.cuh"
#include "ops/embed.cuh"
#include "ops/linear.cuh"
#include "ops/linear_swiglu.cuh"
#include "ops/rope_kv.cuh"
#include "ops/attn_partial.cuh"
#include "ops/attn_merge.cuh"
#include "ops/route.cuh"
#include "ops/expert_up.cuh"
#include "ops/expert_down.cuh"
#include "ops/moe_combine.cuh"
#include "ops/lm_head.cuh"
#include "ops/sample.cuh"
#include "ops/draft_embed.cuh"
#include "ops/draft_rope_kv.cuh"
#include "ops/draft_attn.cuh"
#include "ops/export_hidden.cuh"
#include "ops/argmax_rows.cuh"
#include "ops/accept.cuh"
#include "ops/copy_draft.cuh"

#define TW_TRACE_WORDS 5
// The loader warp's L2 prefetch at all, and for the expert ops (whose rows wait for the
// routing). Off in decode (T = 1) builds: there the step measured 6% faster without it
// (1.649 vs 1.758 ms), the verify step 2.6% slower (4.947 vs 4.824; perf-notes v11). Its
// requests queue in front of the small ops' L2 round trips, which bound a T = 1 step.
#ifndef TW_LOADER
#define TW_LOADER (TW_MAX_T > 1)
#endif
#ifndef TW_PREFETCH_EXPERTS
#define TW_PREFETCH_EXPERTS 1
#endif

// Timing experiment only: the small ops (no weights) run twice, so a traced task holds a
// cold and a warm run; their difference says how much of the op is instruction fetch.
#ifndef TW_EXP_SMALL_TWICE
#define TW_EXP_SMALL_TWICE 0
#endif
__device__ __forceinline__ bool tw_small_op(int op) {
    return op == TW_OP_ROUTE || op == TW_OP_ATTN_MERGE || op == TW_OP_ROPE_KV || op == TW_OP_ATTN_PARTIAL ||
           op == TW_OP_MOE_COMBINE;
}

__device__ __forceinline__ bool tw_known_op(int op) { return op >= TW_OP_EMBED && op <= TW_OP_COPY_DRAFT; }

__device__ __forceinline__ void tw_dispatch(const TwCtx& c, int op, const int* a) {
    // GEMV ops decode into a TwGemv and share one executor (core/gemv_task.cuh).
    TwGemv g;
    bool gemv = false;
#if TW_EXP_MARK == 17   // timing only: the task's op begins (after the waits' barrier)
    c.mark_phase(17);
#endif
    switch (op) {
        case TW_OP_LINEAR: g = tw_gemv_linear(c, a); gemv = true; break;
        case TW_OP_LINEAR_SWIGLU: g = tw_gemv_linear_swiglu(c, a); gemv = true; break;
        case TW_OP_LM_HEAD: g = tw_gemv_lm_head(c, a); gemv = true; break;
        case TW_OP_EXPERT_UP: gemv = tw_gemv_expert_up(c, a, g); break;
        case TW_OP_EXPERT_DOWN: gemv = tw_gemv_expert_down(c, a, g); break;
        case TW_OP_EMBED: tw_op_embed(c, a); break;
        case TW_OP_ROPE_KV: tw_op_rope_kv(c, a); break;
        case TW_OP_ATTN_PARTIAL: tw_op_attn_partial(c, a); break;
        case TW_OP_ATTN_MERGE: tw_op_attn_merge(c, a); break;
        case TW_OP_ROUTE: tw_op_route(c, a); break;
        case TW_OP_MOE_COMBINE: tw_op_moe_combine(c, a); break;
        case TW_OP_SAMPLE: tw_op_sample(c, a); break;
        case TW_OP_DRAFT_EMBED: tw_op_draft_embed(c, a); break;
        case TW_OP_DRAFT_ROPE_KV: tw_op_draft_rope_kv(c, a); break;
        case TW_OP_DRAFT_ATTN: tw_op_draft_attn(c, a); break;
        case TW_OP_EXPORT_HIDDEN: tw_op_export_hidden(c, a); break;
        case TW_OP_ARGMAX_ROWS: tw_op_argmax_rows(c, a); break;
        case TW_OP_ACCEPT: tw_op_accept(c, a); break;
#if TW_MAX_T <= TW_COPY_DRAFT_MAX_T
        case TW_OP_COPY_DRAFT: tw_op_copy_draft(c, a); break;
#endif
        default: break;
    }
    if (gemv) tw_gemv_run(c, g);
    if (op == TW_OP_LM_HEAD) {
        tw_sync();
        tw_lm_head_argmax(c, a);
    }
}

__device__ __forceinline__ void tw_dispatch_prefetch(const TwCtx& c, int op, const int* a, TwPrefetch& pf) {
    switch (op) {
        case TW_OP_LINEAR: tw_prefetch_linear(c, a, pf); break;
        case TW_OP_LINEAR_SWIGLU: tw_prefetch_linear_swiglu(c, a, pf); break;
#if TW_PREFETCH_EXPERTS
        case TW_OP_EXPERT_UP: tw_prefetch_expert_up(c, a, pf); break;
        case TW_OP_EXPERT_DOWN: tw_prefetch_expert_down(c, a, pf); break;
#endif
        case TW_OP_LM_HEAD: tw_prefetch_lm_head(c, a, pf); break;
        case TW_OP_ATTN_PARTIAL: tw_prefetch_attn_partial(c, a, pf); break;
        default: break;
    }
}

// Ops whose weight rows depend on data the task waits for (the routing).
__device__ __forceinline__ bool tw_prefetch_after_waits(int op) {
    return op == TW_OP_EXPERT_UP || op == TW_OP_EXPERT_DOWN;
}

// The block size this build must be launched with (the runtime reads it from the module).
extern "C" __device__ int tw_cta_threads = TW_CTA_THREADS;

extern "C" __global__ void __launch_bounds__(TW_CTA_THREADS, 1) tw_megakernel(const TwParams* __restrict__ pp) {
    extern __shared__ float4 tw_smem[];
    __shared__ TwDesc desc;
    __shared__ int go;
    __shared__ int fetched;   // task instances the controller has fetched (the loader's pace)
    __shared__ unsigned long long body_ns;   // traced: when the task's op began its main loop
#if TW_TABLE_AHEAD
    __shared__ int s_wid[TW_MAX_WEIGHT_ARGS];
    __shared__ TwWeight s_wtab[TW_MAX_WEIGHT_ARGS];
#endif
    const TwParams* p = pp;
    float* smem = reinterpret_cast<float*>(tw_smem);
    TwCtx c;
    c.p = p;
    c.arena = reinterpret_cast<float*>(p->arena);
    c.arena_i = reinterpret_cast<int*>(p->arena);
    c.wt = reinterpret_cast<const TwWeight*>(p->weights);
    c.layers = reinterpret_cast<const TwLayer*>(p->layers);
    // Fixed 16-entry token and norm regions keep the stage 128-byte aligned for any TW_MAX_T.
    c.s_tok = reinterpret_cast<int*>(smem);
    c.s_inv = smem + 16;
    c.s_stage = smem + 32;
    c.s_scratch = c.s_stage + TW_STAGE_FLOATS;

    const TwDesc* descs = reinterpret_cast<const TwDesc*>(p->desc);
    const int* queue = reinterpret_cast<const int*>(p->queue);
    const int* qs = reinterpret_cast<const int*>(p->queue_start);
    tw_event_t* counters = reinterpret_cast<tw_event_t*>(p->counters);
    TwStatus* status = reinterpret_cast<TwStatus*>(p->status);
    volatile int* abort_flag = reinterpret_cast<volatile int*>(p->abort_flag);
    const int q0 = qs[blockIdx.x], q1 = qs[blockIdx.x + 1];
    // Optional trace: per task instance (task | step << 32, fetched, waits resolved, done,
    // body) in ns of %globaltimer, TW_TRACE_WORDS words each, `trace_cap` records per
    // worker; body (0 if the op sets none) is when the op's main loop began, after its
    // prologue (descriptor decode, input staging, norm): see TwCtx::mark_body.
    unsigned long long* trace = reinterpret_cast<unsigned long long*>(p->trace);
    const int trace_cap = trace ? p->trace_cap : 0;
    c.s_body = trace_cap ? &body_ns : nullptr;
    if (threadIdx.x == 0) fetched = 0;
    __syncthreads();   // the only CTA-wide barrier: the roles split here
    if (tw_warp() >= TW_WARPS) {
#if TW_TABLE_AHEAD
        c.s_wid = nullptr;   // the loader runs ahead of the task whose entries the cache holds
#endif
        if (TW_LOADER && tw_lane() == 0)
            tw_loader_run(c, descs, queue, q0, q1, counters, abort_flag, &fetched, tw_dispatch_prefetch,
                          tw_prefetch_after_waits);
        return;
    }
#if TW_TABLE_AHEAD
    c.s_wid = s_wid;
    c.s_wtab = s_wtab;
#endif
    int n_fetched = 0;
    int n_rec = 0;
    unsigned long long t_fetch = 0, t_ready = 0;

    for (int s = 0; s < p->n_steps; ++s) {
        c.step = (long long)p->step_base + s + 1;
        for (int qi = q0; qi < q1; ++qi) {
            if (threadIdx.x == 0) {
                if (trace_cap) {
                    t_fetch = tw_globaltimer_ns();
                    body_ns = 0;
                }
                const int task = queue[qi];
                desc = descs[task];
                atomicExch(&fetched, ++n_fetched);   // an atomic: the loader polls it
#if TW_TABLE_AHEAD
                tw_table_ahead(c.wt, desc.op, desc.args, s_wid, s_wtab);
#endif
                int ok = 1;
                if (!tw_known_op(desc.op)) {
                    tw_report_error(status, abort_flag, TW_STATUS_BAD_OP, task, -1, 0, 0, desc.op);
                    ok = 0;
                }
                for (int i = 0; ok && i < desc.n_wait; ++i) {
                    const int e = (int)desc.wait_event[i];
                    ok = tw_event_wait(counters + e, tw_wait_need(desc, i, c.step), p->wait_bound_ns, abort_flag, status, task, e, desc.op);
                }
                // No fence here or before the signals: the waits' ld.acquire and the
                // signals' red.release are the fences (cumulative through tw_sync, see
                // core/events.cuh); each extra membar.gl sat on the critical path.
                go = ok;
                if (trace_cap) t_ready = tw_globaltimer_ns();
            }
            tw_sync();
            if (!go) return;
            c.task = desc.task;
            tw_dispatch(c, desc.op, desc.args);
            if (TW_EXP_SMALL_TWICE && tw_small_op(desc.op)) {
                tw_sync();
                tw_dispatch(c, desc.op, desc.args);
            }
            tw_sync();
            if (threadIdx.x == 0) {
                for (int i = 0; i < desc.n_signal; ++i) tw_event_signal(counters + desc.signal[i]);
                if (n_rec < trace_cap) {
                    unsigned long long* r = trace + ((long long)blockIdx.x * trace_cap + n_rec++) * TW_TRACE_WORDS;
                    r[0] = (unsigned long long)desc.task | ((unsigned long long)c.step << 32);
                    r[1] = t_fetch;
                    r[2] = t_ready;
                    r[3] = tw_globaltimer_ns();
                    r[4] = body_ns;
                }
            }
        }
    }
}
