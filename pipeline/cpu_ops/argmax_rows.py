"""ARGMAX_ROWS: the greedy token of each row from the LM_HEAD tiles' maxima, written as
int32; unlike SAMPLE it leaves the step state alone (the draft's proposals, the target's
choices before ACCEPT)."""

from .context import Ctx
from .tile_argmax import tile_argmax


def run(ctx: Ctx, a: dict[str, int]) -> None:
    ctx.ints(a["out_off"], a["t"]).copy_(tile_argmax(ctx, a["best_off"], a["n_tiles"], a["t"]))
