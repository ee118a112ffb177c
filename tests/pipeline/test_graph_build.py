"""Graph builders: the tasks of a step are the ones the model needs, each touches only its
own buffers, every output is written exactly once, and impossible steps are refused.

Expected counts are derived from the config (not copied from the builder), so the tests
read as the rule: one ROPE_KV per kv head per layer, one ROUTE per MoE layer, and so on.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from tilewarp.pipeline.config import BYTES_PER, ceil_div
from tilewarp.pipeline.errors import GraphError
from tilewarp.pipeline.graph.ir import At, Cost, Graph
from tilewarp.pipeline.graph.ops import Op
from tilewarp.pipeline.graph.step import build_decode_step, build_step, build_verify_step
from tilewarp.pipeline.graph.tiling import TilePolicy, attention_chunk
from tilewarp.pipeline.kv_cache import MAX_STEP_TOKENS
from tilewarp.pipeline.presets import preset

CFG = preset("tiny")
CAP = 256


def by_op(g: Graph) -> dict[Op, list]:
    out: dict[Op, list] = defaultdict(list)
    for t in g.tasks:
        out[t.op].append(t)
    return out


def chunks(layer: int, capacity: int = CAP, workers: int = TilePolicy().workers) -> int:
    s = CFG.attn(layer)
    return 1 if s.window is not None else ceil_div(capacity, attention_chunk(capacity, s.num_kv_heads, workers))


@pytest.fixture(scope="module", params=[("decode", 1), ("verify", 3), ("verify", 8), ("verify", 16)],
                ids=lambda p: f"{p[0]}{p[1]}")
def graph(request) -> Graph:
    kind, t = request.param
    return build_step(CFG, t, kind=kind, capacity=CAP)


# ------------------------------------------------------------------ task counts
def test_one_rope_kv_and_one_merge_per_kv_head_per_layer(graph):
    ops = by_op(graph)
    heads = [(layer, h) for layer in range(CFG.num_layers) for h in range(CFG.attn(layer).num_kv_heads)]
    assert sorted((t.layer, t.args["kvh"]) for t in ops[Op.ROPE_KV]) == heads
    assert sorted((t.layer, t.args["kvh"]) for t in ops[Op.ATTN_MERGE]) == heads


def test_attention_partials_are_one_per_kv_head_and_key_chunk(graph):
    got = sorted((t.layer, t.args["kvh"], t.args["chunk"]) for t in by_op(graph)[Op.ATTN_PARTIAL])
    want = [(layer, h, c) for layer in range(CFG.num_layers) for h in range(CFG.attn(layer).num_kv_heads)
            for c in range(chunks(layer))]
    assert got == want
    assert any(chunks(layer) > 1 for layer in CFG.global_layers), "tiny should split a global layer's keys"


def test_one_route_per_moe_layer_and_gate_up_only_on_dense_layers(graph):
    ops = by_op(graph)
    moe = [layer for layer in range(CFG.num_layers) if CFG.is_moe(layer)]
    assert [t.layer for t in ops[Op.ROUTE]] == moe
    assert {t.layer for t in ops[Op.LINEAR_SWIGLU]} == set(range(CFG.num_layers)) - set(moe)
    assert {t.layer for t in ops[Op.EXPERT_UP]} == {t.layer for t in ops[Op.EXPERT_DOWN]} == set(moe)


def test_expert_slots_are_min_of_tokens_times_top_k_and_experts(graph):
    slots = min(graph.tokens * CFG.top_k, CFG.num_experts)
    for op in (Op.EXPERT_UP, Op.EXPERT_DOWN):
        per_layer: dict[int, set[int]] = defaultdict(set)
        for t in by_op(graph)[op]:
            per_layer[t.layer].add(t.args["slot"])
        assert all(s == set(range(slots)) for s in per_layer.values()), op.name
    # every slot of a layer is cut into the same tiles
    tiles = defaultdict(set)
    for t in by_op(graph)[Op.EXPERT_UP]:
        tiles[(t.layer, t.args["slot"])].add((t.args["n0"], t.args["n1"]))
    assert len({frozenset(v) for v in tiles.values()}) == 1


def test_one_embed_lm_head_tiles_and_a_single_sample_at_the_end(graph):
    ops = by_op(graph)
    assert len(ops[Op.SAMPLE]) == 1 and graph.tasks[-1].op == Op.SAMPLE
    assert ops[Op.SAMPLE][0].args["n_tiles"] == len(ops[Op.LM_HEAD])
    assert [t.args["tile"] for t in ops[Op.LM_HEAD]] == list(range(len(ops[Op.LM_HEAD])))
    assert graph.tasks[0].op == Op.EMBED
    per_layer_linear = 3   # qkv, o, and the router (MoE) or the down projection (dense)
    assert len(ops[Op.LINEAR]) >= per_layer_linear * CFG.num_layers


def test_tiny_decode_step_has_the_expected_task_counts():
    """A snapshot of tiny decode at capacity 256: catches an accidental change of tiling."""
    g = build_decode_step(CFG, capacity=CAP)
    assert g.summary() == {"EMBED": 1, "LINEAR": 20, "ROPE_KV": 6, "ATTN_PARTIAL": 12, "ATTN_MERGE": 6,
                           "LINEAR_SWIGLU": 6, "ROUTE": 3, "EXPERT_UP": 6, "EXPERT_DOWN": 6, "MOE_COMBINE": 12,
                           "LM_HEAD": 6, "SAMPLE": 1}


def test_expert_tiles_fill_whole_waves_of_workers():
    """mimo-mini on 132 workers: at T = 8 (64 slots) 2 tiles per slot (128 tasks, one wave),
    not 3 (192 tasks: two waves for 60 workers); at T = 1 (8 slots) still 16 per slot; no
    task below the policy's minimum bytes (tiny: one tile per slot)."""
    pol = TilePolicy()
    mini = preset("mimo-mini")
    up_row = 2 * mini.hidden_size * BYTES_PER["mxfp4"]
    assert pol.tiles_per_group(mini.moe_intermediate, 64, 16, up_row) == 2
    assert pol.tiles_per_group(mini.moe_intermediate, 8, 16, up_row) == 16
    assert pol.tiles_per_group(CFG.moe_intermediate, 2, 16, 2 * CFG.hidden_size * BYTES_PER["mxfp4"]) == 1
    verify = build_verify_step(mini, 8, capacity=4160)
    layer3 = Counter(t.op for t in verify.tasks if t.layer == 3)
    assert (layer3[Op.EXPERT_UP], layer3[Op.EXPERT_DOWN], layer3[Op.MOE_COMBINE]) == (128, 128, 16)


