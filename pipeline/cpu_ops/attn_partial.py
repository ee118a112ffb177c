"""ATTN_PARTIAL: one kv head, one chunk of key positions; for each query row (token t,
head j of the group; row = t * group + j) write [max score, sum of exp, sum of exp * v].

Global layers: chunk c covers positions [c * chunk_len, (c + 1) * chunk_len). SWA layers
cut the window before the step plus the step itself (pos - window .. pos + t - 1) into
chunks from its start: chunk c covers [start + c * chunk_len, start + (c + 1) * chunk_len).
A chunk with no keys writes an empty partial (max -inf, sum 0)."""

import torch

from .context import Ctx


def key_range(window: int | None, chunk: int, chunk_len: int, pos: int, t: int) -> tuple[int, int]:
    start = 0 if window is None else max(0, pos - window)
    lo = start + chunk * chunk_len
    return lo, min(lo + chunk_len, pos + t)


def write_empty(out: torch.Tensor) -> None:
    """A chunk with no keys: max -inf, sum 0, values 0 (the merge weighs it by exp(-inf) = 0)."""
    out[:, 0] = float("-inf")
    out[:, 1:] = 0.0


def write_partial(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  visible: torch.Tensor | None = None) -> None:
    """[max score, sum exp(s - max), sum exp * v] per query row over keys k/v (fp32), scores
    scaled by head_dim^-0.5; `visible` masks keys per row (None: every key)."""
    s = (q @ k.T) * q.shape[-1] ** -0.5
    if visible is None:
        m = s.max(dim=-1).values
        e = torch.exp(s - m[:, None])
    else:
        s = s.masked_fill(~visible, float("-inf"))
        m = s.max(dim=-1).values
        e = torch.where(visible, torch.exp(s - m.clamp(min=-3e38)[:, None]), torch.zeros(()))
    out[:, 0] = m
    out[:, 1] = e.sum(dim=-1)
    out[:, 2:] = e @ v


def run(ctx: Ctx, a: dict[str, int]) -> None:
    layer, h, t = a["layer"], a["kvh"], a["t"]
    spec = ctx.cfg.attn(layer)
    grp, hd, vd = spec.group, spec.head_dim, spec.v_head_dim
    pos = ctx.pos(a["state_off"])
    lo, hi = key_range(spec.window, a["chunk"], a["chunk_len"], pos, t)
    out = ctx.rows(a["part_off"], 2 + vd, t * grp, 2 + vd)
    if lo >= hi:
        write_empty(out)
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
    write_partial(out, q, k, v, visible)
