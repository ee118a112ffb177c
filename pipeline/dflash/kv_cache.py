"""The drafter's KV cache: context K/V only.

Per draft layer, K and V are ``[kv_heads, slots, head_dim]`` bf16 (K after k-norm and RoPE,
V after the value scale: what attention reads). Only context tokens (committed tokens'
target features) live here; a block's own K/V are computed, used and dropped inside one
``propose``. With a window, a ring of ``window + MAX_STEP_TOKENS`` slots holds position
``p`` in slot ``p % slots``, so up to MAX_STEP_TOKENS appended-then-rejected tokens can be
rolled back without losing a key the next block reads; deeper rollbacks are refused.
"""

from __future__ import annotations

import torch

from ..errors import InputError, int_arg
from ..kv_cache import MAX_STEP_TOKENS
from .config import DraftConfig


class DraftKVCache:
    """Context K/V of every draft layer plus the context length."""

    def __init__(self, dcfg: DraftConfig, capacity: int, device: str | torch.device = "cpu"):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise InputError(f"capacity: drafter context capacity must be a positive int, got {capacity!r}")
        self.cfg = dcfg
        self.capacity = capacity
        self.length = 0
        self.slots = capacity if dcfg.window is None else min(capacity, dcfg.window + MAX_STEP_TOKENS)
        shape = (dcfg.num_kv_heads, self.slots, dcfg.head_dim)
        self.k = [torch.zeros(shape, dtype=torch.bfloat16, device=device) for _ in range(dcfg.num_layers)]
        self.v = [torch.zeros(shape, dtype=torch.bfloat16, device=device) for _ in range(dcfg.num_layers)]
        # Position held by each slot (-1: none), so a rollback past what the ring kept is refused.
        self.owner = torch.full((self.slots,), -1, dtype=torch.int64)

    def visible(self, anchor_position: int) -> torch.Tensor:
        """Context positions a block anchored at ``anchor_position`` reads: the ``window``
        tokens before the anchor (all of them without a window)."""
        first = 0 if self.cfg.window is None else max(0, anchor_position - self.cfg.window)
        return torch.arange(first, anchor_position)

    def write(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store K/V ``[T, kv_heads, head_dim]`` (T <= MAX_STEP_TOKENS: no slot written twice)."""
        slots = (positions % self.slots).to(self.k[layer].device)
        self.k[layer][:, slots] = k.transpose(0, 1).to(torch.bfloat16)
        self.v[layer][:, slots] = v.transpose(0, 1).to(torch.bfloat16)

    def commit(self, positions: torch.Tensor) -> None:
        """Mark ``positions`` (just written in every layer) as held; the length moves past them."""
        self.owner[positions.cpu() % self.slots] = positions.cpu()
        self.length = int(positions[-1]) + 1

    def mark_written(self, start: int, end: int) -> None:
        """Record that a device program wrote K/V of positions start..end-1 in every layer
        (a DFlash program's block or context rows), so that a later rollback needing a slot
        they overwrote is refused. The length is the caller's to set."""
        positions = torch.arange(start, end)
        self.owner[positions % self.slots] = positions

    def read(self, layer: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V ``[kv_heads, N, head_dim]`` fp32 of the given context positions."""
        slots = (positions % self.slots).to(self.k[layer].device)
        return self.k[layer][:, slots].float(), self.v[layer][:, slots].float()

    def check_room(self, tokens: int) -> None:
        if self.length + tokens > self.capacity:
            raise InputError(f"drafter context overflow: {self.length} cached + {tokens} new tokens > capacity "
                             f"{self.capacity}")

    def truncate(self, length: int) -> None:
        """Roll the context back to ``length`` tokens; refused if the ring lost a key the next block reads."""
        length = int_arg("length", length)
        if not 0 <= length <= self.length:
            raise InputError(f"length: cannot truncate the drafter context to {length}; it holds {self.length} tokens")
        needed = self.visible(length)
        stale = self.owner[needed % self.slots] != needed
        if bool(stale.any()):
            raise InputError(f"length: cannot roll the drafter context back to {length}: its ring keeps the last "
                             f"{self.slots} positions written and position {int(needed[stale][0])} was overwritten")
        self.length = length

    def reset(self) -> None:
        self.length = 0
        self.owner.fill_(-1)
