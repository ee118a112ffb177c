"""ATTN_PARTIAL: one kv head, one chunk of key positions; for each query row (token t,
head j of the group; row = t * group + j) write [max score, sum of exp, sum of exp * v].

Global layers: chunk c covers positions [c * chunk_len, (c + 1) * chunk_len). SWA layers
have one chunk: the window before the step plus the step itself. A chunk past the
current length writes an empty partial (max -inf, sum 0)."""

import torch

from .context import Ctx


def key_range(window: int | None, chunk: int, chunk_len: int, pos: int, t: int) -> tuple[int, int]:
    end = pos + t
    if window is None:
        return chunk * chunk_len, min((chunk + 1) * chunk_len, end)
    return max(0, pos - window), end


def run(ctx: Ctx, a: dict[str, int]) -> None:
    layer, h, t = a["layer"], a["kvh"], a["t"]
    spec = ctx.cfg.attn(layer)
    grp, hd, vd = spec.group, spec.head_dim, spec.v_head_dim
    pos = ctx.pos(a["state_off"])
    lo, hi = key_range(spec.window, a["chunk"], a["chunk_len"], pos, t)
    out = ctx.rows(a["part_off"], 2 + vd, t * grp, 2 + vd)
    if lo >= hi:
        out[:, 0] = float("-inf")
        out[:, 1:] = 0.0
        return
    k_pos = torch.arange(lo, hi)
    slots = ctx.cache.slot_of(layer, k_pos)
    k = ctx.cache.k[layer][h, slots].float()            # [N, hd]
    v = ctx.cache.v[layer][h, slots].float()            # [N, vd]
    q = ctx.rows(a["q_off"] + h * grp * hd, a["q_ld"], t, grp * hd).reshape(t * grp, hd)
    q_pos = (pos + torch.arange(t)).repeat_interleave(grp)
    visible = k_pos[None, :] <= q_pos[:, None]
    if spec.window is not None:
        visible &= k_pos[None, :] >= q_pos[:, None] - spec.window
    s = (q @ k.T) * hd ** -0.5
    s = s.masked_fill(~visible, float("-inf"))
    m = s.max(dim=-1).values
    e = torch.where(visible, torch.exp(s - m.clamp(min=-3e38)[:, None]), torch.zeros(()))
    out[:, 0] = m
    out[:, 1] = e.sum(dim=-1)
    out[:, 2:] = e @ v
