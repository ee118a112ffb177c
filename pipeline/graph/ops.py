"""The op table: op codes and the meaning of each descriptor argument, defined once.

Every task descriptor carries an op code and `N_ARGS` int32 arguments. This table names
them per op; the CPU executor reads arguments by these names, and `csrc/` gets a
generated header (`render_c_header`) with the same codes and argument indices, checked
by a test, so Python and CUDA cannot drift apart.

Conventions: `*_off` are word offsets into the arena (4-byte words holding fp32 or
int32); `*_ld` are row strides in words; `w_*` are weight-table ids (-1 = none);
`kv` is a layer-table id: target layer L is id L, draft layer i of a DFlash program is
id `num_layers + i` (the program's `meta["draft_kv_base"]`); the id names the layer's KV
cache and attention shape. Rows of an activation are tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

N_ARGS = 16


class Op(IntEnum):
    EMBED = 1          # x[t, c0:c1] = E[tokens[t], c0:c1]
    LINEAR = 2         # out[t, n0:n1] = norm?(x)[t] @ W[n0:n1]^T (+ resid[t, n0:n1])
    LINEAR_SWIGLU = 3  # out[t, n0:n1] = silu(norm?(x) Wg^T) * (norm?(x) Wu^T)   (dense MLP gate/up)
    ROPE_KV = 4        # rotate q heads of one kv group and k; write K, V*scale to the cache
    ATTN_PARTIAL = 5   # one kv head, one chunk of keys: partial (max, sum, acc) per query row
    ATTN_MERGE = 6     # combine a kv head's chunks (+ sink in the denominator) -> attn out
    ROUTE = 7          # sigmoid router top-k -> slot table (distinct experts, their tokens)
    EXPERT_UP = 8      # one slot, rows i0:i1: act = silu(x Wg^T) * (x Wu^T), MXFP4 weights
    EXPERT_DOWN = 9    # one slot, rows h0:h1: y = act Wd^T, MXFP4 weights
    MOE_COMBINE = 10   # out[t, c0:c1] = resid + sum_k w[t,k] * y[slot(t,k), t, c0:c1]
    LM_HEAD = 11       # logits[t, n0:n1] = norm(x) @ W^T; per-tile (max, argmax) per token
    SAMPLE = 12        # reduce tile maxima -> token per row; advance the step state
    # DFlash (pipeline/graph/dflash_step.py); draft layers also reuse LINEAR, LINEAR_SWIGLU,
    # ATTN_MERGE and LM_HEAD, which read draft shapes through the layer table.
    DRAFT_EMBED = 13   # x[0, c0:c1] = E[tokens[0], c0:c1]; x[1:, c0:c1] = mask embedding
    DRAFT_ROPE_KV = 14 # one draft kv head: q/k RMSNorm + RoPE, V*scale; K/V into the draft cache
    DRAFT_ATTN = 15    # one draft kv head, one chunk of [context window ; block]: non-causal partial
    EXPORT_HIDDEN = 16 # out[t, c0:c1] = x[t, c0:c1]: a target layer's output into the drafter's input
    ARGMAX_ROWS = 17   # reduce tile maxima -> token per row (no state change)
    ACCEPT = 18        # greedy DFlash acceptance: commit, next anchor, advance the position
    COPY_DRAFT = 19    # copy drafting: proposals from the context where it repeats (dflash/copy_draft.py)


@dataclass(frozen=True)
class OpSpec:
    op: Op
    args: tuple[str, ...]
    doc: str

    def index(self, name: str) -> int:
        return self.args.index(name)

    @property
    def weight_args(self) -> tuple[int, ...]:
        """Indices of the arguments that are weight-table ids ("w", "w2", "w_*")."""
        return tuple(i for i, a in enumerate(self.args) if a in ("w", "w2") or a.startswith("w_"))


_X = ("x_off", "x_ld", "k", "t", "w_norm")  # input rows with an optional fused RMSNorm

OPS: dict[Op, OpSpec] = {s.op: s for s in (
    OpSpec(Op.EMBED, ("tok_off", "w", "out_off", "out_ld", "t", "c0", "c1"),
           "gather embedding rows for the step's tokens"),
    OpSpec(Op.LINEAR, _X + ("w", "n0", "n1", "out_off", "out_ld", "resid_off", "resid_ld"),
           "bf16 GEMV/GEMM tile with fused input RMSNorm and optional residual add"),
    OpSpec(Op.LINEAR_SWIGLU, _X + ("w", "w2", "n0", "n1", "out_off", "out_ld"),
           "bf16 gate/up tile with fused RMSNorm and SiLU(gate) * up epilogue"),
    OpSpec(Op.ROPE_KV, ("qkv_off", "qkv_ld", "t", "kv", "kvh", "q_off", "q_ld", "state_off", "w_rope", "layer"),
           "partial rotate-half RoPE on q (one kv group) and k; K and scaled V into the cache"),
    OpSpec(Op.ATTN_PARTIAL, ("q_off", "q_ld", "t", "kv", "kvh", "chunk", "chunk_len", "part_off", "state_off",
                             "layer"),
           "flash-decoding partial over one chunk of keys for one kv head (all its q heads)"),
    OpSpec(Op.ATTN_MERGE, ("part_off", "n_chunks", "t", "kvh", "w_sink", "out_off", "out_ld", "layer"),
           "merge chunk partials; the sink logit only adds to the denominator"),
    OpSpec(Op.ROUTE, ("logits_off", "t", "w_bias", "table_off", "layer"),
           "sigmoid scores, biased top-k choice, unbiased renormalised weights, slot table"),
    OpSpec(Op.EXPERT_UP, _X + ("w", "w2", "slot", "n0", "n1", "table_off", "act_off", "act_ld", "layer"),
           "MXFP4 gate/up rows n0:n1 for the tokens routed to one slot's expert"),
    OpSpec(Op.EXPERT_DOWN, ("act_off", "act_ld", "k", "t", "w", "slot", "n0", "n1", "table_off", "y_off",
                            "y_ld", "layer"),
           "MXFP4 down rows n0:n1 for one slot's tokens"),
    OpSpec(Op.MOE_COMBINE, ("y_off", "y_ld", "t", "table_off", "resid_off", "resid_ld", "out_off", "out_ld", "c0",
                            "c1", "layer"),
           "weighted sum of each token's experts plus the residual"),
    OpSpec(Op.LM_HEAD, _X + ("w", "n0", "n1", "logits_off", "logits_ld", "best_off", "tile", "state_off"),
           "vocab tile of logits with fused final norm; writes (max, argmax) per token of the logits, or, "
           "when state_off >= 0 and the state's inverse temperature is not 0, of logits * inv_temp + Gumbel "
           "noise keyed by (seed, position of the chosen token, token id): see pipeline/counter_rng.py"),
    OpSpec(Op.SAMPLE, ("best_off", "n_tiles", "t", "out_off", "state_off", "tok_off"),
           "greedy token per row from tile maxima; writes tokens and advances the position"),
    OpSpec(Op.DRAFT_EMBED, ("tok_off", "w", "w_mask", "out_off", "out_ld", "t", "c0", "c1"),
           "DFlash block input: the target's embedding of the anchor, then t-1 rows of the mask embedding"),
    OpSpec(Op.DRAFT_ROPE_KV, ("qkv_off", "qkv_ld", "t", "kv", "kvh", "q_off", "q_ld", "state_off", "w_rope",
                              "w_qnorm", "w_knorm"),
           "per-head q/k RMSNorm and RoPE at positions pos..pos+t-1, V times the layer's value scale; K/V "
           "into the draft cache at those positions; rotated q rows to q_off unless q_off < 0 (context rows)"),
    OpSpec(Op.DRAFT_ATTN, ("q_off", "q_ld", "t", "kv", "kvh", "chunk", "chunk_len", "part_off", "state_off"),
           "partial (max, sum, acc) per query row over draft-cache positions lo + chunk * chunk_len .. "
           "(clipped to pos + t), lo = max(0, pos - window); every row sees every key (non-causal)"),
    OpSpec(Op.EXPORT_HIDDEN, ("x_off", "x_ld", "t", "c0", "c1", "out_off", "out_ld"),
           "copy columns c0:c1 of t rows (out_off points at the layer's column block of the export)"),
    OpSpec(Op.ARGMAX_ROWS, ("best_off", "n_tiles", "t", "out_off"),
           "greedy token per row from tile maxima (lowest id among equal maxima), as int32 at out_off"),
    OpSpec(Op.ACCEPT, ("prop_off", "choice_off", "t", "tok_off", "out_off", "out_ld", "state_off", "hist_off"),
           "accept proposals while they equal the target's choice; commit them plus the target's next "
           "choice; write the count and tokens to out row STATE_STEP, the next anchor to tok_off; advance; "
           "with hist_off >= 0, the anchor and the accepted proposals into the token history at pos.."),
    OpSpec(Op.COPY_DRAFT, ("tok_off", "t", "logits_off", "logits_ld", "v", "hist_off", "state_off", "min_match",
                           "max_match", "trust"),
           "the latest earlier occurrence of the longest suffix (min_match..max_match tokens) of history[0:pos] "
           "+ the anchor tokens[0], in its last SEARCH_WINDOW tokens; what followed it (round the loop where "
           "it reaches the anchor) replaces the first k proposals tokens[1:1+k], k the copy length with the "
           "largest expected accepted length under the draft rows (trust / 1000: the copy's prior)"),
)}

for _spec in OPS.values():
    assert len(_spec.args) <= N_ARGS, _spec

#: Most weight-table ids one op takes (the megakernel's per-task table cache, TW_TABLE_AHEAD).
MAX_WEIGHT_ARGS = max(len(s.weight_args) for s in OPS.values())


# Step state block (int32 words at state_off): what only the device knows mid-run, and
# the request's sampling parameters, which the host writes at the start of a launch.
STATE_POS = 0       # committed tokens before this step (position of row 0)
STATE_STEP = 1      # steps completed by this launch
STATE_SEED = 2      # sampling seed (32 bits)
STATE_INV_TEMP = 3  # 1 / temperature as fp32 bits; 0 = greedy
STATE_WORDS = 4

# Slot table (int32 words at table_off) for S slots and T tokens, top-k K.
def slot_table_words(slots: int, t: int, k: int) -> int:
    return 1 + slots + slots + slots * t + t * k + t * k


def slot_table_fields(slots: int, t: int, k: int) -> dict[str, int]:
    """Word offsets inside a slot table: used count, expert per slot, tokens per slot,
    token list per slot, slot of each (token, choice), weight bits of each (token, choice)."""
    return {"n_used": 0, "expert": 1, "count": 1 + slots, "tokens": 1 + 2 * slots,
            "tok_slot": 1 + 2 * slots + slots * t, "tok_weight": 1 + 2 * slots + slots * t + t * k}


# Attention partials: per kv head, chunk and query row (t, head in group): [max, sum, acc...]
def partial_row_words(v_dim: int) -> int:
    return 2 + v_dim


def render_c_header() -> str:
    """The C mirror of this table (written to csrc/generated/ops.h)."""
    lines = ["// Generated by tilewarp.pipeline.graph.ops.render_c_header(). Do not edit.",
             "#pragma once", f"#define TW_N_ARGS {N_ARGS}", f"#define TW_STATE_POS {STATE_POS}",
             f"#define TW_STATE_STEP {STATE_STEP}", f"#define TW_STATE_SEED {STATE_SEED}",
             f"#define TW_STATE_INV_TEMP {STATE_INV_TEMP}", f"#define TW_STATE_WORDS {STATE_WORDS}", ""]
    for op, spec in OPS.items():
        lines.append(f"#define TW_OP_{op.name} {int(op)}")
        for i, a in enumerate(spec.args):
            lines.append(f"#define TW_{op.name}_{a.upper()} {i}")
        lines.append("")
    lines.append(f"#define TW_MAX_WEIGHT_ARGS {MAX_WEIGHT_ARGS}")
    lines.append("// Bit i set: argument i of op `op` is a weight-table id.")
    lines.append("__device__ __forceinline__ unsigned int tw_op_weight_args(int op) {")
    lines.append("    switch (op) {")
    for op, spec in OPS.items():
        if spec.weight_args:
            lines.append(f"        case TW_OP_{op.name}: return {sum(1 << i for i in spec.weight_args):#x}u;")
    lines.append("        default: return 0u;")
    lines.append("    }")
    lines.append("}")
    lines.append("")
    return "\n".join(lines)
