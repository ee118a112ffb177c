"""Batched, trainable attention that computes what ``pipeline.reference.attention`` computes.

Why SDPA: ``F.scaled_dot_product_attention`` picks a fused kernel on the GPU (flash for
the causal global layers, memory-efficient for masked ones) and a plain one on the CPU,
and never materialises what it does not need for the backward pass.

Sinks without a custom kernel: a sink adds ``exp(s_h)`` to head h's softmax denominator
and nothing to the output. That is exactly one extra key whose score is ``s_h`` and whose
value is zero. SDPA scores are ``scale * q.k``, so the query gets one more dimension
holding 1, real keys hold 0 there and the sink key holds ``s_h / scale`` (zero elsewhere):
its score is ``s_h`` for every query. The extra dimension is padded to a multiple of 8 with
zeros (what the fused kernels want); the scale stays ``qk_head_dim ** -0.5`` as in the
reference. Grouped-query heads are expanded to one kv head per query head first (the sink
key is per query head).

RoPE goes through the reference's own ``apply_rope`` and ``rope_cos_sin``, flattened over
(batch, token), so the rotation (rotate-half on the first dims, float64 angles) is the
oracle's by construction.

``attend_one`` is the generation step's case (one new query per row, every given key
visible): two grouped matmuls and a softmax with the sink logit as one more column, with
no expanded K/V, padded sink key or mask, which in a cached decode step cost more than
the attention itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tilewarp.pipeline.reference import apply_rope, rope_cos_sin


def rope_tables(positions: torch.Tensor, rotary_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin ``[*positions.shape, rotary_dim / 2]`` fp32 (the reference's tables)."""
    cos, sin = rope_cos_sin(positions.reshape(-1), rotary_dim, theta)
    shape = (*positions.shape, rotary_dim // 2)
    return cos.view(shape), sin.view(shape)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [B, T, heads, dim]`` rotated at tables ``[B or 1, T, half]`` (reference ``apply_rope``)."""
    b, t, h, d = x.shape
    half = cos.shape[-1]
    c = cos.expand(b, t, half).reshape(b * t, half)
    s = sin.expand(b, t, half).reshape(b * t, half)
    return apply_rope(x.reshape(b * t, h, d), c.to(x.dtype), s.to(x.dtype)).view(b, t, h, d)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
           causal: bool = False, sink: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention with optional sinks.

    q ``[B, Hq, Tq, D]``, k ``[B, Hkv, Tk, D]``, v ``[B, Hkv, Tk, Dv]``; ``mask`` bool,
    broadcastable to ``[B, 1, Tq, Tk]`` (True = visible), or ``causal`` (Tq == Tk) with no mask;
    ``sink`` ``[Hq]`` logits. Query head h reads kv head ``h // (Hq / Hkv)``. Returns ``[B, Hq, Tq, Dv]``.
    """
    bsz, hq, tq, d = q.shape
    group = hq // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scale = d ** -0.5
    if sink is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                              scale=scale)
    if mask is None:
        tk = k.shape[2]
        mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq) if causal else \
            torch.ones(tq, tk, dtype=torch.bool, device=q.device)
    extra = 8 - d % 8                                   # >= 1 spare dim, total a multiple of 8
    dt = q.dtype
    pad_q = torch.zeros(bsz, hq, tq, extra, dtype=dt, device=q.device)
    pad_q[..., 0] = 1.0
    qx = torch.cat([q, pad_q], dim=-1)
    kx = F.pad(k, (0, extra))
    sink_key = torch.cat([torch.zeros(hq, d, dtype=dt, device=q.device), (sink.float() / scale).to(dt)[:, None],
                          torch.zeros(hq, extra - 1, dtype=dt, device=q.device)], dim=-1)
    kx = torch.cat([kx, sink_key[None, :, None, :].expand(bsz, -1, -1, -1)], dim=2)
    vx = torch.cat([v, v.new_zeros(bsz, hq, 1, v.shape[-1])], dim=2)
    mask = mask.expand(*mask.shape[:-2], tq, mask.shape[-1])
    mx = torch.cat([mask, torch.ones(*mask.shape[:-1], 1, dtype=torch.bool, device=mask.device)], dim=-1)
    return F.scaled_dot_product_attention(qx, kx, vx, attn_mask=mx, scale=scale)


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, sink: torch.Tensor | None = None
               ) -> torch.Tensor:
    """``attend`` for one query per row that sees every key given: q ``[B, Hq, 1, D]``, k ``[B, Hkv, T, D]``,
    v ``[B, Hkv, T, Dv]``, ``sink`` ``[Hq]`` -> ``[B, Hq, 1, Dv]`` (query head h reads kv head ``h // (Hq / Hkv)``)."""
    bsz, hq, _, d = q.shape
    hkv = k.shape[1]
    group = hq // hkv
    scores = torch.matmul(q.reshape(bsz, hkv, group, d), k.transpose(-1, -2)).float() * d ** -0.5   # [B, Hkv, G, T]
    if sink is not None:
        scores = torch.cat([scores, sink.float().view(1, hkv, group, 1).expand(bsz, -1, -1, 1)], dim=-1)
    probs = torch.softmax(scores, dim=-1)
    if sink is not None:
        probs = probs[..., :-1]                                   # the sink only enlarges the denominator
    return torch.matmul(probs.to(v.dtype), v).reshape(bsz, hq, 1, v.shape[-1])
