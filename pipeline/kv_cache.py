"""The KV cache layout every executor shares.

Per layer, K is ``[kv_heads, slots, head_dim]`` and V is ``[kv_heads, slots, v_head_dim]``,
both bf16 (K after RoPE, V after the value scale: the cache holds exactly what attention
reads). Global layers have one slot per position up to the capacity. Sliding-window
layers keep a ring of ``window + MAX_STEP_TOKENS`` slots, position ``p`` in slot
``p % slots``: a step of up to MAX_STEP_TOKENS tokens never overwrites a key that one of
its own queries (or a query after a rollback of that step) still needs, so rejecting
speculative tokens is just moving the length back.
"""

from __future__ import annotations

import torch

from .config import ModelConfig
from .errors import InputError

#: Most tokens one step may process (decode T = 1, DFlash verify T = B <= 16).
MAX_STEP_TOKENS = 16


def layer_slots(cfg: ModelConfig, layer: int, capacity: int) -> int:
    spec = cfg.attn(layer)
    if spec.window is None:
        return capacity
    return min(capacity, spec.window + MAX_STEP_TOKENS)


class KVCache:
    """K/V tensors for every layer plus the committed length."""

    def __init__(self, cfg: ModelConfig, capacity: int, device: str | torch.device = "cpu"):
        if capacity <= 0 or capacity > cfg.max_position:
            raise InputError(f"KV cache capacity {capacity} not in [1, max_position={cfg.max_position}]")
        self.cfg = cfg
        self.capacity = capacity
        self.length = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        for layer in range(cfg.num_layers):
            s = cfg.attn(layer)
            n = layer_slots(cfg, layer, capacity)
            self.k.append(torch.zeros(s.num_kv_heads, n, s.head_dim, dtype=torch.bfloat16, device=device))
            self.v.append(torch.zeros(s.num_kv_heads, n, s.v_head_dim, dtype=torch.bfloat16, device=device))

    def slots(self, layer: int) -> int:
        return self.k[layer].shape[1]

    def slot_of(self, layer: int, positions: torch.Tensor) -> torch.Tensor:
        return positions % self.slots(layer)

    def check_room(self, tokens: int) -> None:
        if self.length + tokens > self.capacity:
            raise InputError(f"context overflow: {self.length} cached + {tokens} new tokens > capacity "
                             f"{self.capacity}")

    def truncate(self, length: int) -> None:
        """Roll back to `length` committed tokens (rejected speculation)."""
        if not 0 <= length <= self.length:
            raise InputError(f"cannot truncate KV cache of length {self.length} to {length}")
        self.length = length
