"""ATTN_MERGE: combine a kv head's chunk partials into attention output rows. The sink
logit (if any) joins the max and the denominator only: it carries no value. Shapes come
from the layer table, so draft layers (DRAFT_ATTN partials) merge with this op too."""

import torch

from .context import Ctx


def run(ctx: Ctx, a: dict[str, int]) -> None:
    layer, h, t, n = a["layer"], a["kvh"], a["t"], a["n_chunks"]
    spec = ctx.layer(layer)
    grp, vd = spec.group, spec.v_dim
    rows = t * grp
    part = ctx.rows(a["part_off"], 2 + vd, n * rows, 2 + vd).reshape(n, rows, 2 + vd)
    m, l, acc = part[:, :, 0], part[:, :, 1], part[:, :, 2:]
    big = m.max(dim=0).values                                           # [rows]
    if a["w_sink"] >= 0:
        sink = ctx.w(a["w_sink"]).float()[h * grp:(h + 1) * grp].repeat(t)   # row = t * grp + j
        big = torch.maximum(big, sink)
    scale = torch.exp(m - big[None, :])                                  # [n, rows]; exp(-inf) = 0
    denom = (l * scale).sum(dim=0)
    if a["w_sink"] >= 0:
        denom = denom + torch.exp(sink - big)
    out = (acc * scale[:, :, None]).sum(dim=0) / denom[:, None]          # [rows, vd]
    ctx.rows(a["out_off"] + h * grp * vd, a["out_ld"], t, grp * vd).copy_(out.reshape(t, grp * vd))
