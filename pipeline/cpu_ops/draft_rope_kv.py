"""DRAFT_ROPE_KV: for draft kv head h at positions pos..pos+t-1: per-head RMSNorm of q
(its group's heads) and k (q_norm / k_norm weights over head_dim), rotate-half RoPE on
the first rotary dims, V times the layer's value scale; K and V into the draft cache
(bf16), rotated q rows to q_off.

Used twice per draft layer and step: for the block (q_off >= 0; its K/V sit in the cache
slots of positions >= pos, which nothing reads as context until they are overwritten)
and for the context rows of the verified tokens (q_off < 0: only K/V), which land on
the same positions, so the block's K/V never outlive the step."""

import torch

from .context import Ctx
from .rope_kv import rotate


def head_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim (head_dim), weight after normalising, fp32."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.float()


def run(ctx: Ctx, a: dict[str, int]) -> None:
    spec = ctx.layer(a["kv"])
    h, t, hd, grp = a["kvh"], a["t"], spec.head_dim, spec.group
    nq, nk = spec.heads * hd, spec.kv_heads * hd
    eps = ctx.cfg.rms_eps
    pos = ctx.pos(a["state_off"])
    positions = torch.arange(pos, pos + t)
    table = ctx.weights[a["w_rope"]]
    cos, sin = table["cos"][positions], table["sin"][positions]
    qkv = ctx.rows(a["qkv_off"], a["qkv_ld"], t, a["qkv_ld"])
    if a["q_off"] >= 0:
        q = head_norm(qkv[:, h * grp * hd:(h + 1) * grp * hd].reshape(t, grp, hd), ctx.w(a["w_qnorm"]), eps)
        ctx.rows(a["q_off"] + h * grp * hd, a["q_ld"], t, grp * hd).copy_(rotate(q, cos, sin).reshape(t, grp * hd))
    k = head_norm(qkv[:, nq + h * hd:nq + (h + 1) * hd].reshape(t, 1, hd), ctx.w(a["w_knorm"]), eps)
    v = qkv[:, nq + nk + h * hd:nq + nk + (h + 1) * hd]
    slots = spec.slot_of(positions)
    spec.k[h, slots] = rotate(k, cos, sin)[:, 0].to(torch.bfloat16)
    spec.v[h, slots] = (v * spec.value_scale).to(torch.bfloat16)
