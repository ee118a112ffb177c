"""The CPU side of the device's layer table: per layer-table id, its KV cache and shape.

Target layer L is id L; draft layer i of a DFlash program is id `num_layers + i` (see
`graph.ops`). Ops that serve both models (ATTN_MERGE) and the draft ops read shapes here
rather than from `ModelConfig`, as the megakernel reads them from its `TwLayer` table,
so one op code covers both models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..config import ModelConfig
from ..errors import GraphError
from ..kv_cache import KVCache

if TYPE_CHECKING:
    from ..dflash.kv_cache import DraftKVCache


@dataclass(frozen=True)
class LayerView:
    k: torch.Tensor          # [kv_heads, slots, head_dim] bf16
    v: torch.Tensor          # [kv_heads, slots, v_dim] bf16
    heads: int
    kv_heads: int
    head_dim: int
    v_dim: int
    rotary_dim: int
    window: int | None
    value_scale: float

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads

    def slot_of(self, positions: torch.Tensor) -> torch.Tensor:
        return positions % self.k.shape[1]


def layer_view(cfg: ModelConfig, cache: KVCache, draft_cache: "DraftKVCache | None", layer: int) -> LayerView:
    """The view of layer-table id `layer`."""
    if 0 <= layer < cfg.num_layers:
        s = cfg.attn(layer)
        return LayerView(cache.k[layer], cache.v[layer], s.num_heads, s.num_kv_heads, s.head_dim, s.v_head_dim,
                         cfg.rotary_dim(s), s.window, cfg.value_scale)
    i = layer - cfg.num_layers
    if draft_cache is None or not 0 <= i < draft_cache.cfg.num_layers:
        raise GraphError(f"layer-table id {layer}: no such target layer, and no draft layer {i} "
                         f"({'no drafter attached' if draft_cache is None else 'out of range'})")
    d = draft_cache.cfg
    return LayerView(draft_cache.k[i], draft_cache.v[i], d.num_heads, d.num_kv_heads, d.head_dim, d.head_dim,
                     d.rotary_dim, d.window, d.value_scale)
