"""MiMo-V2 layers computed a second time, from first principles, with explicit loops.

Deliberately independent of ``tilewarp.pipeline.reference`` (and of ``mxfp4``): if the
reference and this file agree, both read the model facts the same way. Slow but tiny.
"""

from __future__ import annotations

import math

import torch

from tilewarp.pipeline.weights import Weights

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def hand_dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """MXFP4 [out, in/2] codes + [out, in/32] E8M0 scales -> fp32 [out, in]; low nibble = even index."""
    out_rows, half = codes.shape
    table = torch.tensor(E2M1 + [-v for v in E2M1], dtype=torch.float64)
    nibbles = torch.empty(out_rows, 2 * half, dtype=torch.long)
    nibbles[:, 0::2] = (codes & 0x0F).long()
    nibbles[:, 1::2] = (codes >> 4).long()
    block_scale = torch.pow(2.0, scales.double() - 127).repeat_interleave(32, dim=1)
    return (table[nibbles] * block_scale).float()


def hand_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight.float()


def hand_rope(x: torch.Tensor, position: int, rotary_dim: int, theta: float) -> torch.Tensor:
    """Rotate pair (i, i + rotary_dim/2) by position * theta**(-2i/rotary_dim); other dims unchanged."""
    out = x.double().clone()
    half = rotary_dim // 2
    for i in range(half):
        angle = position * theta ** (-2 * i / rotary_dim)
        a, b = x[..., i].double(), x[..., i + half].double()
        out[..., i] = a * math.cos(angle) - b * math.sin(angle)
        out[..., i + half] = a * math.sin(angle) + b * math.cos(angle)
    return out.float()


def hand_swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    a = x @ gate.float().T
    return (a * torch.sigmoid(a) * (x @ up.float().T)) @ down.float().T


def hand_attention_block(weights: Weights, layer: int, x: torch.Tensor) -> torch.Tensor:
    """Attention of tokens at positions 0..T-1 (whole sequence at once, no cache), K/V rounded to bf16."""
    cfg = weights.cfg
    spec = cfg.attn(layer)
    p = f"model.layers.{layer}.self_attn"
    tokens, group = x.shape[0], spec.num_heads // spec.num_kv_heads
    rd = int(spec.head_dim * cfg.partial_rotary_factor)
    wq, wk, wv = (w.float() for w in weights.qkv(layer))
    q = (x @ wq.T).view(tokens, spec.num_heads, spec.head_dim)
    k = (x @ wk.T).view(tokens, spec.num_kv_heads, spec.head_dim)
    v = ((x @ wv.T) * cfg.value_scale).view(tokens, spec.num_kv_heads, spec.v_head_dim)
    q = torch.stack([hand_rope(q[t], t, rd, spec.rope_theta) for t in range(tokens)])
    k = torch.stack([hand_rope(k[t], t, rd, spec.rope_theta) for t in range(tokens)])
    k, v = k.to(torch.bfloat16).float(), v.to(torch.bfloat16).float()
    sink = weights.dense(f"{p}.attention_sink_bias").float() if spec.sink else None
    out = torch.zeros(tokens, spec.num_heads, spec.v_head_dim)
    for t in range(tokens):
        first = 0 if spec.window is None else max(0, t - spec.window)
        for h in range(spec.num_heads):
            kv = h // group
            scores = k[first:t + 1, kv] @ q[t, h] / math.sqrt(spec.head_dim)
            e = torch.exp(scores - scores.max())
            denom = e.sum() + (torch.exp(sink[h] - scores.max()) if sink is not None else 0.0)
            out[t, h] = (e[:, None] * v[first:t + 1, kv]).sum(0) / denom
    return out.reshape(tokens, -1) @ weights.dense(f"{p}.o_proj.weight").float().T


def hand_moe(weights: Weights, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, list[list[int]]]:
    """Per token: sigmoid scores, top-k of score + bias, renormalised unbiased weights, expert sum."""
    cfg = weights.cfg
    p = f"model.layers.{layer}.mlp"
    scores = torch.sigmoid(x @ weights.dense(f"{p}.gate.weight").float().T)
    bias = weights.dense(f"{p}.gate.e_score_correction_bias").float()
    out, chosen = torch.zeros_like(x), []
    for t in range(x.shape[0]):
        ranked = sorted(range(cfg.num_experts), key=lambda e: float(scores[t, e] + bias[e]), reverse=True)
        ids = ranked[:cfg.top_k]
        w = scores[t, ids]
        w = w / (w.sum() + 1e-20) * cfg.routed_scaling
        for e, we in zip(ids, w):
            mats = [hand_dequantize(*(weights.raw(f"{p}.experts.{e}.{proj}_proj.{s}")
                                      for s in ("weight", "weight_scale"))) for proj in ("gate", "up", "down")]
            out[t] += we * hand_swiglu(x[t:t + 1], *mats)[0]
        chosen.append(ids)
    return out, chosen


def hand_layer(weights: Weights, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, list[list[int]] | None]:
    """One decoder layer on the whole sequence: (output, chosen experts per token or None)."""
    cfg = weights.cfg
    p = f"model.layers.{layer}"
    x = x + hand_attention_block(weights, layer, hand_rms_norm(x, weights.dense(f"{p}.input_layernorm.weight"),
                                                               cfg.rms_eps))
    h = hand_rms_norm(x, weights.dense(f"{p}.post_attention_layernorm.weight"), cfg.rms_eps)
    if not cfg.is_moe(layer):
        return x + hand_swiglu(h, *(weights.dense(f"{p}.mlp.{n}_proj.weight") for n in ("gate", "up", "down"))), None
    y, chosen = hand_moe(weights, layer, h)
    return x + y, chosen
