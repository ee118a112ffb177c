// What every op sees: the launch parameters, the arena, the weight and layer tables, and
// the CTA's shared memory carved into fixed regions.
#pragma once
#include "core/status.cuh"
#include "core/events.cuh"
#include "generated/abi.h"
#include "generated/ops.h"
#include "core/util.cuh"
#include "core/rows.cuh"

#define TW_SCRATCH_FLOATS (12 * 1024)
#ifndef TW_EXP_MARK
#define TW_EXP_MARK 0
#endif
#define TW_SMEM_BYTES ((32 + TW_STAGE_FLOATS + TW_SCRATCH_FLOATS) * 4)   // see runtime/megakernel.py SMEM_BYTES
// Candidate (off): TW_TABLE_AHEAD=1 has the controller copy the weight-table entries a task
// names (tw_op_weight_args) into shared memory before its waits, and TwCtx::weight read
// them there. Why: a bf16 GEMV task spent 0.35 us between its start and its first copy
// (docs/perf-notes.md v18 1), the weight table's L2 round trip, which the waits' acquire
// leaves on every task's path (it invalidates L1); ahead of the waits it costs nothing.
#ifndef TW_TABLE_AHEAD
#define TW_TABLE_AHEAD 0
#endif

struct TwCtx {
    const TwParams* p;
    float* arena;
    int* arena_i;
    const TwWeight* wt;
    const TwLayer* layers;
    int* s_tok;        // [TW_MAX_T]
    float* s_inv;      // [TW_MAX_T]
    float* s_stage;    // [TW_STAGE_FLOATS]
    float* s_scratch;  // [TW_SCRATCH_FLOATS]
    long long step;    // 1-based global step number of this iteration
    int task;          // the running task (error records name it)
    unsigned long long* s_body;   // traced launches: the task's body mark (shared), else nullptr
#if TW_TABLE_AHEAD
    const int* s_wid;            // the running task's weight ids [TW_MAX_WEIGHT_ARGS] (-1: none), or nullptr
    const TwWeight* s_wtab;      // and their table entries (shared memory)
#endif

    // Thread 0, after a barrier that ends the op's prologue: the trace's body mark.
    __device__ __forceinline__ void mark_body() const {
        if (s_body && threadIdx.x == 0) *s_body = tw_globaltimer_ns();
    }

    // Timing experiment only (TW_EXP_MARK = k): phase k of an op takes the body mark, so
    // the trace's prologue is the time from the task's start to that phase.
    __device__ __forceinline__ void mark_phase(int k) const {
        if (TW_EXP_MARK == k) mark_body();
    }

    // One thread: record an op's error for the host (core/status.cuh) and raise the abort
    // flag; the op then finishes without touching memory out of range.
    __device__ void fail(int code, int op, unsigned long long seen, unsigned long long needed) const {
        tw_report_error(reinterpret_cast<TwStatus*>(p->status), reinterpret_cast<volatile int*>(p->abort_flag), code,
                        task, -1, seen, needed, op);
    }

    // Entry `wid` of the weight table.
    __device__ __forceinline__ const TwWeight& weight(int wid) const {
#if TW_TABLE_AHEAD
        if (s_wid)
#pragma unroll
            for (int j = 0; j < TW_MAX_WEIGHT_ARGS; ++j)
                if (s_wid[j] == wid) return s_wtab[j];
#endif
        return wt[wid];
    }
    __device__ const __nv_bfloat16* bf16(int wid) const {
        return reinterpret_cast<const __nv_bfloat16*>(weight(wid).a);
    }
    __device__ const __nv_bfloat16* vec_or_null(int wid) const { return wid >= 0 ? bf16(wid) : nullptr; }
    __device__ int pos(int state_off) const { return tw_ldi(arena_i + state_off + TW_STATE_POS); }
};

// Timing experiment only (TW_EXP_MARK = 16): the body mark once a GEMV task's input rows
// have landed (their copies are older than `newer` commit groups), before the norm pass;
// tw_rows_finish's own wait then finds them there. A macro, so that other builds' code is
// untouched (even an empty inline call re-rolled the register allocation).
#if TW_EXP_MARK == 16
#define TW_ROWS_LANDED_MARK(c, newer) (tw_cp_async_wait_n(newer), tw_sync(), (c).mark_phase(16))
#else
#define TW_ROWS_LANDED_MARK(c, newer) ((void)0)
#endif

#if TW_TABLE_AHEAD
// Thread 0, once the task's descriptor is in shared memory and before its waits: the
// table entries of its weight arguments into the cache TwCtx::weight reads. The table does
// not change during a launch, so reading it ahead of the waits' acquire is safe.
__device__ __forceinline__ void tw_table_ahead(const TwWeight* wt, int op, const int* args, int* s_wid,
                                               TwWeight* s_wtab) {
    int j = 0;
    for (unsigned int m = tw_op_weight_args(op); m; m &= m - 1) {
        const int wid = args[__ffs(m) - 1];
        if (wid < 0) continue;
        s_wtab[j] = wt[wid];
        s_wid[j++] = wid;
    }
    for (; j < TW_MAX_WEIGHT_ARGS; ++j) s_wid[j] = -1;
}
#endif
