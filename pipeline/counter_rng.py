"""Counter-based random numbers for sampling on the device: defined once here, small
enough to port to CUDA line for line (32-bit multiplies, shifts, xors).

Sampling at temperature T is a perturbed argmax (the Gumbel-max trick): the token at
position q is `argmax_v logits[v] / T + G(seed, q, v)`, with `G = -log(-log(u))` and `u`
a uniform drawn from a hash of (seed, q, v). It is an exact draw from softmax(logits / T),
and it needs no pass over the whole vocabulary: each LM_HEAD tile perturbs its own
logits and keeps its (max, argmax), reduced like greedy maxima.

Keyed by the *position* of the token being chosen, not by (step, row): each position's
noise decides exactly one committed token, after everything that fixed the tokens before
it, so DFlash stays lossless (with an argmax drafter, accept iff the target's draw equals
the proposal, else emit the draw: `shared/MODEL_FACTS.md`). And the draw at a position
does not depend on how tokens were grouped into steps or launches: sampled DFlash emits
exactly what sampled plain decoding with the same seed emits, which tests can check token
for token.

    mix32(x)     = lowbias32: x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16
    key(s, q, v) = mix32(mix32(mix32(s) + q) + v)          (all mod 2**32)
    u            = (2 * (key >> 9) + 1) * 2**-24           (odd multiples of 2**-24: exact in fp32, in (0, 1))

Top-k / top-p are not expressible as a perturbed argmax; programs sample at a plain
temperature only.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
MIX_MUL1 = 0x7FEB352D
MIX_MUL2 = 0x846CA68B


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32), in int64 without overflow (two 16-bit halves)."""
    lo = (x * (c & 0xFFFF)) & MASK32
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The lowbias32 integer hash (a bijection on 32-bit words), on int64 tensors."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, MIX_MUL1)
    x = x ^ (x >> 15)
    x = _mul32(x, MIX_MUL2)
    return x ^ (x >> 16)


def keys(seed: int, positions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """int64 [T, N] in [0, 2**32): key(seed, positions[t], tokens[n])."""
    s = mix32(torch.tensor(seed & MASK32, dtype=torch.int64))
    q = mix32(s + positions.to(torch.int64)[:, None])
    return mix32(q + tokens.to(torch.int64)[None, :])


def uniforms(seed: int, positions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """fp32 [T, N] in (0, 1), exactly representable: (2 * (key >> 9) + 1) * 2**-24."""
    return ((keys(seed, positions, tokens) >> 9) * 2 + 1).to(torch.float32) * 2.0 ** -24


def gumbel(seed: int, positions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """fp32 [T, N] standard Gumbel noise -log(-log(u))."""
    return -torch.log(-torch.log(uniforms(seed, positions, tokens)))


def perturb(logits: torch.Tensor, seed: int, first_position: int, inv_temp: float, token0: int = 0) -> torch.Tensor:
    """logits [T, N] (tokens token0.. of rows choosing positions first_position..) * inv_temp
    plus their Gumbel noise: the scores whose argmax is the sample. What LM_HEAD computes."""
    t, n = logits.shape
    g = gumbel(seed, torch.arange(first_position, first_position + t), torch.arange(token0, token0 + n))
    return logits * inv_temp + g


def sample_rows(logits: torch.Tensor, seed: int, first_position: int, temperature: float) -> list[int]:
    """The tokens of rows choosing positions first_position.. ; greedy at temperature 0.
    The reference for what the programs' LM_HEAD + SAMPLE / ARGMAX_ROWS draw."""
    if temperature == 0:
        return logits.argmax(dim=-1).tolist()
    return perturb(logits.float(), seed, first_position, 1.0 / temperature).argmax(dim=-1).tolist()
