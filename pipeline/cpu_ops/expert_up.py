"""EXPERT_UP: for the tokens of one slot, act = silu(x Wg^T) * (x Wu^T) on rows n0:n1 of
the slot's expert (MXFP4, decoded exactly to fp32); an unused slot does nothing."""

import torch.nn.functional as F

from .. import mxfp4
from .context import Ctx, rms_norm_rows
from .slots import slot_tokens


def run(ctx: Ctx, a: dict[str, int]) -> None:
    hit = slot_tokens(ctx, a["table_off"], a["slot"], a["t"])
    if hit is None:
        return
    e, toks = hit
    n0, n1 = a["n0"], a["n1"]
    x = rms_norm_rows(ctx, ctx.rows(a["x_off"], a["x_ld"], a["t"], a["k"])[toks], a["w_norm"])
    g, u = ctx.weights[a["w"]], ctx.weights[a["w2"]]
    wg = mxfp4.dequantize(g["codes"][e, n0:n1], g["scales"][e, n0:n1])
    wu = mxfp4.dequantize(u["codes"][e, n0:n1], u["scales"][e, n0:n1])
    act = ctx.rows(a["act_off"] + n0, a["act_ld"], a["t"], n1 - n0)
    act[toks] = F.silu(x @ wg.T) * (x @ wu.T)
