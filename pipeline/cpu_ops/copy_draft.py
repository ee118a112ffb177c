"""COPY_DRAFT: copy drafting inside the chained DFlash program (`dflash/copy_draft.py`).

Runs after the draft pass's ARGMAX_ROWS: tokens[0] is the anchor, tokens[1:t] the
drafter's proposals, the draft logits rows 0..t-2 their distributions, and the
token history holds the committed context at positions 0..pos-1 (ACCEPT appends to it).
The proposals are replaced by the copy the reference decoder makes, before the target
verifies the block.
"""

import torch

from ..dflash.copy_draft import CopyDraft, copied_prefix
from .context import Ctx


def run(ctx: Ctx, a: dict[str, int]) -> None:
    t, pos = a["t"], ctx.pos(a["state_off"])
    tok = ctx.ints(a["tok_off"], t)
    seq = ctx.ints(a["hist_off"], pos).tolist() + [int(tok[0])]
    logits = ctx.rows(a["logits_off"], a["logits_ld"], t - 1, a["v"])
    prefix = copied_prefix(seq, logits, CopyDraft(a["min_match"], a["max_match"], a["trust"]))
    tok[1:1 + len(prefix)] = torch.tensor(prefix, dtype=torch.int32)
