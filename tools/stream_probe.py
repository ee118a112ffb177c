"""How fast can one SM stream weights? A probe outside the megakernel, for design choices.

Every CTA (one per SM, 12 warps, 11 of them streaming like the GEMV walk's compute warps)
reads `--kb` KB of its own contiguous range and touches every byte once, by one of:

* `cpasync`: per-warp ring of 2 KB slots fed by 16-byte cp.async per lane (the walk's
  path today, core/gemv_walk.cuh), `--depth` slots in flight;
* `bulk`: per-warp ring fed by the bulk-copy engine (cp.async.bulk, one lane issues a
  slot's copy and the slot's mbarrier counts its bytes), `--depth` slots of `--slot` bytes;
* `ldg`: 16-byte loads into registers, 8 in flight per lane (what a copy kernel does).

Each CTA stamps %globaltimer at its start and end; the table gives the stage-like wall
(first start to last end), the median CTA, and GB/s over the wall. `cold` reads a fresh
range each repeat (HBM), `hot` the same range (L2, when it fits).

    python3 -P tools/stream_probe.py --kb 160 --kb 1024
"""

from __future__ import annotations

import argparse
import statistics

SRC = r"""
typedef unsigned long long u64;
__device__ __forceinline__ u64 now() { u64 t; asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t)); return t; }
__device__ __forceinline__ unsigned sa(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
#define WARPS 11

extern "C" __global__ void __launch_bounds__(384, 1)
k_cpasync(const uint4* __restrict__ w, long long bytes, int depth, u64* t, unsigned* sink) {
    extern __shared__ uint4 sm[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();
    if (threadIdx.x == 0) t[2 * blockIdx.x] = now();
    unsigned acc = 0;
    if (warp < WARPS) {
        const uint4* base = w + (long long)blockIdx.x * (bytes / 16);
        const long long nchunks = bytes / 2048;   // 2 KB: 4 x 16 B per lane
        uint4* ring = sm + warp * depth * 128;
        long long issued = warp, used = warp;
        auto issue = [&](int s) {   // the warp's next chunk into slot s; a group either way
            if (issued < nchunks)
                for (int u = 0; u < 4; ++u)
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(sa(ring + s * 128 + u * 32 + lane)),
                                 "l"(base + issued * 128 + u * 32 + lane) : "memory");
            asm volatile("cp.async.commit_group;" ::: "memory");
            issued += WARPS;
        };
        for (int s = 0; s < depth; ++s) issue(s);
        for (int s = 0; used < nchunks; used += WARPS) {
            if (depth == 8) asm volatile("cp.async.wait_group 7;" ::: "memory");
            else asm volatile("cp.async.wait_group 5;" ::: "memory");
            for (int u = 0; u < 4; ++u) {
                const uint4 v = ring[s * 128 + u * 32 + lane];
                acc ^= v.x ^ v.y ^ v.z ^ v.w;
            }
            issue(s);
            s = s + 1 == depth ? 0 : s + 1;
        }
        asm volatile("cp.async.wait_group 0;" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x == 0) t[2 * blockIdx.x + 1] = now();
    if (acc == 0x12345678u) sink[0] = acc;
}

extern "C" __global__ void __launch_bounds__(384, 1)
k_bulk(const unsigned char* __restrict__ w, long long bytes, int depth, int slot, u64* t, unsigned* sink) {
    extern __shared__ uint4 sm[];
    __shared__ u64 bars[WARPS * 16];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (warp < WARPS && lane == 0)
        for (int s = 0; s < depth; ++s)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(sa(&bars[warp * 16 + s])) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    __syncthreads();
    if (threadIdx.x == 0) t[2 * blockIdx.x] = now();
    unsigned acc = 0;
    if (warp < WARPS) {
        const unsigned char* base = w + (long long)blockIdx.x * bytes;
        const long long nchunks = bytes / slot;
        unsigned char* ring = reinterpret_cast<unsigned char*>(sm) + (long long)warp * depth * slot;
        u64* bar = bars + warp * 16;
        long long issued = warp, used = warp;
        auto issue = [&](int s) {
            if (lane == 0 && issued < nchunks) {
                asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(sa(&bar[s])), "r"(slot) : "memory");
                asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                             :: "r"(sa(ring + (long long)s * slot)), "l"(base + issued * slot), "r"(slot), "r"(sa(&bar[s])) : "memory");
            }
            issued += WARPS;
        };
        for (int s = 0; s < depth; ++s) issue(s);
        unsigned phase = 0;
        for (int s = 0; used < nchunks; used += WARPS) {
            unsigned done = 0;
            while (!done)
                asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                             : "=r"(done) : "r"(sa(&bar[s])), "r"(phase) : "memory");
            const uint4* v4 = reinterpret_cast<const uint4*>(ring + (long long)s * slot);
            for (int i = lane; i < slot / 16; i += 32) {
                const uint4 v = v4[i];
                acc ^= v.x ^ v.y ^ v.z ^ v.w;
            }
            __syncwarp();
            issue(s);
            if (++s == depth) { s = 0; phase ^= 1; }
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) t[2 * blockIdx.x + 1] = now();
    if (acc == 0x12345678u) sink[0] = acc;
}

extern "C" __global__ void __launch_bounds__(384, 1)
k_ldg(const uint4* __restrict__ w, long long bytes, int, u64* t, unsigned* sink) {
    const int warp = threadIdx.x >> 5;
    __syncthreads();
    if (threadIdx.x == 0) t[2 * blockIdx.x] = now();
    unsigned acc = 0;
    if (warp < WARPS) {
        const uint4* base = w + (long long)blockIdx.x * (bytes / 16);
        const long long n = bytes / 16, step = WARPS * 32;
        for (long long i = threadIdx.x; i < n; i += 8 * step) {
            uint4 v[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) v[u] = i + u * step < n ? __ldcg(base + i + u * step) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int u = 0; u < 8; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) t[2 * blockIdx.x + 1] = now();
    if (acc == 0x12345678u) sink[0] = acc;
}
"""


