"""examples/bench_ops.py times each op inside the real step; attention rows are split by
the kind of layer they belong to (global or sliding-window), every other op is one row."""

from __future__ import annotations

from examples.bench_ops import layer_kind_label
from tilewarp.pipeline.presets import preset


def test_attention_rows_carry_their_layer_kind_and_other_ops_keep_their_name():
    cfg = preset("mimo-mini")   # global layers 0 and 8, sliding-window elsewhere
    label = layer_kind_label(cfg)
    assert label("ATTN_PARTIAL", "L0.attn") == "ATTN_PARTIAL (global)"
    assert label("ATTN_MERGE", "L8.merge") == "ATTN_MERGE (global)"
    assert label("ATTN_PARTIAL", "L3.attn") == "ATTN_PARTIAL (swa)"
    assert label("EXPERT_UP", "L3.up") == "EXPERT_UP"
    assert label("ATTN_PARTIAL", "D0.attn") == "ATTN_PARTIAL"   # a drafter stage: not a target layer
