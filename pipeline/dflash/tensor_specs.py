"""The tensors of a DFlash drafter checkpoint: names, shapes, dtypes.

This table is the drafter's checkpoint contract, like ``pipeline/tensor_specs.py`` is the
target's: the generator writes exactly these tensors and the loader accepts exactly these.
The target's embedding and lm_head are *not* here: the drafter uses the target's frozen
ones. The MASK embedding is a plain tensor (``mask_embedding``, ``[hidden]``), so the whole
drafter loads through safetensors (the MiMo release ships it as a pickle, ``mask_embedding.pt``).
All tensors are bf16.
"""

from __future__ import annotations

import torch

from ..tensor_specs import TensorSpec
from .config import DraftConfig

BF16 = torch.bfloat16


def draft_layer_prefix(layer: int) -> str:
    return f"layers.{layer}"


def draft_tensor_specs(dcfg: DraftConfig) -> list[TensorSpec]:
    """Every tensor of a drafter checkpoint of ``dcfg``, in a stable order."""
    h, hd, inter = dcfg.hidden_size, dcfg.head_dim, dcfg.intermediate_size
    specs = [TensorSpec("fc.weight", (h, dcfg.context_width), BF16, "fc", "bf16"),
             TensorSpec("hidden_norm.weight", (h,), BF16, "norm", "bf16")]
    for layer in range(dcfg.num_layers):
        p = draft_layer_prefix(layer)
        specs += [
            TensorSpec(f"{p}.input_layernorm.weight", (h,), BF16, "norm", "bf16"),
            TensorSpec(f"{p}.self_attn.q_proj.weight", (dcfg.num_heads * hd, h), BF16, "attention", "bf16"),
            TensorSpec(f"{p}.self_attn.k_proj.weight", (dcfg.num_kv_heads * hd, h), BF16, "attention", "bf16"),
            TensorSpec(f"{p}.self_attn.v_proj.weight", (dcfg.num_kv_heads * hd, h), BF16, "attention", "bf16"),
            TensorSpec(f"{p}.self_attn.o_proj.weight", (h, dcfg.num_heads * hd), BF16, "attention", "bf16"),
            TensorSpec(f"{p}.self_attn.q_norm.weight", (hd,), BF16, "norm", "bf16"),
            TensorSpec(f"{p}.self_attn.k_norm.weight", (hd,), BF16, "norm", "bf16"),
        ]
        if dcfg.sink:
            specs.append(TensorSpec(f"{p}.self_attn.attention_sink_bias", (dcfg.num_heads,), BF16, "sink", "bf16"))
        specs += [
            TensorSpec(f"{p}.post_attention_layernorm.weight", (h,), BF16, "norm", "bf16"),
            TensorSpec(f"{p}.mlp.gate_proj.weight", (inter, h), BF16, "dense_mlp", "bf16"),
            TensorSpec(f"{p}.mlp.up_proj.weight", (inter, h), BF16, "dense_mlp", "bf16"),
            TensorSpec(f"{p}.mlp.down_proj.weight", (h, inter), BF16, "dense_mlp", "bf16"),
        ]
    specs += [TensorSpec("norm.weight", (h,), BF16, "norm", "bf16"),
              TensorSpec("mask_embedding", (h,), BF16, "embed", "bf16")]
    return specs