def main() -> None:
    import cupy as cp

    ap = argparse.ArgumentParser()
    ap.add_argument("--kb", type=int, action="append", help="KB per CTA (repeatable); default 160 and 1024")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    dev = cp.cuda.Device()
    sms = dev.attributes["MultiProcessorCount"]
    mod = cp.RawModule(code=SRC, options=("-std=c++17", "--gpu-architecture=sm_90a"), backend="nvrtc")
    smem = 200 * 1024
    kern = {}
    for name in ("k_cpasync", "k_bulk", "k_ldg"):
        f = mod.get_function(name)
        f.max_dynamic_shared_size_bytes = smem
        kern[name] = f
    pool = cp.zeros(2 << 30, dtype=cp.uint8)
    t = cp.zeros(2 * sms, dtype=cp.uint64)
    sink = cp.zeros(1, dtype=cp.uint32)
    variants = [("cpasync d6", "k_cpasync", 6, 0), ("cpasync d8", "k_cpasync", 8, 0)]
    variants += [(f"bulk {s // 1024}KBx{d}", "k_bulk", d, s) for s, d in ((2048, 6), (4096, 4), (8192, 2), (4096, 3))]
    variants += [("ldg x8", "k_ldg", 0, 0)]
    rows = []
    for kb in args.kb or [160, 1024]:
        per = kb * 1024
        span = per * sms
        for mode in ("cold", "hot"):
            for label, name, depth, slot in variants:
                walls, meds = [], []
                for r in range(args.repeats + 2):
                    off = (r * span) % (pool.size - span) if mode == "cold" else 0
                    off -= off % 4096
                    ptr = pool[off:off + span]
                    if name == "k_bulk":
                        a = (ptr, cp.int64(per), cp.int32(depth), cp.int32(slot), t, sink)
                    else:
                        a = (ptr, cp.int64(per), cp.int32(depth), t, sink)
                    kern[name]((sms,), (384,), a, shared_mem=smem)
                    cp.cuda.runtime.deviceSynchronize()
                    if r < 2:
                        continue
                    tt = t.get().reshape(sms, 2).astype("int64")
                    walls.append((tt[:, 1].max() - tt[:, 0].min()) / 1e3)
                    meds.append(float(statistics.median(tt[:, 1] - tt[:, 0])) / 1e3)
                wall = statistics.median(walls)
                rows.append((kb, mode, label, wall, statistics.median(meds), span / wall / 1e3))
    print(f"{'KB/CTA':>7} {'mode':>5} {'variant':>14} {'wall us':>8} {'CTA med':>8} {'GB/s':>7}")
    for kb, mode, label, wall, med, gbs in rows:
        print(f"{kb:>7} {mode:>5} {label:>14} {wall:8.2f} {med:8.2f} {gbs:7.0f}")


if __name__ == "__main__":
    main()
