"""ROPE_KV: for kv head h, rotate its q heads and k at positions pos..pos+T-1 (rotate-half
on the first rotary dims, cos/sin from the program's table), then write K and V times the
value scale into the bf16 cache slots."""

import torch

from .context import Ctx


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, dim]; pairs (i, i + half) within the first 2*half dims."""
    half = cos.shape[-1]
    x1, x2 = x[..., :half], x[..., half:2 * half]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s, x[..., 2 * half:]], dim=-1)


def run(ctx: Ctx, a: dict[str, int]) -> None:
    layer, h, t = a["layer"], a["kvh"], a["t"]
    spec = ctx.cfg.attn(layer)
    grp, hd, vd = spec.group, spec.head_dim, spec.v_head_dim
    nq, nk = spec.num_heads * hd, spec.num_kv_heads * hd
    pos = ctx.pos(a["state_off"])
    positions = torch.arange(pos, pos + t)
    table = ctx.weights[a["w_rope"]]
    cos, sin = table["cos"][positions], table["sin"][positions]
    qkv = ctx.rows(a["qkv_off"], a["qkv_ld"], t, a["qkv_ld"])
    q = qkv[:, h * grp * hd:(h + 1) * grp * hd].reshape(t, grp, hd)
    k = qkv[:, nq + h * hd: nq + (h + 1) * hd].reshape(t, 1, hd)
    v = qkv[:, nq + nk + h * vd: nq + nk + (h + 1) * vd]
    ctx.rows(a["q_off"] + h * grp * hd, a["q_ld"], t, grp * hd).copy_(rotate(q, cos, sin).reshape(t, grp * hd))
    slots = ctx.cache.slot_of(layer, positions)
    ctx.cache.k[layer][h, slots] = rotate(k, cos, sin)[:, 0].to(torch.bfloat16)
    ctx.cache.v[layer][h, slots] = (v * ctx.cfg.value_scale).to(torch.bfloat16)
