"""The weight table a program indexes: program weight names -> checkpoint tensors.

Builders name weights by role (`L3.qkv`, `L5.experts.down`); this module is the one map
from those names to the checkpoint, used by the CPU executor and by the runtime's upload
(which may repack further for the GPU). Entries:

* bf16   : one bf16 matrix [rows, cols] (q/k/v concatenated row-wise for `Lk.qkv`);
* vector : one bf16 vector (norm weights, sink logits, router bias);
* mxfp4_bank : all experts of a projection stacked: codes [E, rows, cols/2], scales [E, rows, cols/32];
* rope   : fp32 cos and sin [capacity, rotary_dim/2] for one theta, formed in float64 once
  (the reference's own table), so no executor forms angles in fp32.

DFlash programs also name the drafter's tensors (`dflash/tensor_specs.py`): `D.fc`,
`D.hidden_norm`, `D.mask`, `D.norm`, and per draft layer i `D{i}.qkv` (q, k, v rows
concatenated, like the target's), `D{i}.o|gate|up|down|norm_in|norm_post|q_norm|k_norm|sink`;
the drafter shares the target's `embed` and `lm_head` entries.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from .dflash.tensor_specs import draft_layer_prefix
from .errors import GraphError
from .reference import rope_cos_sin
from .tensor_specs import layer_prefix
from .weights import Weights

if TYPE_CHECKING:
    from .dflash.weights import DraftWeights

_LAYER = re.compile(r"^L(\d+)\.(.+)$")
_VECTORS = {"norm_in": "input_layernorm.weight", "norm_post": "post_attention_layernorm.weight",
            "sink": "self_attn.attention_sink_bias", "router_bias": "mlp.gate.e_score_correction_bias"}
_MATRICES = {"o": "self_attn.o_proj.weight", "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight",
             "down": "mlp.down_proj.weight", "router": "mlp.gate.weight"}
_DRAFT = re.compile(r"^D(\d*)\.(.+)$")
_DRAFT_GLOBAL = {"fc": "fc.weight", "hidden_norm": "hidden_norm.weight", "mask": "mask_embedding",
                 "norm": "norm.weight"}
_DRAFT_LAYER = {"o": "self_attn.o_proj.weight", "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight",
                "down": "mlp.down_proj.weight", "norm_in": "input_layernorm.weight",
                "norm_post": "post_attention_layernorm.weight", "q_norm": "self_attn.q_norm.weight",
                "k_norm": "self_attn.k_norm.weight", "sink": "self_attn.attention_sink_bias"}


def materialize(name: str, weights: Weights, detail: dict | None = None,
                draft: "DraftWeights | None" = None) -> dict[str, torch.Tensor]:
    """The tensors behind one program weight name (`detail`: the program's declaration;
    `draft`: the drafter, for the `D*` names of DFlash programs)."""
    m = _DRAFT.match(name)
    if m:
        return {"w": _draft_tensor(name, m.group(1), m.group(2), draft)}
    if name.startswith("rope."):
        d = detail or {}
        cos, sin = rope_cos_sin(torch.arange(d["rows"]), 2 * d["cols"], d["theta"])
        return {"cos": cos, "sin": sin}
    if name == "embed":
        return {"w": weights.dense("model.embed_tokens.weight")}
    if name == "lm_head":
        return {"w": weights.lm_head()}
    if name == "norm_final":
        return {"w": weights.raw("model.norm.weight")}
    m = _LAYER.match(name)
    if not m:
        raise GraphError(f"unknown program weight {name!r}")
    layer, role = int(m.group(1)), m.group(2)
    p = layer_prefix(layer) + "."
    if role == "qkv":
        return {"w": torch.cat(weights.qkv(layer), dim=0)}
    if role in _VECTORS:
        return {"w": weights.raw(p + _VECTORS[role])}
    if role in _MATRICES:
        return {"w": weights.dense(p + _MATRICES[role])}
    if role.startswith("experts."):
        proj = role.split(".", 1)[1]
        e = weights.cfg.num_experts
        parts = [weights.expert(layer, i, proj) for i in range(e)]
        return {"codes": torch.stack([q.codes for q in parts]), "scales": torch.stack([q.scales for q in parts])}
    raise GraphError(f"unknown program weight {name!r}")


def _draft_tensor(name: str, layer: str, role: str, draft: "DraftWeights | None") -> torch.Tensor:
    if draft is None:
        raise GraphError(f"program weight {name!r} belongs to a drafter, and none was given")
    if not layer and role in _DRAFT_GLOBAL:
        return draft.get(_DRAFT_GLOBAL[role])
    if layer:
        p = f"{draft_layer_prefix(int(layer))}."
        if role == "qkv":
            return torch.cat([draft.get(p + f"self_attn.{x}_proj.weight") for x in "qkv"], dim=0)
        if role in _DRAFT_LAYER:
            return draft.get(p + _DRAFT_LAYER[role])
    raise GraphError(f"unknown drafter weight {name!r}")


def weight_table(decls: list, weights: Weights, draft: "DraftWeights | None" = None) -> list[dict[str, torch.Tensor]]:
    """Tensors for each of a program's `WeightInfo` entries, in weight-id order."""
    return [materialize(d.name, weights, d.detail, draft) for d in sorted(decls, key=lambda d: d.index)]
