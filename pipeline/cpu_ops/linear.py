"""LINEAR: out[t, n0:n1] = norm?(x)[t] @ W[n0:n1]^T (+ resid[t, n0:n1]), fp32 accumulation."""

from .context import Ctx, rms_norm_rows


def run(ctx: Ctx, a: dict[str, int]) -> None:
    x = rms_norm_rows(ctx, ctx.rows(a["x_off"], a["x_ld"], a["t"], a["k"]), a["w_norm"])
    n0, n1 = a["n0"], a["n1"]
    y = x @ ctx.w(a["w"])[n0:n1].float().T
    if a["resid_off"] >= 0:
        y = y + ctx.rows(a["resid_off"] + n0, a["resid_ld"], a["t"], n1 - n0)
    ctx.rows(a["out_off"] + n0, a["out_ld"], a["t"], n1 - n0).copy_(y)
