"""EMBED: x[t, c0:c1] = E[tokens[t], c0:c1]."""

from ..errors import InputError
from .context import Ctx


def run(ctx: Ctx, a: dict[str, int]) -> None:
    toks = ctx.ints(a["tok_off"], a["t"]).long()
    table = ctx.w(a["w"])
    if int(toks.min()) < 0 or int(toks.max()) >= table.shape[0]:
        raise InputError(f"EMBED: token ids {toks.tolist()} outside [0, {table.shape[0]})")
    ctx.rows(a["out_off"] + a["c0"], a["out_ld"], a["t"], a["c1"] - a["c0"]).copy_(table[toks, a["c0"]:a["c1"]].float())
