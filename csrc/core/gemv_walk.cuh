// The software-pipelined walk every GEMV op shares.
//
// A warp owns groups of two weight rows (two output rows, or the gate and up rows of one
// output) and streams each group in chunks (Core::chunks per row). The loads of the next
// chunk (the next group's first, at a row's end) are issued before the FMAs of the
// current one, so a warp always has a chunk of loads in flight: a warp alternating "load,
// wait, compute" leaves HBM idle for the compute half and caps a short task at a fraction
// of the SM's share of bandwidth.
//
// A Core provides: Ptrs (the group's two row pointers, null past the tile), Chunk (the
// registers one chunk of loads fills), chunks(k), load(chunk, ptrs, k, i) and
// fma(chunk, x, i, acc) accumulating acc[row of the pair][input row].
#pragma once
#include "core/rows.cuh"

__device__ __forceinline__ void tw_zero_acc(float (&acc)[2][TW_MAX_T]) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int r = 0; r < TW_MAX_T; ++r) acc[i][r] = 0.f;
}

// Groups first, first + stride, ... < end; rows_of(n) -> Core::Ptrs; finish(n, acc) is
// called by every lane with the warp-reduced sums (acc[i][r] for r < x.n).
template <class Core, class RowsOf, class Finish>
__device__ __forceinline__ void tw_gemv_walk(const TwRows& x, int first, int end, int stride, RowsOf rows_of,
                                             Finish finish) {
    if (first >= end) return;
    const int nc = Core::chunks(x.k);
    int n = first, c = 0;
    typename Core::Ptrs p = rows_of(n);
    typename Core::Chunk cur;
    Core::load(cur, p, x.k, 0);
    float acc[2][TW_MAX_T];
    tw_zero_acc(acc);
    for (;;) {
        int n2 = n, c2 = c + 1;
        if (c2 == nc) {
            c2 = 0;
            n2 = n + stride;
        }
        const bool more = n2 < end;
        typename Core::Ptrs p2 = p;
        typename Core::Chunk nxt;
        if (more) {
            if (n2 != n) p2 = rows_of(n2);
            Core::load(nxt, p2, x.k, c2);
        }
        Core::fma(cur, x, c, acc);
        if (c2 == 0) {
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int r = 0; r < TW_MAX_T; ++r)
                    if (r < x.n) acc[i][r] = tw_warp_sum(acc[i][r]);
            finish(n, acc);
            tw_zero_acc(acc);
        }
        if (!more) break;
        cur = nxt;
        p = p2;
        n = n2;
        c = c2;
    }
}
