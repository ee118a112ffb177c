// Monotonic event counters: how tasks on different SMs order themselves.
//
// Contract 3 of ARCHITECTURE.md: a task waits until `counter[e] >= need` (the caller
// passes need = per-step count * step number) and signals with a release increment;
// nothing is ever zeroed between steps, so no reset can race a late reader.
//
// Counters are 64-bit. A 32-bit counter would wrap after 2^32 signals: with ~10^4
// signals per decode step and ~10^3 steps a second that is about seven minutes of
// serving, and `>=` is wrong across a wrap. 64 bits never wrap in practice, and the
// 64-bit atomics cost the same as 32-bit ones on sm_90.
//
// Memory ordering is plain PTX (`red.release.gpu`, `ld.acquire.gpu`), so nothing beyond
// NVRTC's built-ins is needed (no libcu++). The usual pattern:
//   producer CTA: all threads store results; __syncthreads() (or a named barrier over
//                 the producing warps); ONE thread calls tw_event_signal.
//   consumer CTA: ONE thread calls tw_event_wait; then a barrier over the consuming
//                 warps; they may now read the producer's data.
// Release/acquire at gpu scope are cumulative through the CTA barriers, so this is
// enough for every thread on both sides. Counters must live in device global memory.
// (Cross-GPU flags written over NVLink need .sys scope; they are not these counters.)
//
// Every wait is bounded by %globaltimer: past `bound_ns` it records a
// TW_STATUS_WAIT_TIMEOUT error (status.cuh), raises the abort flag and returns false,
// and the caller must then stop fetching work and exit. A wait also returns false as
// soon as it sees the abort flag raised by another CTA or by the host.
#pragma once

#include "core/status.cuh"

typedef unsigned long long tw_event_t;

// Polling backoff: the first polls spin, then __nanosleep doubles from MIN to MAX.
// Low MAX keeps wake-up latency low (decode steps are tens of microseconds); a
// build may override these with -D.
#ifndef TW_WAIT_SPIN_POLLS
#define TW_WAIT_SPIN_POLLS 32
#endif
#ifndef TW_WAIT_SLEEP_MIN_NS
#define TW_WAIT_SLEEP_MIN_NS 32
#endif
#ifndef TW_WAIT_SLEEP_MAX_NS
#define TW_WAIT_SLEEP_MAX_NS 512
#endif

// Nanoseconds from the GPU's global timer (same clock on every SM).
__device__ __forceinline__ unsigned long long tw_globaltimer_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// Acquire load of a counter: later reads cannot be satisfied before it.
__device__ __forceinline__ tw_event_t tw_event_load(const tw_event_t* counter) {
    tw_event_t v;
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(counter) : "memory");
    return v;
}

// Release increment by `n`: every write this thread made or observed (through a
// barrier) before the call is visible to whoever acquires the new value.
__device__ __forceinline__ void tw_event_signal_n(tw_event_t* counter, tw_event_t n) {
    asm volatile("red.release.gpu.global.add.u64 [%0], %1;" : : "l"(counter), "l"(n) : "memory");
}

// Release increment by one: the task that produced this event is done.
__device__ __forceinline__ void tw_event_signal(tw_event_t* counter) {
    tw_event_signal_n(counter, 1ull);
}

// Non-blocking check, for a controller that polls several waits round-robin.
__device__ __forceinline__ bool tw_event_ready(const tw_event_t* counter, tw_event_t need) {
    return tw_event_load(counter) >= need;
}

// Waits until *counter >= need, at most bound_ns nanoseconds.
//
// Returns true when the count is reached. Returns false when the abort flag is raised
// (someone else already recorded an error) or when the bound passes, in which case this
// call records TW_STATUS_WAIT_TIMEOUT with (task, event, seen, need, op) first. The
// fast path (already reached) costs one acquire load and no timer read.
__device__ __forceinline__ bool tw_event_wait(const tw_event_t* counter, tw_event_t need,
                                              unsigned long long bound_ns,
                                              volatile int* abort_flag, TwStatus* st,
                                              int task, int event, int op) {
    tw_event_t seen = tw_event_load(counter);
    if (seen >= need) return true;
    const unsigned long long start = tw_globaltimer_ns();
    unsigned int sleep_ns = TW_WAIT_SLEEP_MIN_NS;
    for (unsigned int polls = 0;; ++polls) {
        if (polls >= TW_WAIT_SPIN_POLLS) {
            __nanosleep(sleep_ns);
            if (sleep_ns < TW_WAIT_SLEEP_MAX_NS) sleep_ns <<= 1;
        }
        seen = tw_event_load(counter);
        if (seen >= need) return true;
        if (tw_aborted(abort_flag)) return false;
        if (tw_globaltimer_ns() - start > bound_ns) {
            tw_report_error(st, abort_flag, TW_STATUS_WAIT_TIMEOUT, task, event, seen, need, op);
            return false;
        }
    }
}
