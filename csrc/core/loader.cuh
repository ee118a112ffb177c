// The loader role: one warp per CTA that walks the same queue as the controller, one task
// ahead of it, and streams each task's weights into L2 (core/prefetch.cuh) while the
// compute warps are still busy with, or waiting for, the task before.
//
// Weights never depend on events, so the loader prefetches them as soon as the controller
// has fetched the previous task: during that task's event waits, input staging and
// compute. An expert task's rows depend on its slot table, so for those the loader first
// waits for the task's own events (ROUTE done). The loader never blocks the controller and
// never reports errors: on the abort flag or a wait past the bound it just stops (the
// controller, waiting on the same events, records the error).
#pragma once
#include "core/context.cuh"
#include "core/events.cuh"
#include "core/prefetch.cuh"

// Task instances the loader may run ahead of the controller's fetches (1: the next task).
#ifndef TW_LOADER_AHEAD
#define TW_LOADER_AHEAD 1
#endif

// Counter value wait i of `d` needs at global step `step` (previous step for loop-carried waits).
__device__ __forceinline__ unsigned long long tw_wait_need(const TwDesc& d, int i, long long step) {
    const long long st = step - ((d.wait_prev >> i) & 1);
    return (unsigned long long)d.wait_need[i] * (unsigned long long)st;
}

// All of `d`'s waits hold (polled, bounded; false on abort or past the bound).
__device__ bool tw_loader_wait(const TwDesc& d, long long step, const tw_event_t* counters,
                               unsigned long long bound_ns, volatile int* abort_flag) {
    const unsigned long long start = tw_globaltimer_ns();
    for (int i = 0; i < d.n_wait; ++i) {
        const unsigned long long need = tw_wait_need(d, i, step);
        while (!tw_event_ready(counters + d.wait_event[i], need)) {
            if (tw_aborted(abort_flag) || tw_globaltimer_ns() - start > bound_ns) return false;
            __nanosleep(64);
        }
    }
    return true;
}

// Lane 0 of the loader warp. `fetched` counts the task instances the controller has
// fetched; instance i is prefetched once fetched >= i + 1 - TW_LOADER_AHEAD.
template <class Prefetch, class AfterWaits>
__device__ void tw_loader_run(TwCtx c, const TwDesc* descs, const int* queue, int q0, int q1,
                              const tw_event_t* counters, volatile int* abort_flag, int* fetched,
                              Prefetch prefetch, AfterWaits after_waits) {
    int inst = 0;
    for (int s = 0; s < c.p->n_steps; ++s) {
        c.step = (long long)c.p->step_base + s + 1;
        for (int qi = q0; qi < q1; ++qi, ++inst) {
            while (atomicAdd(fetched, 0) < inst + 1 - TW_LOADER_AHEAD) {   // atomic read: ordered with the controller's atomicExch
                if (tw_aborted(abort_flag)) return;
                __nanosleep(64);
            }
            const TwDesc& d = descs[queue[qi]];
            const int op = d.op;
            if (after_waits(op) && !tw_loader_wait(d, c.step, counters, c.p->wait_bound_ns, abort_flag)) return;
            TwPrefetch pf{TW_PREFETCH_TASK_BYTES};
            prefetch(c, op, d.args, pf);
        }
    }
}
