// The software-pipelined walk every GEMV op shares.
//
// A warp owns groups of two weight rows (two output rows, or the gate and up rows of one
// output) and streams each group in chunks (Core::chunks per row) through its own ring
// of TW_RING_DEPTH shared-memory slots: cp.async copies (core/cp_async.cuh) keep the
// next TW_RING_DEPTH - 1 chunks in flight, across group boundaries, while the warp
// computes one. (Designed for bytes in flight, by Little's law; measured since, the walk
// is bound by its own latency and instructions instead: ring depths 3, 6 and 10 time the
// same, and so does a pass whose weights L2 already holds. docs/perf-notes.md v10.)
//
// A Core provides: Ptrs (the group's two row pointers, null past the tile), Slot (one
// chunk in shared memory), chunks(k), load(slot, ptrs, k, i) issuing the lane's copies of
// chunk i, and fma(slot, x, i, acc) accumulating acc[row of the pair][input row].
#pragma once
#include "core/rows.cuh"
#include "core/cp_async.cuh"

// Ring geometry: slots of TW_RING_SLOT_BYTES (the bf16 core's Slot) per warp, at the end
// of the stage; the input rows get the rest of it (TW_X_STAGE_FLOATS). Fewer slots for
// more tokens: their staged rows need the room.
#ifndef TW_RING_SLOT_BYTES
#define TW_RING_SLOT_BYTES 2048
#endif
#ifndef TW_RING_DEPTH
#if TW_MAX_T >= 16
#define TW_RING_DEPTH 2
#elif TW_MAX_T > 1
#define TW_RING_DEPTH 4
#else
#define TW_RING_DEPTH 6
#endif
#endif
#define TW_RING_FLOATS (TW_WARPS * TW_RING_DEPTH * TW_RING_SLOT_BYTES / 4)
#define TW_X_STAGE_FLOATS (TW_STAGE_FLOATS - TW_RING_FLOATS)

// This warp's ring (the stage is 16-byte aligned and slots are multiples of 16 bytes).
__device__ __forceinline__ unsigned char* tw_warp_ring(float* stage) {
    return reinterpret_cast<unsigned char*>(stage + TW_X_STAGE_FLOATS) + tw_warp() * TW_RING_DEPTH * TW_RING_SLOT_BYTES;
}

__device__ __forceinline__ void tw_zero_acc(float (&acc)[2][TW_MAX_T]) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int r = 0; r < TW_MAX_T; ++r) acc[i][r] = 0.f;
}

// Groups first, first + stride, ... < end over k inputs; rows_of(n) -> Core::Ptrs;
// finish(n, acc) is called by every lane with the warp-reduced sums (acc[i][r] for r < x.n).
// stage_x() returns the input rows; every compute thread calls it once (it holds barriers),
// before the ring is primed or, with PrimeFirst, after: the rows' copies then already head
// the queue (TW_ROWS_ASYNC) and stage_x waits for them alone.
template <class Core, bool PrimeFirst, class StageX, class RowsOf, class Finish>
__device__ __forceinline__ void tw_gemv_walk(int k, StageX stage_x, int first, int end, int stride,
                                             RowsOf rows_of, Finish finish, unsigned char* ring) {
    static_assert(sizeof(typename Core::Slot) <= TW_RING_SLOT_BYTES, "a chunk must fit a ring slot");
    const int nc = Core::chunks(k);
    auto slot = [&](int s) -> typename Core::Slot& {
        return *reinterpret_cast<typename Core::Slot*>(ring + s * TW_RING_SLOT_BYTES);
    };
    // The load cursor (group ln, chunk lc) runs TW_RING_DEPTH chunks ahead. Every refill
    // commits a group, empty past the end, so wait_group counts stay uniform.
    int ln = first, lc = 0;
    typename Core::Ptrs lp = rows_of(first);
    auto refill = [&](int s) {
        if (ln < end) {
            Core::load(slot(s), lp, k, lc);
            if (++lc == nc) {
                lc = 0;
                ln += stride;
                if (ln < end) lp = rows_of(ln);
            }
        }
        tw_cp_async_commit();
    };
    TwRows x;
    if (!PrimeFirst) x = stage_x();
#pragma unroll
    for (int s = 0; s < TW_RING_DEPTH; ++s) refill(s);   // commits even with no group (uniform counts)
    if (PrimeFirst) x = stage_x();
    if (first >= end) {
        tw_cp_async_wait<0>();
        return;
    }
    float acc[2][TW_MAX_T];
    tw_zero_acc(acc);
    for (int n = first, c = 0, s = 0;;) {
        tw_cp_async_wait<TW_RING_DEPTH - 1>();   // this lane's copies of slot s have landed
        Core::fma(slot(s), x, c, acc);
        if (++c == nc) {
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int r = 0; r < TW_MAX_T; ++r)
                    if (r < x.n) acc[i][r] = tw_warp_sum(acc[i][r]);
            finish(n, acc);
            tw_zero_acc(acc);
            c = 0;
            n += stride;
            if (n >= end) break;
        }
        // Slot s was just read by this lane alone (shared loads long done by the time a
        // global copy lands); refill it with the chunk TW_RING_DEPTH ahead.
        refill(s);
        s = s + 1 == TW_RING_DEPTH ? 0 : s + 1;
    }
    tw_cp_async_wait<0>();   // nothing left in flight (only empty groups remain) before the ring is reused
}
