// The megakernel's host-visible error record.
//
// A persistent kernel must never hang the GPU (ARCHITECTURE.md, contract 3): when a
// task waits past its bound, meets an op code it does not know, or reads a descriptor
// that makes no sense, the thread that noticed writes ONE record here, raises the abort
// flag so every other CTA stops at its next wait, and returns; the kernel then exits
// and the runtime turns the record into an exception that names the task.
//
// Only the first error is kept: later ones are usually consequences of the first (other
// SMs time out waiting on the task that failed), and the first is the one to debug.
//
// Compiles under NVRTC with no host headers: only built-in types are used.
#pragma once

// Error codes. 0 must stay "ok": the runtime zeroes the record before a launch.
// An enum, not `constexpr int` variables: under NVRTC's -default-device those become
// __device__ globals that take global memory.
enum TwStatusCode : int {
    TW_STATUS_OK = 0,
    TW_STATUS_WAIT_TIMEOUT = 1,    // an event never reached its count in time
    TW_STATUS_BAD_OP = 2,          // a descriptor's op code is unknown
    TW_STATUS_BAD_DESCRIPTOR = 3,  // a descriptor field is out of range
    TW_STATUS_NONFINITE = 4,       // NaN or inf where an op must choose: router scores, logits
    // Transient value while the first reporter fills the other fields. A host that
    // polls the record during a run and sees it knows an error is on its way; once the
    // kernel has stopped the record never holds it.
    TW_STATUS_WRITING = -1,
};

// The record, 40 bytes, 8-byte aligned. Field order and widths are a host contract:
// the runtime reads it with a numpy dtype of the same layout. Byte offsets: code 0,
// sm 4, task 8, event 12, seen 16, needed 24, op 32, pad 36. (NVRTC 12 has no
// offsetof, so only the size and alignment are asserted here.)
struct __align__(8) TwStatus {
    int code;                  // TW_STATUS_*
    int sm;                    // worker index (= blockIdx.x, the Program's per-SM queue)
    int task;                  // task index in that worker's queue, or -1
    int event;                 // event index involved, or -1
    unsigned long long seen;   // counter value last seen (timeouts), else 0
    unsigned long long needed; // counter value waited for (timeouts), else 0
    int op;                    // op code of the task, or -1
    int pad;                   // always 0; keeps the size a multiple of 8
};

static_assert(sizeof(int) == 4, "TwStatus needs 32-bit int");
static_assert(sizeof(unsigned long long) == 8, "TwStatus needs 64-bit unsigned long long");
static_assert(sizeof(TwStatus) == 40, "TwStatus layout is a host contract: 40 bytes");
static_assert(alignof(TwStatus) == 8, "TwStatus layout is a host contract: 8-byte aligned");

// Records an error if none is recorded yet, then raises `abort_flag` (may be null).
//
// Returns true if this call's error is the one recorded. Safe to call from any number
// of threads at once: the claim is an atomicCAS on `code`, so exactly one wins. The
// winner claims with TW_STATUS_WRITING, fills the fields, fences, and only then
// publishes the real code, so a reader that sees a positive code sees the whole record.
// `st` lives in device memory or in host-mapped pinned memory; only GPU threads write it.
inline __device__ __noinline__ bool tw_report_error(TwStatus* st, volatile int* abort_flag, int code,
                                             int task, int event, unsigned long long seen,
                                             unsigned long long needed, int op) {
    const bool first = atomicCAS(&st->code, TW_STATUS_OK, TW_STATUS_WRITING) == TW_STATUS_OK;
    if (first) {
        volatile TwStatus* v = st;
        v->sm = (int)blockIdx.x;
        v->task = task;
        v->event = event;
        v->seen = seen;
        v->needed = needed;
        v->op = op;
        v->pad = 0;
        __threadfence_system();
        atomicExch(&st->code, code);
        __threadfence_system();
    }
    if (abort_flag != nullptr) {
        *abort_flag = 1;
        __threadfence_system();
    }
    return first;
}

// True once any CTA (or the host) has asked the kernel to stop.
__device__ __forceinline__ bool tw_aborted(const volatile int* abort_flag) {
    return abort_flag != nullptr && *abort_flag != 0;
}
