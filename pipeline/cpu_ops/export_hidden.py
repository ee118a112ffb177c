"""EXPORT_HIDDEN: out[t, c0:c1] = x[t, c0:c1]. The verify step copies the output of each
target layer the drafter reads into its column block of one [T, K*H] matrix: exactly the
input of the drafter's fc projection, and one buffer for the host to read."""

from .context import Ctx


def run(ctx: Ctx, a: dict[str, int]) -> None:
    c0, c1, t = a["c0"], a["c1"], a["t"]
    ctx.rows(a["out_off"] + c0, a["out_ld"], t, c1 - c0).copy_(ctx.rows(a["x_off"] + c0, a["x_ld"], t, c1 - c0))
