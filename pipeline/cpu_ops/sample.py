"""SAMPLE: greedy token per row from the tiles' (max, argmax): the lowest id among equal
maxima, as a global argmax gives. Writes the tokens to this step's output row, feeds the
token back for the next decode step, and advances the position and step count."""

import torch

from ..graph.ops import STATE_POS, STATE_STEP
from .context import Ctx


def run(ctx: Ctx, a: dict[str, int]) -> None:
    t, n = a["t"], a["n_tiles"]
    best = ctx.rows(a["best_off"], 2, n * t, 2).reshape(n, t, 2)
    vals, ids = best[:, :, 0], best[:, :, 1]
    top = vals.max(dim=0).values
    tok = torch.where(vals == top[None, :], ids, torch.full_like(ids, float("inf"))).min(dim=0).values.int()
    state = ctx.ints(a["state_off"], 4)
    step = int(state[STATE_STEP])
    row = step if a["tok_off"] >= 0 else 0
    ctx.ints(a["out_off"] + row * t, t).copy_(tok)
    if a["tok_off"] >= 0:
        ctx.ints(a["tok_off"], t).copy_(tok)
    state[STATE_POS] += t
    state[STATE_STEP] += 1
