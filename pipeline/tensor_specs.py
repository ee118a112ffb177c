"""The tensors a config implies: published MiMo-V2 names, shapes and stored dtypes.

This table is the checkpoint contract. The generator writes exactly these tensors, the
loader accepts exactly these (missing, extra, wrong shape or dtype is an error), and the
weight store reads them back through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig, ceil_div

BF16, F32, U8, FP8 = torch.bfloat16, torch.float32, torch.uint8, torch.float8_e4m3fn


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    group: str     # embed | lm_head | norm | attention | sink | dense_mlp | router | experts
    codec: str     # bf16 | fp8 | fp8_scale | mxfp4 | mxfp4_scale


def layer_prefix(layer: int) -> str:
    return f"model.layers.{layer}"


def expert_name(layer: int, expert: int, proj: str) -> str:
    return f"{layer_prefix(layer)}.mlp.experts.{expert}.{proj}_proj.weight"


def qkv_rows(cfg: ModelConfig, layer: int) -> tuple[int, int, int]:
    s = cfg.attn(layer)
    return s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.num_kv_heads * s.v_head_dim


def _weight(name: str, out: int, inp: int, codec: str, group: str, block: tuple[int, int]) -> list[TensorSpec]:
    if codec == "fp8":
        return [TensorSpec(name, (out, inp), FP8, group, "fp8"),
                TensorSpec(name + "_scale_inv", (ceil_div(out, block[0]), ceil_div(inp, block[1])), F32, group,
                           "fp8_scale")]
    return [TensorSpec(name, (out, inp), BF16, group, "bf16")]


def _mxfp4(name: str, out: int, inp: int, block: int) -> list[TensorSpec]:
    return [TensorSpec(name, (out, inp // 2), U8, "experts", "mxfp4"),
            TensorSpec(name.removesuffix(".weight") + ".weight_scale", (out, inp // block), U8, "experts",
                       "mxfp4_scale")]


def tensor_specs(cfg: ModelConfig) -> list[TensorSpec]:
    """Every tensor of a checkpoint of `cfg`, in a stable order (file layout follows it)."""
    h, q = cfg.hidden_size, cfg.quant
    fb = q.fp8_block
    specs = [TensorSpec("model.embed_tokens.weight", (cfg.vocab_size, h), BF16, "embed", "bf16")]
    for layer in range(cfg.num_layers):
        p = layer_prefix(layer)
        s = cfg.attn(layer)
        specs += [TensorSpec(f"{p}.input_layernorm.weight", (h,), BF16, "norm", "bf16"),
                  TensorSpec(f"{p}.post_attention_layernorm.weight", (h,), BF16, "norm", "bf16")]
        rq, rk, rv = qkv_rows(cfg, layer)
        if cfg.fused_qkv:
            specs += _weight(f"{p}.self_attn.qkv_proj.weight", rq + rk + rv, h, q.attn_qkv, "attention", fb)
        else:
            for nm, rows in (("q", rq), ("k", rk), ("v", rv)):
                specs += _weight(f"{p}.self_attn.{nm}_proj.weight", rows, h, q.attn_qkv, "attention", fb)
        specs += [TensorSpec(f"{p}.self_attn.o_proj.weight", (h, s.num_heads * s.v_head_dim), BF16, "attention",
                             "bf16")]
        if s.sink:
            specs.append(TensorSpec(f"{p}.self_attn.attention_sink_bias", (s.num_heads,), BF16, "sink", "bf16"))
        if cfg.is_moe(layer):
            e, i = cfg.num_experts, cfg.moe_intermediate
            specs += [TensorSpec(f"{p}.mlp.gate.weight", (e, h), BF16, "router", "bf16"),
                      TensorSpec(f"{p}.mlp.gate.e_score_correction_bias", (e,), BF16, "router", "bf16")]
            for ex in range(e):
                for proj, out, inp in (("gate", i, h), ("up", i, h), ("down", h, i)):
                    name = expert_name(layer, ex, proj)
                    if q.experts == "mxfp4":
                        specs += _mxfp4(name, out, inp, q.mxfp4_block)
                    else:
                        specs.append(TensorSpec(name, (out, inp), BF16, "experts", "bf16"))
        else:
            i = cfg.dense_intermediate
            for proj, out, inp in (("gate", i, h), ("up", i, h), ("down", h, i)):
                specs += _weight(f"{p}.mlp.{proj}_proj.weight", out, inp, q.dense_mlp, "dense_mlp", fb)
    specs.append(TensorSpec("model.norm.weight", (h,), BF16, "norm", "bf16"))
    if not cfg.tie_word_embeddings:
        specs.append(TensorSpec("lm_head.weight", (cfg.vocab_size, h), BF16, "lm_head", "bf16"))
    return specs
