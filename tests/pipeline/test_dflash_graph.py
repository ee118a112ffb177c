"""DFlash step graphs: the draft step holds the drafter's layers as tasks, the verify step
exports the drafter's target layers, the whole DFlash step runs draft -> target ->
context append -> ACCEPT, and validation proves the chained program (two steps
simulated) and catches any single removed wait.

Expected counts come from the drafter's config, not from the builder.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from test_validate import drop_wait
from tilewarp.pipeline.config import ceil_div
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.errors import ConfigError, GraphError
from tilewarp.pipeline.graph.dflash_step import build_dflash_step, build_draft_step
from tilewarp.pipeline.graph.ir import At, Graph
from tilewarp.pipeline.graph.ops import Op
from tilewarp.pipeline.graph.step import build_verify_step
from tilewarp.pipeline.graph.tiling import TilePolicy, attention_chunk
from tilewarp.pipeline.lower import Program, lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import DeviceModel, schedule
from tilewarp.pipeline.validate import chains_steps, validate

CFG = preset("tiny")
DCFG = tiny_drafter(CFG)
B = DCFG.block_size
CAP = 128
BUILDERS = {"draft": build_draft_step, "dflash": build_dflash_step}


def by_op(g: Graph) -> dict[Op, list]:
    out: dict[Op, list] = defaultdict(list)
    for t in g.tasks:
        out[t.op].append(t)
    return out


def draft_chunks(dcfg=DCFG, capacity: int = CAP) -> int:
    keys = capacity if dcfg.window is None else min(capacity, dcfg.window + dcfg.block_size)
    return ceil_div(keys, attention_chunk(keys, dcfg.num_kv_heads, TilePolicy().workers))


@pytest.fixture(scope="module", params=["draft", "dflash"])
def graph(request) -> Graph:
    return BUILDERS[request.param](CFG, DCFG, capacity=CAP)


# ------------------------------------------------------------------ the draft pass
def test_every_draft_layer_has_one_rope_per_kv_head_and_one_partial_per_chunk(graph):
    ops = by_op(graph)
    L, heads = CFG.num_layers, range(DCFG.num_kv_heads)
    block = [t for t in ops[Op.DRAFT_ROPE_KV] if t.args["q_off"] != -1]
    assert sorted((t.args["kv"].layer, t.args["kvh"]) for t in block) == [
        (L + i, h) for i in range(DCFG.num_layers) for h in heads]
    got = sorted((t.args["kv"].layer, t.args["kvh"], t.args["chunk"]) for t in ops[Op.DRAFT_ATTN])
    assert got == [(L + i, h, c) for i in range(DCFG.num_layers) for h in heads for c in range(draft_chunks())]
    merges = sorted((t.args["layer"], t.args["kvh"]) for t in ops[Op.ATTN_MERGE] if t.args["layer"] >= L)
    assert merges == [(L + i, h) for i in range(DCFG.num_layers) for h in heads]
    assert all(t.args["w_sink"] != -1 for t in ops[Op.ATTN_MERGE] if t.args["layer"] >= L), "the drafter has sinks"


def test_the_draft_head_proposes_b_minus_1_tokens_into_the_token_buffer(graph):
    ops = by_op(graph)
    heads = [t for t in ops[Op.LM_HEAD] if t.stage == "D.lm_head"]
    assert heads and all(t.args["t"] == B - 1 and t.args["x_off"] == At(t.reads[0].buf, 1) for t in heads)
    assert sum(t.args["n1"] - t.args["n0"] for t in heads) == CFG.vocab_size
    propose = [t for t in ops[Op.ARGMAX_ROWS] if t.stage == "D.propose"]
    assert len(propose) == 1
    (w,) = propose[0].writes
    assert (w.buf.name, w.r0, w.r1, w.c0, w.c1) == ("tokens", 0, 1, 1, B)
    embeds = ops[Op.DRAFT_EMBED]
    assert all(t.reads[0].c0 == 0 and t.reads[0].c1 == 1 for t in embeds), "the draft reads only the anchor"
    assert sorted((t.args["c0"], t.args["c1"]) for t in embeds)[0][0] == 0
    assert graph.meta["drafter"] == DCFG.name and graph.meta["draft_kv_base"] == CFG.num_layers


def test_the_draft_step_alone_touches_neither_the_target_nor_the_position():
    g = build_draft_step(CFG, DCFG, capacity=CAP)
    ops = by_op(g)
    assert not {Op.EMBED, Op.ROPE_KV, Op.ATTN_PARTIAL, Op.ROUTE, Op.SAMPLE, Op.ACCEPT} & set(ops)
    assert not any(tl.buf.name == "state" for t in g.tasks for tl in t.writes)


def test_a_draft_window_of_all_context_splits_the_keys_into_chunks():
    dcfg = DCFG.replace(window=None)
    g = build_draft_step(CFG, dcfg, capacity=CAP)
    assert draft_chunks(dcfg) > 1
    assert max(t.args["chunk"] for t in by_op(g)[Op.DRAFT_ATTN]) == draft_chunks(dcfg) - 1


# ------------------------------------------------------------------ the whole DFlash step
def test_the_dflash_step_runs_draft_then_target_then_context_then_accept():
    g = build_dflash_step(CFG, DCFG, capacity=CAP)
    ops = by_op(g)
    first_target = ops[Op.EMBED][0].index
    propose = next(t for t in ops[Op.ARGMAX_ROWS] if t.stage == "D.propose").index
    choose = next(t for t in ops[Op.ARGMAX_ROWS] if t.stage == "choose").index
    context = [t for t in ops[Op.DRAFT_ROPE_KV] if t.args["q_off"] == -1]
    assert propose < first_target < choose < min(t.index for t in context)
    assert sorted((t.args["kv"].layer, t.args["kvh"]) for t in context) == [
        (CFG.num_layers + i, h) for i in range(DCFG.num_layers) for h in range(DCFG.num_kv_heads)]
    assert {t.group for t in context} == {"C.rope"}
    (accept,) = ops[Op.ACCEPT]
    assert accept.index == len(g.tasks) - 1
    assert {(w.buf.name, w.c0, w.c1) for w in accept.writes} == {("tokens", 0, 1), ("out_tokens", 0, B + 1),
                                                                 ("state", 0, 4)}
    assert not ops[Op.SAMPLE], "acceptance, not SAMPLE, ends a DFlash step"


def test_the_exported_hidden_states_fill_the_fc_input_once_in_layer_order():
    g = build_dflash_step(CFG, DCFG, capacity=CAP)
    exports = by_op(g)[Op.EXPORT_HIDDEN]
    hid = CFG.hidden_size
    cols = sorted((t.writes[0].c0, t.writes[0].c1) for t in exports)
    assert cols[0][0] == 0 and cols[-1][1] == DCFG.context_width
    assert all(a[1] == b[0] for a, b in zip(cols, cols[1:])), "no gap, no overlap"
    for t in exports:
        j = t.writes[0].c0 // hid
        assert t.reads[0].buf.name == f"L{DCFG.target_layer_ids[j] + 1}.x", "output of target layer k"
    fc = [t for t in g.tasks if t.stage == "C.fc"]
    assert fc and all(t.reads[0].buf is exports[0].writes[0].buf for t in fc)


@pytest.mark.parametrize("kind", ["draft", "dflash", "verify"])
def test_task_layers_rise_in_build_order(kind):
    """The arena planner frees a buffer from the first task of the layer after its last
    use; that is only sound if layer numbers never fall in build order."""
    g = (build_verify_step(CFG, B, capacity=CAP, export_layers=DCFG.target_layer_ids) if kind == "verify"
         else BUILDERS[kind](CFG, DCFG, capacity=CAP))
    layers = [t.layer for t in g.tasks]
    assert layers == sorted(layers)


def test_the_verify_step_exports_the_requested_layers_into_a_carried_buffer():
    g = build_verify_step(CFG, B, capacity=CAP, export_layers=DCFG.target_layer_ids)
    out = next(b for b in g.buffers if b.name == "hidden_out")
    assert (out.rows, out.cols, out.kind) == (B, DCFG.context_width, "carried")
    assert g.meta["export_layers"] == list(DCFG.target_layer_ids)
    assert {t.stage for t in by_op(g)[Op.EXPORT_HIDDEN]} == {f"L{k}.export" for k in DCFG.target_layer_ids}
    plain = build_verify_step(CFG, B, capacity=CAP)
    assert len(plain.tasks) + len(by_op(g)[Op.EXPORT_HIDDEN]) == len(g.tasks)


@pytest.mark.parametrize("layers", [(2, 0), (0, 0), (0, CFG.num_layers), (-1,)])
def test_export_layers_out_of_order_or_range_are_refused(layers):
    with pytest.raises(GraphError, match="export_layers"):
        build_verify_step(CFG, B, capacity=CAP, export_layers=layers)


def test_a_drafter_that_does_not_fit_the_target_or_the_program_is_refused():
    with pytest.raises(GraphError, match="rms_norm_eps"):
        build_dflash_step(CFG, DCFG.replace(rms_eps=1e-6), capacity=CAP)
    with pytest.raises(ConfigError, match="hidden_size"):
        build_draft_step(CFG, DCFG.replace(hidden_size=64), capacity=CAP)
    with pytest.raises(GraphError, match="capacity"):
        build_dflash_step(CFG, DCFG, capacity=B - 1)


# ------------------------------------------------------------------ validation
def lowered(kind: str, workers: int) -> Program:
    return lower(schedule(BUILDERS[kind](CFG, DCFG, capacity=CAP), DeviceModel(workers=workers)))


@pytest.mark.parametrize("kind", ["draft", "dflash"])
@pytest.mark.parametrize("workers", [1, 3, 16, 132])
def test_dflash_programs_validate(kind, workers):
    p = lowered(kind, workers)
    report = validate(p)
    assert report.tasks == p.n_tasks and report.hazards_checked > p.n_tasks
    assert chains_steps(p) == (kind == "dflash")


@pytest.fixture(scope="module")
def one_task_per_worker() -> Program:
    """Every wait is the only thing ordering its producer before its consumer."""
    g = build_dflash_step(CFG, DCFG, capacity=CAP)
    return lower(schedule(g, DeviceModel(workers=len(g.tasks))))


def test_removing_any_single_wait_of_the_dflash_step_is_caught(one_task_per_worker):
    p = one_task_per_worker
    validate(p)
    cases = [(t, i) for t in range(p.n_tasks) for i in range(int(p.desc["n_wait"][t]))]
    carried = [(t, i) for t, i in cases if int(p.desc["wait_prev"][t]) >> i & 1]
    assert carried, "the chained step has loop-carried waits (anchor, proposals, position)"
    accept = p.n_tasks - 1
    picked = set(carried) | {(accept, i) for i in range(int(p.desc["n_wait"][accept]))}
    picked |= set(random.Random(0).sample(cases, min(len(cases), 150)))
    for t, i in sorted(picked):
        with pytest.raises(GraphError, match="unordered|may start before|may run before"):
            validate(drop_wait(p, t, i))


def test_a_dflash_program_keeps_its_drafter_facts_through_a_file(tmp_path):
    """The executors find the drafter, its layer-table ids and the exported layers in
    `Program.meta`; a saved program must carry them."""
    p = lowered("dflash", 4)
    q = Program.load(p.save(tmp_path / "dflash.twp"))
    assert q.desc.tobytes() == p.desc.tobytes() and q.meta == p.meta
    assert {k: q.meta[k] for k in ("drafter", "draft_layers", "draft_kv_base", "block_size", "export_layers")} == {
        "drafter": DCFG.name, "draft_layers": DCFG.num_layers, "draft_kv_base": CFG.num_layers, "block_size": B,
        "export_layers": list(DCFG.target_layer_ids)}
