// A GEMV task as the shared executor (core/gemv_task.cuh) and the weight cores see it:
// input rows, weight rows, the epilogue. Each GEMV op's file decodes its descriptor into one.
#pragma once

// Timing experiment (tools/ab_defines.py), never a build to ship: every GEMV task runs its
// weights twice and the traced body is the second pass, whose weights L2 holds. Body at 1
// vs 2 tells a body bound by HBM bytes from one bound by its own latency or issue.
#ifndef TW_EXP_TWICE
#define TW_EXP_TWICE 0
#endif
#include "core/context.cuh"

enum TwWeightFormat { TW_FMT_BF16 = 0, TW_FMT_MXFP4 = 1 };

struct TwGemv {
    // Input rows: src rows s_tok[0..n) (the decoder fills s_tok), k floats, fused RMSNorm.
    const float* x;
    int x_ld, n, k;
    const __nv_bfloat16* norm;        // nullptr: no norm
    // Weights: a bf16 matrix [N, k], or an MXFP4 one in the tensor-core fragment layout
    // (ops/gemv_mxfp4.cuh; rows n0:n1 at the same bytes as codes [N, k/2], scales [N, k/32]).
    int fmt;
    const void* w;
    const unsigned char* w_scales;
    const void* w2;                   // gated: the up matrix (w is the gate), else nullptr
    const unsigned char* w2_scales;
    int n0, n1;                       // output rows
    // Epilogue: out[row(r) * out_ld + n] = v (+ resid[r * resid_ld + n]), row(r) = s_tok[r]
    // when scatter, else r; gated: v = silu(gate) * up.
    float* out;
    int out_ld;
    const float* resid;
    int resid_ld;
    bool scatter;
};

