"""The CPU executor's ops: one module per op code, each with `run(ctx, args)`."""

from ..graph.ops import Op
from . import (attn_merge, attn_partial, embed, expert_down, expert_up, linear, linear_swiglu, lm_head,
               moe_combine, rope_kv, route, sample)

IMPLS = {
    Op.EMBED: embed.run, Op.LINEAR: linear.run, Op.LINEAR_SWIGLU: linear_swiglu.run, Op.ROPE_KV: rope_kv.run,
    Op.ATTN_PARTIAL: attn_partial.run, Op.ATTN_MERGE: attn_merge.run, Op.ROUTE: route.run,
    Op.EXPERT_UP: expert_up.run, Op.EXPERT_DOWN: expert_down.run, Op.MOE_COMBINE: moe_combine.run,
    Op.LM_HEAD: lm_head.run, Op.SAMPLE: sample.run,
}
assert set(IMPLS) == set(Op), "every op needs a CPU implementation"
