"""What a CPU op sees: the arena as fp32/int32 views, the weight table, the KV cache (and
the drafter's context cache in DFlash programs), and the layer table over both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..config import ModelConfig
from ..graph.ops import STATE_POS
from ..kv_cache import KVCache
from .layer_view import LayerView, layer_view

if TYPE_CHECKING:
    from ..dflash.kv_cache import DraftKVCache


@dataclass
class Ctx:
    cfg: ModelConfig
    arena: torch.Tensor                    # fp32 words
    weights: list[dict[str, torch.Tensor]]
    cache: KVCache
    draft_cache: "DraftKVCache | None" = None

    @property
    def arena_i(self) -> torch.Tensor:
        return self.arena.view(torch.int32)

    def rows(self, off: int, ld: int, rows: int, cols: int) -> torch.Tensor:
        """A [rows, cols] fp32 view with row stride `ld` (reads and in-place writes)."""
        return self.arena.as_strided((rows, cols), (ld, 1), off)

    def ints(self, off: int, n: int) -> torch.Tensor:
        return self.arena_i[off:off + n]

    def pos(self, state_off: int) -> int:
        return int(self.arena_i[state_off + STATE_POS])

    def w(self, wid: int, key: str = "w") -> torch.Tensor:
        return self.weights[wid][key]

    def layer(self, layer: int) -> LayerView:
        """Layer-table id -> KV cache and attention shape (target or draft layer)."""
        return layer_view(self.cfg, self.cache, self.draft_cache, layer)


def rms_norm_rows(ctx: Ctx, x: torch.Tensor, w_norm: int) -> torch.Tensor:
    """The fused input RMSNorm of LINEAR-like ops (fp32; weight applied after normalising)."""
    if w_norm < 0:
        return x
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + ctx.cfg.rms_eps) * ctx.w(w_norm).float()
