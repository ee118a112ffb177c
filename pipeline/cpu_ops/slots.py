"""Reading a slot table (written by ROUTE) from the expert ops."""

import torch

from ..graph.ops import slot_table_fields
from .context import Ctx


def slot_tokens(ctx: Ctx, table_off: int, slot: int, t: int) -> tuple[int, torch.Tensor] | None:
    """(expert id, token rows) of a used slot; None when the slot is unused this step."""
    cfg = ctx.cfg
    slots = min(t * cfg.top_k, cfg.num_experts)
    f = slot_table_fields(slots, t, cfg.top_k)
    tab = ctx.ints(table_off, f["tok_weight"] + t * cfg.top_k)
    if slot >= int(tab[f["n_used"]]):
        return None
    count = int(tab[f["count"] + slot])
    toks = tab[f["tokens"] + slot * t: f["tokens"] + slot * t + count].long()
    return int(tab[f["expert"] + slot]), toks
