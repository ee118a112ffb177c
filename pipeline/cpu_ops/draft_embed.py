"""DRAFT_EMBED: the DFlash block's input rows, columns c0:c1: row 0 is the target's
embedding of the anchor (tokens[0]), rows 1..t-1 the drafter's learned mask embedding."""

from ..errors import InputError
from .context import Ctx


def run(ctx: Ctx, a: dict[str, int]) -> None:
    anchor = int(ctx.ints(a["tok_off"], 1)[0])
    table = ctx.w(a["w"])
    if not 0 <= anchor < table.shape[0]:
        raise InputError(f"DRAFT_EMBED: anchor token id {anchor} outside [0, {table.shape[0]})")
    c0, c1 = a["c0"], a["c1"]
    out = ctx.rows(a["out_off"] + c0, a["out_ld"], a["t"], c1 - c0)
    out[0] = table[anchor, c0:c1].float()
    out[1:] = ctx.w(a["w_mask"])[c0:c1].float()