def test_a_stage_spread_over_the_workers_is_cut_into_at_most_one_wave():
    """Bytes that do not divide by the workers still make one tile per worker, not one
    more: mimo-mini's LM head (152576 x 2048 bf16) was cut into 133 tiles on 132 workers,
    and one worker ran a second task after its first (70 us per token, perf-notes v11)."""
    pol = TilePolicy()
    mini = preset("mimo-mini")
    lm_bytes = mini.vocab_size * mini.hidden_size * BYTES_PER["bf16"]
    assert lm_bytes % pol.workers != 0
    assert pol.tiles_for(lm_bytes, mini.vocab_size) == pol.workers
    for tokens in (1, 8):
        g = build_step(mini, tokens, kind="decode" if tokens == 1 else "verify", capacity=4160)
        assert sum(t.op == Op.LM_HEAD for t in g.tasks) <= pol.workers


def test_a_task_with_unknown_or_missing_arguments_is_refused():
    g = Graph(CFG, 1, "decode", CAP)
    x = g.buffer("x", 1, 8)
    args = {"tok_off": At(x), "w": 0, "out_off": At(x), "out_ld": 8, "t": 1, "c0": 0, "c1": 8}
    kw = dict(reads=[x.tile()], writes=[x.tile()], stage="s", layer=0, cost=Cost(0))
    g.task(Op.EMBED, args, **kw)
    with pytest.raises(GraphError, match=r"no argument\(s\) \['bogus'\]"):
        g.task(Op.EMBED, {**args, "bogus": 1}, **kw)
    with pytest.raises(GraphError, match=r"missing argument\(s\) \['c1'\]"):
        g.task(Op.EMBED, {k: v for k, v in args.items() if k != "c1"}, **kw)


