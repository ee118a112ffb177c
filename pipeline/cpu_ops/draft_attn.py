"""DRAFT_ATTN: one draft kv head, one chunk of key positions; for each query row (block
row t, head j of the group; row = t * group + j) write [max score, sum of exp, sum of
exp * v], as ATTN_PARTIAL does, so ATTN_MERGE combines the chunks and adds the sink.

The keys are the draft cache positions lo .. pos+t-1: the context window before the
anchor (lo = max(0, pos - window), 0 without a window) and the block's own t keys, which
DRAFT_ROPE_KV put at pos..pos+t-1. Chunk c covers lo + c * chunk_len onwards; a chunk
past the end writes an empty partial (max -inf, sum 0). Every row sees every key:
attention is non-causal inside the block, and the window is measured from the anchor,
so all rows share one key set."""

import torch

from .attn_partial import write_empty, write_partial
from .context import Ctx


def key_range(window: int | None, chunk: int, chunk_len: int, pos: int, t: int) -> tuple[int, int]:
    lo = 0 if window is None else max(0, pos - window)
    start = lo + chunk * chunk_len
    return start, min(start + chunk_len, pos + t)


def run(ctx: Ctx, a: dict[str, int]) -> None:
    spec = ctx.layer(a["kv"])
    h, t, grp, hd, vd = a["kvh"], a["t"], spec.group, spec.head_dim, spec.v_dim
    pos = ctx.pos(a["state_off"])
    lo, hi = key_range(spec.window, a["chunk"], a["chunk_len"], pos, t)
    out = ctx.rows(a["part_off"], 2 + vd, t * grp, 2 + vd)
    if lo >= hi:
        write_empty(out)
        return
    slots = spec.slot_of(torch.arange(lo, hi))
    k = spec.k[h, slots].float()                          # [N, hd]
    v = spec.v[h, slots].float()                          # [N, vd]
    q = ctx.rows(a["q_off"] + h * grp * hd, a["q_ld"], t, grp * hd).reshape(t * grp, hd)
    write_partial(out, q, k, v)   # non-causal inside the block: every key in range is visible
