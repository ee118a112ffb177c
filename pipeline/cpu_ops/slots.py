"""Reading a slot table (ROUTE's, or one an EXPERT_UP built for itself) from the expert ops."""

import torch

from ..graph.ops import slot_table_fields
from .context import Ctx


def arena_table(ctx: Ctx, table_off: int, t: int) -> torch.Tensor:
    """The slot table at `table_off` of a step of `t` tokens (a view of the arena)."""
    cfg = ctx.cfg
    f = slot_table_fields(min(t * cfg.top_k, cfg.num_experts), t, cfg.top_k)
    return ctx.ints(table_off, f["tok_weight"] + t * cfg.top_k)


def slot_tokens(ctx: Ctx, tab: torch.Tensor, slot: int, t: int) -> tuple[int, torch.Tensor] | None:
    """(expert id, token rows) of a used slot of table `tab`; None when the slot is unused this step."""
    cfg = ctx.cfg
    f = slot_table_fields(min(t * cfg.top_k, cfg.num_experts), t, cfg.top_k)
    if slot >= int(tab[f["n_used"]]):
        return None
    count = int(tab[f["count"] + slot])
    toks = tab[f["tokens"] + slot * t: f["tokens"] + slot * t + count].long()
    return int(tab[f["expert"] + slot]), toks