# ------------------------------------------------------------------ memory
def test_every_read_and_write_tile_lies_inside_its_buffer(graph):
    declared = set(map(id, graph.buffers))
    for t in graph.tasks:
        assert t.writes, f"task {t.index} ({t.stage}) writes nothing"
        for tl in t.reads + t.writes:
            b = tl.buf
            assert id(b) in declared, f"task {t.index} touches undeclared buffer {b.name}"
            assert 0 <= tl.r0 < tl.r1 <= b.rows and 0 <= tl.c0 < tl.c1 <= b.cols, (t.stage, b.name)


def test_every_offset_argument_points_inside_a_declared_buffer(graph):
    declared = set(map(id, graph.buffers))
    for t in graph.tasks:
        for name, v in t.args.items():
            if isinstance(v, At):
                assert id(v.buf) in declared and v.buf.kind != "external", (t.stage, name)
                assert 0 <= v.row < v.buf.rows and 0 <= v.col < v.buf.cols, (t.stage, name)


def test_buffer_tile_outside_the_buffer_is_refused():
    g = Graph(CFG, 1, "decode", CAP)
    b = g.buffer("x", 2, 8)
    with pytest.raises(GraphError, match="outside buffer x"):
        b.tile(0, 3)
    with pytest.raises(GraphError, match="outside buffer x"):
        b.tile(0, 1, 4, 4)
    with pytest.raises(GraphError, match="declared twice"):
        g.buffer("x", 1, 1)


def coverage(g: Graph, tasks) -> dict[str, np.ndarray]:
    """Per buffer written by `tasks`: how many times each word is written."""
    cov: dict[str, np.ndarray] = {}
    for t in tasks:
        for tl in t.writes:
            if tl.buf.kind == "external":
                continue
            c = cov.setdefault(tl.buf.name, np.zeros((tl.buf.rows, tl.buf.cols), np.int32))
            c[tl.r0:tl.r1, tl.c0:tl.c1] += 1
    return cov


@pytest.mark.parametrize("cfg_name,kind,tokens", [("tiny", "decode", 1), ("tiny", "verify", 8),
                                                  ("mimo-mini", "verify", 8)])
def test_each_stage_writes_every_word_of_its_outputs_exactly_once(cfg_name, kind, tokens):
    g = build_step(preset(cfg_name), tokens, kind=kind, capacity=CAP if cfg_name == "tiny" else 4096)
    stages: dict[str, list] = defaultdict(list)
    for t in g.tasks:
        stages[t.stage].append(t)
    multi = 0
    for stage, tasks in stages.items():
        for name, c in coverage(g, tasks).items():
            assert c.min() == 1 and c.max() == 1, (f"{stage}: {name} has words written "
                                                   f"{c.min()}..{c.max()} times")
        multi += len(tasks) > 1
    assert multi > 10, "most stages should be cut into several tiles"
    tiled = {t.op for t in g.tasks if len(stages[t.stage]) > 1}
    assert {Op.LINEAR, Op.EXPERT_UP, Op.EXPERT_DOWN, Op.LM_HEAD} <= tiled


def test_stage_tiles_respect_the_policy_row_alignment():
    pol = TilePolicy()
    g = build_step(preset("mimo-mini"), 1, kind="decode", capacity=4096)
    for t in g.tasks:
        if t.op in (Op.LINEAR, Op.LINEAR_SWIGLU, Op.EXPERT_UP, Op.EXPERT_DOWN, Op.LM_HEAD):
            assert t.args["n0"] % pol.row_align == 0, t.stage


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("tokens", [0, -1, MAX_STEP_TOKENS + 1])
def test_building_refuses_a_token_count_outside_1_to_16(tokens):
    with pytest.raises(GraphError, match="tokens"):
        build_step(CFG, tokens, kind="verify", capacity=CAP)


def test_a_decode_step_has_exactly_one_token():
    with pytest.raises(GraphError, match="decode step has 1 token"):
        build_step(CFG, 2, kind="decode", capacity=CAP)


@pytest.mark.parametrize("capacity", [0, 7, CFG.max_position + 1])
def test_building_refuses_a_capacity_below_the_step_or_past_max_position(capacity):
    with pytest.raises(GraphError, match="capacity"):
        build_verify_step(CFG, 8, capacity=capacity)


def test_sixteen_tokens_and_full_capacity_are_accepted():
    g = build_verify_step(CFG, MAX_STEP_TOKENS, capacity=CFG.max_position)
    assert g.tokens == MAX_STEP_TOKENS and g.capacity == CFG.max_position
