// Small device helpers shared by the ops: bf16 <-> fp32, L2-only loads of activations,
// warp reductions, the CTA shape.
//
// Activations and the KV cache are written by other SMs during the step, so they are
// read with ld.global.cg (L2, never a possibly stale L1 line). Weights never change
// during a launch and go through the read-only path.
#pragma once
#include <cuda_bf16.h>

// The compute warps: every op runs on these TW_THREADS threads, and synchronises them
// with tw_sync() (named barrier 1), never __syncthreads(): the CTA also holds the loader
// warp (csrc/core/loader.cuh), which runs its own loop and never joins an op's barriers.
// 11 + 1 warps: each of the SM's 4 schedulers has 16K registers, so 3 warps per scheduler
// cap a thread at 168 registers, which every T bucket fits without spilling; a 13th warp
// would cap it at 128 (the T = 16 build spills there). Why not 7 + 1 (255 registers):
// the GEMV and expert bodies are bound by latency, not by bytes (perf-notes v10), and 11
// compute warps cut the mimo-mini T = 1 step from 2.03 to 1.79 ms.
#ifndef TW_THREADS
#define TW_THREADS 352
#endif
#define TW_WARPS (TW_THREADS / 32)
#define TW_LOADER_WARPS 1
#define TW_CTA_THREADS (TW_THREADS + 32 * TW_LOADER_WARPS)
// Most tokens one step carries. The runtime compiles one kernel per program shape with
// TW_MAX_T = T rounded up to a power of two, so a decode kernel (T = 1) has no loops over
// 16 rows it never uses: smaller code, fewer instruction-cache misses, faster compiles.
#ifndef TW_MAX_T
#define TW_MAX_T 16
#endif
// Most experts a token chooses (runtime/megakernel.py refuses a model with more).
#define TW_MAX_TOP_K 8

// Small ops issue the loads of TW_HOIST_LOAD_TRIPS elements a thread before the first of
// their stores (1), not element by element (0: each store may alias the next element's
// loads, so every trip of a thread's loop is one L2 round trip after the last).
#ifndef TW_HOIST_LOADS
#define TW_HOIST_LOADS 0
#endif
#define TW_HOIST_LOAD_TRIPS (TW_MAX_T >= 16 ? 2 : 4)   // 4 spilled the 16-token build (92 bytes)
// An experiment switch S whose new path is chosen at run time: 0 off, 1 on, 2 the placebo
// (the new code is built but its branch also needs n < 0, which never holds), so an A/B
// can tell what the code does to the rest of the binary from what it does as work
// (docs/perf-notes.md v16: the build lottery). n: a count from the task's arguments.
#define TW_SWITCH_TAKEN(S, n) ((S) == 1 || ((S) == 2 && (n) < 0))
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ __forceinline__ void tw_sync() { asm volatile("bar.sync 1, %0;" : : "n"(TW_THREADS) : "memory"); }

__device__ __forceinline__ float tw_bf16(const __nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ float tw_ld(const float* p) { return __ldcg(p); }
__device__ __forceinline__ int tw_ldi(const int* p) { return __ldcg(p); }

// Two bf16 packed in a word -> two floats.
__device__ __forceinline__ float2 tw_bf16x2(unsigned int w) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}

// 4 bf16 (8 bytes, 8-byte aligned; shared or global memory) -> 4 floats.
__device__ __forceinline__ float4 tw_bf16x4(const __nv_bfloat16* p) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p);
    const float2 a = tw_bf16x2(raw.x), b = tw_bf16x2(raw.y);
    return make_float4(a.x, a.y, b.x, b.y);
}

// 8 bf16 (16 bytes, read-only path) -> 8 floats.
__device__ __forceinline__ void tw_bf16x8(const __nv_bfloat16* p, float out[8]) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

__device__ __forceinline__ float tw_silu(float g) { return g / (1.f + expf(-g)); }

__device__ __forceinline__ float tw_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float tw_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ int tw_warp() { return threadIdx.x >> 5; }
__device__ __forceinline__ int tw_lane() { return threadIdx.x & 31; }

// An unsigned key in the order of the float (for __reduce_max_sync): sign-flipped
// magnitude bits, with -0 taken as +0 so that equal floats have equal keys.
__device__ __forceinline__ unsigned int tw_order_key(float f) {
    const unsigned int b = __float_as_uint(f == 0.f ? 0.f : f);
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

// Warp-wide argmax: the largest value, the lowest index among equals (as a global argmax).
__device__ __forceinline__ void tw_warp_argmax(float& best, int& arg) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int oa = __shfl_xor_sync(0xffffffffu, arg, o);
        if (ob > best || (ob == best && oa < arg)) { best = ob; arg = oa; }
    }
}
