// The MXFP4 expert GEMV as its own translation unit (TW_SEPARATE_MXFP4=1, runtime/
// megakernel.py): compiled with -rdc and linked to megakernel.cu by nvJitLink, so its machine
// code is fixed by these sources alone; in the one-unit build any edit elsewhere re-rolls it
// (docs/perf-notes.md v16, the build lottery). The cost is an ABI call per task: the task's
// context and descriptor pass through the stack.
#include "core/gemv_mma.cuh"
#include "ops/gemv_mxfp4.cuh"

__device__ void tw_gemv_mma_mxfp4_module(const TwCtx& ctx, const TwGemv& gemv, float* wn_smem) {
    // Local copies, and the shared-memory pointers said to be shared: across a call the
    // compiler knows neither, and generic loads cost ~2x the instructions in the tile loop.
    const TwCtx c = ctx;
    const TwGemv g = gemv;
    __builtin_assume(__isShared(c.s_stage));
    __builtin_assume(__isShared(c.s_scratch));
    __builtin_assume(__isShared(c.s_tok));
    __builtin_assume(__isShared(c.s_inv));
    __builtin_assume(wn_smem == nullptr || __isShared(wn_smem));
    tw_gemv_mma<TwMmaFp4>(c, g, wn_smem);
}
