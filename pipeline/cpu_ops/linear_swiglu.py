"""LINEAR_SWIGLU: out[t, n0:n1] = silu(norm?(x) Wg^T) * (norm?(x) Wu^T) for rows n0:n1."""

import torch.nn.functional as F

from .context import Ctx, rms_norm_rows


def run(ctx: Ctx, a: dict[str, int]) -> None:
    x = rms_norm_rows(ctx, ctx.rows(a["x_off"], a["x_ld"], a["t"], a["k"]), a["w_norm"])
    n0, n1 = a["n0"], a["n1"]
    gate = x @ ctx.w(a["w"])[n0:n1].float().T
    up = x @ ctx.w(a["w2"])[n0:n1].float().T
    ctx.rows(a["out_off"] + n0, a["out_ld"], a["t"], n1 - n0).copy_(F.silu(gate) * up)
