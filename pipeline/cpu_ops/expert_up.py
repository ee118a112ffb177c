"""EXPERT_UP: for the tokens of one slot, act = silu(x Wg^T) * (x Wu^T) on rows n0:n1 of
the slot's expert (MXFP4, decoded exactly to fp32); an unused slot does nothing. With
logits_off >= 0 the task routes for itself (ROUTE's table, built privately), and slot 0's
first tile publishes that table, as the megakernel's does."""

import torch.nn.functional as F

from .. import mxfp4
from .context import Ctx, rms_norm_rows
from .route import slot_table
from .slots import arena_table, slot_tokens


def run(ctx: Ctx, a: dict[str, int]) -> None:
    t = a["t"]
    if a["logits_off"] >= 0:
        tab = slot_table(ctx, a["logits_off"], a["w_bias"], t, "EXPERT_UP")
        if a["slot"] == 0 and a["n0"] == 0:
            arena_table(ctx, a["table_off"], t).copy_(tab)
    else:
        tab = arena_table(ctx, a["table_off"], t)
    hit = slot_tokens(ctx, tab, a["slot"], t)
    if hit is None:
        return
    e, toks = hit
    n0, n1 = a["n0"], a["n1"]
    x = rms_norm_rows(ctx, ctx.rows(a["x_off"], a["x_ld"], t, a["k"])[toks], a["w_norm"])
    g, u = ctx.weights[a["w"]], ctx.weights[a["w2"]]
    wg = mxfp4.dequantize(g["codes"][e, n0:n1], g["scales"][e, n0:n1])
    wu = mxfp4.dequantize(u["codes"][e, n0:n1], u["scales"][e, n0:n1])
    act = ctx.rows(a["act_off"] + n0, a["act_ld"], t, n1 - n0)
    act[toks] = F.silu(x @ wg.T) * (x @ wu.T)
