"""MOE_COMBINE: out[t, c0:c1] = resid[t, c0:c1] + sum_j w[t, j] * y[slot(t, j) * T + t, c0:c1]."""

import torch

from ..graph.ops import slot_table_fields
from .context import Ctx


def run(ctx: Ctx, a: dict[str, int]) -> None:
    cfg, t = ctx.cfg, a["t"]
    k = cfg.top_k
    slots = min(t * k, cfg.num_experts)
    f = slot_table_fields(slots, t, k)
    tab = ctx.ints(a["table_off"], f["tok_weight"] + t * k)
    slot = tab[f["tok_slot"]: f["tok_slot"] + t * k].view(t, k).long()
    w = tab[f["tok_weight"]: f["tok_weight"] + t * k].view(t, k).view(torch.float32)
    c0, c1 = a["c0"], a["c1"]
    y = ctx.rows(a["y_off"] + c0, a["y_ld"], slots * t, c1 - c0)
    out = ctx.rows(a["resid_off"] + c0, a["resid_ld"], t, c1 - c0).clone()
    for row in range(t):
        for j in range(k):
            out[row] += w[row, j] * y[int(slot[row, j]) * t + row]
    ctx.rows(a["out_off"] + c0, a["out_ld"], t, c1 - c0).copy_(out)
