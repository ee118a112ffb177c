"""LM_HEAD: logits[t, n0:n1] = norm(x)[t] @ W[n0:n1]^T, plus (max, first argmax) per row
of the tile, the argmax stored as an exact float (vocab < 2**24). When the step state
asks for sampling (inverse temperature != 0), the maxima are of the sampling scores
logits * inv_temp + Gumbel(seed, position, token) (`counter_rng`); row t chooses the
token at position pos + t + 1. The logits themselves are written unperturbed. A row with
a NaN or infinite logit gets (+inf, NONFINITE_TOKEN), which wins the reduction and is
refused there."""

import torch

from ..counter_rng import perturb
from ..graph.ops import STATE_INV_TEMP, STATE_POS, STATE_SEED, STATE_WORDS
from .context import Ctx, rms_norm_rows
from .tile_argmax import NONFINITE_TOKEN


def run(ctx: Ctx, a: dict[str, int]) -> None:
    x = rms_norm_rows(ctx, ctx.rows(a["x_off"], a["x_ld"], a["t"], a["k"]), a["w_norm"])
    n0, n1 = a["n0"], a["n1"]
    logits = x @ ctx.w(a["w"])[n0:n1].float().T
    ctx.rows(a["logits_off"] + n0, a["logits_ld"], a["t"], n1 - n0).copy_(logits)
    scores = logits
    if a["state_off"] >= 0:
        state = ctx.ints(a["state_off"], STATE_WORDS)
        inv_temp = float(state[STATE_INV_TEMP:STATE_INV_TEMP + 1].view(torch.float32))
        if inv_temp != 0.0:
            seed = int(state[STATE_SEED]) & 0xFFFFFFFF
            scores = perturb(logits, seed, int(state[STATE_POS]) + 1, inv_temp, token0=n0)
    best = ctx.rows(a["best_off"], 2, a["t"], 2)
    val, idx = scores.max(dim=-1)
    best[:, 0] = val
    best[:, 1] = (idx + n0).float()
    bad = ~torch.isfinite(logits).all(dim=-1)   # SAMPLE / ARGMAX_ROWS refuse these rows
    best[bad, 0] = float("inf")
    best[bad, 1] = float(NONFINITE_TOKEN)
