"""The CPU executor's ops: one module per op code, each with `run(ctx, args)`."""

from ..graph.ops import Op
from . import (accept, argmax_rows, attn_merge, attn_partial, copy_draft, draft_attn, draft_embed, draft_rope_kv,
               embed, expert_down, expert_up, export_hidden, linear, linear_swiglu, lm_head, moe_combine, rope_kv,
               route, sample)

IMPLS = {
    Op.EMBED: embed.run, Op.LINEAR: linear.run, Op.LINEAR_SWIGLU: linear_swiglu.run, Op.ROPE_KV: rope_kv.run,
    Op.ATTN_PARTIAL: attn_partial.run, Op.ATTN_MERGE: attn_merge.run, Op.ROUTE: route.run,
    Op.EXPERT_UP: expert_up.run, Op.EXPERT_DOWN: expert_down.run, Op.MOE_COMBINE: moe_combine.run,
    Op.LM_HEAD: lm_head.run, Op.SAMPLE: sample.run,
    Op.DRAFT_EMBED: draft_embed.run, Op.DRAFT_ROPE_KV: draft_rope_kv.run, Op.DRAFT_ATTN: draft_attn.run,
    Op.EXPORT_HIDDEN: export_hidden.run, Op.ARGMAX_ROWS: argmax_rows.run, Op.ACCEPT: accept.run,
    Op.COPY_DRAFT: copy_draft.run,
}
assert set(IMPLS) == set(Op), "every op needs a CPU implementation"
