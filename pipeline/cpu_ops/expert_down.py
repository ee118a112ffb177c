"""EXPERT_DOWN: for the tokens of one slot, y[:, n0:n1] = act @ Wd[n0:n1]^T (MXFP4)."""

from .. import mxfp4
from .context import Ctx
from .slots import slot_tokens


def run(ctx: Ctx, a: dict[str, int]) -> None:
    hit = slot_tokens(ctx, a["table_off"], a["slot"], a["t"])
    if hit is None:
        return
    e, toks = hit
    n0, n1 = a["n0"], a["n1"]
    d = ctx.weights[a["w"]]
    wd = mxfp4.dequantize(d["codes"][e, n0:n1], d["scales"][e, n0:n1])
    act = ctx.rows(a["act_off"], a["act_ld"], a["t"], a["k"])[toks]
    y = ctx.rows(a["y_off"] + n0, a["y_ld"], a["t"], n1 - n0)
    y[toks] = act @ wd.T
