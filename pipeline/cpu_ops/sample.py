"""SAMPLE: greedy token per row from the tiles' (max, argmax): the lowest id among equal
maxima, as a global argmax gives. Writes the tokens to this step's output row, feeds the
token back for the next decode step, and advances the position and step count."""

from ..graph.ops import STATE_POS, STATE_STEP
from .context import Ctx
from .tile_argmax import tile_argmax


def run(ctx: Ctx, a: dict[str, int]) -> None:
    t = a["t"]
    tok = tile_argmax(ctx, a["best_off"], a["n_tiles"], t)
    state = ctx.ints(a["state_off"], 4)
    step = int(state[STATE_STEP])
    row = step if a["tok_off"] >= 0 else 0
    ctx.ints(a["out_off"] + row * t, t).copy_(tok)
    if a["tok_off"] >= 0:
        ctx.ints(a["tok_off"], t).copy_(tok)
    state[STATE_POS] += t
    state[STATE_STEP] += 1
