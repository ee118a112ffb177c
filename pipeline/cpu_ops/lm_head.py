"""LM_HEAD: logits[t, n0:n1] = norm(x)[t] @ W[n0:n1]^T, plus (max, first argmax) per row
of the tile, the argmax stored as an exact float (vocab < 2**24)."""

from .context import Ctx, rms_norm_rows


def run(ctx: Ctx, a: dict[str, int]) -> None:
    x = rms_norm_rows(ctx, ctx.rows(a["x_off"], a["x_ld"], a["t"], a["k"]), a["w_norm"])
    n0, n1 = a["n0"], a["n1"]
    logits = x @ ctx.w(a["w"])[n0:n1].float().T
    ctx.rows(a["logits_off"] + n0, a["logits_ld"], a["t"], n1 - n0).copy_(logits)
    best = ctx.rows(a["best_off"], 2, a["t"], 2)
    val, idx = logits.max(dim=-1)
    best[:, 0] = val
    best[:, 1] = (idx + n0).float()
