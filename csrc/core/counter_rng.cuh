// Counter-based random numbers for sampling, line for line as pipeline/counter_rng.py
// defines them (32-bit multiplies, shifts, xors; everything mod 2^32):
//   mix32(x)     = lowbias32
//   key(s, q, v) = mix32(mix32(mix32(s) + q) + v)
//   u            = (2 * (key >> 9) + 1) * 2^-24      (exact in fp32, in (0, 1))
//   G            = -log(-log(u))                     (standard Gumbel)
// Sampling at temperature T is argmax_v logits[v] / T + G(seed, position, v) (Gumbel-max).
#pragma once

__device__ __forceinline__ unsigned int tw_mix32(unsigned int x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    return x ^ (x >> 16);
}

// The part of the key fixed by (seed, position): mix32(mix32(seed) + position).
__device__ __forceinline__ unsigned int tw_rng_row(unsigned int seed, unsigned int position) {
    return tw_mix32(tw_mix32(seed) + position);
}

// Gumbel noise of token `v` in the row keyed by tw_rng_row. logf, not __logf: the full
// precision one, as close as CUDA gets to the CPU's log.
__device__ __forceinline__ float tw_gumbel(unsigned int row_key, unsigned int v) {
    const unsigned int key = tw_mix32(row_key + v);
    const float u = (float)(2u * (key >> 9) + 1u) * 5.9604644775390625e-8f;   // * 2^-24
    return -logf(-logf(u));
}

// Sampling score of a logit: logits * inv_temp + G, two roundings as the CPU executor
// does them (no FMA contraction).
__device__ __forceinline__ float tw_sample_score(float logit, float inv_temp, unsigned int row_key, unsigned int v) {
    return __fadd_rn(__fmul_rn(logit, inv_temp), tw_gumbel(row_key, v));
}
