"""The DFlash drafter computed a second time, from MODEL_FACTS, with explicit loops in float64.

Deliberately independent of ``tilewarp.pipeline.dflash.draft_model`` and of
``tilewarp.pipeline.reference``: one query, one head, one key at a time. Only the storage
precision is shared: K and V are rounded to bf16, as every executor's cache holds them.
"""

from __future__ import annotations

import math

import torch

from tilewarp.pipeline.dflash.config import DraftConfig


def rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight.double()


def rope(x: torch.Tensor, position: int, rotary_dim: int, theta: float) -> torch.Tensor:
    """Rotate pair (i, i + rotary_dim/2) of each head by position * theta**(-2i/rotary_dim)."""
    out = x.clone()
    half = rotary_dim // 2
    for i in range(half):
        angle = position * theta ** (-2 * i / rotary_dim)
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * math.cos(angle) - b * math.sin(angle)
        out[..., i + half] = b * math.cos(angle) + a * math.sin(angle)
    return out


def bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).double()


def hand_draft_logits(cfg: DraftConfig, t: dict[str, torch.Tensor], embed: torch.Tensor, lm_head: torch.Tensor,
                      features: torch.Tensor, anchor: int, position: int) -> torch.Tensor:
    """Draft logits ``[B, V]`` for the block at ``position``; ``features [position, K*H]`` are the
    concatenated target hidden states of every context token."""
    w = {name: v.double() for name, v in t.items()}
    eps, hd, b = cfg.rms_eps, cfg.head_dim, cfg.block_size
    context = rms(features.double() @ w["fc.weight"].T, w["hidden_norm.weight"], eps)
    first = 0 if cfg.window is None else max(0, position - cfg.window)
    x = torch.stack([embed[anchor].double()] + [w["mask_embedding"]] * (b - 1))
    for layer in range(cfg.num_layers):
        p = f"layers.{layer}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)

        def key_value(vec: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
            k = (w[p + "self_attn.k_proj.weight"] @ vec).view(cfg.num_kv_heads, hd)
            k = rope(rms(k, w[p + "self_attn.k_norm.weight"], eps), pos, cfg.rotary_dim, cfg.rope_theta)
            v = (w[p + "self_attn.v_proj.weight"] @ vec).view(cfg.num_kv_heads, hd) * cfg.value_scale
            return bf16(k), bf16(v)

        keys = [key_value(context[pos], pos) for pos in range(first, position)]      # the window of context
        keys += [key_value(h[i], position + i) for i in range(b)]                     # the whole block: non-causal
        attn = torch.zeros(b, cfg.num_heads * hd, dtype=torch.float64)
        for i in range(b):
            q = (w[p + "self_attn.q_proj.weight"] @ h[i]).view(cfg.num_heads, hd)
            q = rope(rms(q, w[p + "self_attn.q_norm.weight"], eps), position + i, cfg.rotary_dim, cfg.rope_theta)
            for head in range(cfg.num_heads):
                kv = head // cfg.group
                scores = [float(q[head] @ k[kv]) / math.sqrt(hd) for k, _ in keys]
                sink = float(w[p + "self_attn.attention_sink_bias"][head]) if cfg.sink else -math.inf
                top = max(scores + [sink])
                weights = [math.exp(s - top) for s in scores]
                denom = sum(weights) + math.exp(sink - top)
                attn[i, head * hd:(head + 1) * hd] = sum(wt * v[kv] for wt, (_, v) in zip(weights, keys)) / denom
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        h2 = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = h2 @ w[p + "mlp.gate_proj.weight"].T, h2 @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["norm.weight"], eps) @ lm_head.double().T
