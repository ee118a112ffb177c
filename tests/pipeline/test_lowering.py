"""Lowering: the descriptor layout is the fixed 128-byte contract, descriptors say what the
schedule decided, a Program survives a file round trip bit for bit, a file that is not a
program is refused, and the C header in csrc/ is the one generated from Python."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tilewarp.pipeline.c_headers import generated_headers, render_desc_struct
from tilewarp.pipeline.errors import GraphError
from tilewarp.pipeline.graph.ir import KV, At, Ld, W
from tilewarp.pipeline.graph.ops import N_ARGS, OPS, Op, render_c_header
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import ACCESS_DTYPE, DESC_ARGS, DESC_DTYPE, Program, lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import MAX_WAITS, DeviceModel, Schedule, schedule

CFG = preset("tiny")
CAP = 256
CSRC = Path(__file__).resolve().parents[2] / "csrc"


@pytest.fixture(scope="module", params=["decode", "verify"])
def lowered(request) -> tuple[Schedule, Program]:
    g = build_step(CFG, 1 if request.param == "decode" else 8, kind=request.param, capacity=CAP)
    s = schedule(g, DeviceModel(workers=7))
    return s, lower(s)


# ------------------------------------------------------------------ layout
def test_descriptor_is_128_bytes_with_fixed_little_endian_field_offsets():
    assert DESC_DTYPE.itemsize == 128
    want = {"op": (0, "<u2"), "flags": (2, "<u2"), "n_wait": (4, "|u1"), "n_signal": (5, "|u1"),
            "wait_prev": (6, "|u1"), "pad": (7, "|u1"), "task": (8, "<u4"), "signal": (12, "<u4"),
            "wait_event": (20, "<u4"), "wait_need": (44, "<u4"), "args": (68, "<i4")}
    got = {}
    for name in DESC_DTYPE.names:
        ft, off = DESC_DTYPE.fields[name][:2]
        got[name] = (off, (ft.subdtype[0] if ft.subdtype else ft).str)
    assert got == want
    assert DESC_DTYPE.fields["wait_event"][0].shape == DESC_DTYPE.fields["wait_need"][0].shape == (MAX_WAITS,)
    assert DESC_DTYPE.fields["args"][0].shape == (DESC_ARGS,) and DESC_ARGS == N_ARGS - 1
    assert max(len(s.args) for s in OPS.values()) <= DESC_ARGS


def test_descriptor_bytes_decode_by_hand_at_the_documented_offsets(lowered):
    _, p = lowered
    raw = p.desc.tobytes()
    for t in (0, p.n_tasks // 2, p.n_tasks - 1):
        rec = raw[128 * t:128 * (t + 1)]
        assert int.from_bytes(rec[0:2], "little") == int(p.desc["op"][t])
        assert rec[4] == p.desc["n_wait"][t] and rec[6] == p.desc["wait_prev"][t]
        assert int.from_bytes(rec[8:12], "little") == t
        assert int.from_bytes(rec[12:16], "little") == int(p.desc["signal"][t][0])
        args = np.frombuffer(rec[68:128], "<i4")
        assert (args == p.desc["args"][t]).all()


# ------------------------------------------------------------------ contents
def test_descriptors_carry_the_schedules_waits_and_signal_the_tasks_group(lowered):
    s, p = lowered
    d = p.desc
    assert (d["task"] == np.arange(p.n_tasks)).all() and (d["n_signal"] == 1).all()
    assert (d["signal"][:, 0] == np.asarray(s.group_of)).all()
    for t, waits in enumerate(s.waits):
        n = len(waits)
        assert d["n_wait"][t] == n
        assert d["wait_event"][t][:n].tolist() == [g for g, _ in waits]
        assert d["wait_need"][t][:n].tolist() == [s.group_size[g] for g, _ in waits]
        assert d["wait_prev"][t] == sum(1 << i for i, (_, delta) in enumerate(waits) if delta)
        assert not d["wait_event"][t][n:].any() and not d["wait_need"][t][n:].any()
    assert p.event_need.tolist() == s.group_size


def test_symbolic_arguments_resolve_to_arena_words_strides_and_table_ids(lowered):
    s, p = lowered
    g = s.graph
    for task in g.tasks:
        for i, name in enumerate(OPS[task.op].args):
            v, got = task.args[name], int(p.desc["args"][task.index][i])
            if isinstance(v, At):
                assert got == v.buf.offset + v.row * v.buf.cols + v.col
            elif isinstance(v, Ld):
                assert got == v.buf.cols
            elif isinstance(v, W):
                assert p.weights[got].name == v.name
            elif isinstance(v, KV):
                assert got == v.layer
            else:
                assert got == v
        assert not p.desc["args"][task.index][len(OPS[task.op].args):].any()


def test_queues_partition_the_tasks_as_the_schedule_placed_them(lowered):
    s, p = lowered
    assert p.workers == len(s.queues)
    for w, q in enumerate(s.queues):
        assert p.worker_tasks(w).tolist() == q


def test_the_access_table_lists_every_declared_tile(lowered):
    s, p = lowered
    assert p.access.dtype == ACCESS_DTYPE
    rows = {(int(a["task"]), int(a["mode"]), int(a["r0"]), int(a["r1"]), int(a["c0"]), int(a["c1"]))
            for a in p.access}
    want = {(t.index, m, tl.r0, tl.r1, tl.c0, tl.c1) for t in s.graph.tasks
            for m, tiles in ((0, t.reads), (1, t.writes)) for tl in tiles}
    assert rows == want and len(p.access) == sum(len(t.reads) + len(t.writes) for t in s.graph.tasks)
    ext = p.access[p.access["space"] > 0]
    assert len(ext) and (ext["base"] == 0).all(), "KV-cache accesses live in their own spaces"


def test_an_argument_pointing_into_the_kv_cache_cannot_be_lowered():
    g = build_step(CFG, 1, kind="decode", capacity=CAP)
    cache = next(b for b in g.buffers if b.kind == "external")
    g.tasks[3].args["state_off"] = At(cache)
    with pytest.raises(GraphError, match="no arena words"):
        lower(schedule(g))


# ------------------------------------------------------------------ files
def test_a_program_round_trips_through_save_and_load_bit_identically(lowered, tmp_path):
    _, p = lowered
    q = Program.load(p.save(tmp_path / "p.twp"))
    for k in ("desc", "queue_start", "queue", "event_need", "access"):
        a, b = getattr(p, k), getattr(q, k)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), k
    for k in ("model", "kind", "tokens", "capacity", "workers", "arena_words", "stages", "meta", "buffers",
              "weights"):
        assert getattr(p, k) == getattr(q, k), k


def test_loading_a_file_that_is_not_a_program_raises_graph_error(tmp_path, lowered):
    _, p = lowered
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    half = tmp_path / "half.twp"
    half.write_bytes(p.save(tmp_path / "full.twp").read_bytes()[:300])
    for path in (text, other, half, tmp_path / "missing.twp"):
        with pytest.raises(GraphError, match="not a tilewarp program"):
            Program.load(path)


def test_loading_a_program_with_another_descriptor_or_access_layout_is_refused(tmp_path, lowered):
    _, p = lowered
    path = p.save(tmp_path / "p.twp")
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    old = np.zeros(2, dtype=np.dtype([("op", "<u2"), ("args", "<i4", (14,))]))
    out = tmp_path / "old.twp"
    with open(out, "wb") as f:
        np.savez(f, desc=old, **{n[:-4]: np.load(path)[n[:-4]] for n in parts if n != "desc.npy"})
    with pytest.raises(GraphError, match="descriptor layout"):
        Program.load(out)
    old_access = np.zeros(2, dtype=[("task", "<i4"), ("mode", "<i4")])
    with open(out, "wb") as f:
        np.savez(f, access=old_access, **{n[:-4]: np.load(path)[n[:-4]] for n in parts if n != "access.npy"})
    with pytest.raises(GraphError, match="access table layout"):
        Program.load(out)


# ------------------------------------------------------------------ C header
def test_the_committed_c_header_matches_the_python_definitions():
    for rel, text in generated_headers().items():
        path = CSRC / rel
        assert path.exists(), f"csrc/{rel} is missing: run python tools/gen_headers.py"
        assert path.read_text() == text, f"csrc/{rel} is stale: run python tools/gen_headers.py"


def test_the_c_header_names_every_op_code_and_argument_index():
    h = render_c_header()
    for op, spec in OPS.items():
        assert f"#define TW_OP_{op.name} {int(op)}\n" in h
        for i, a in enumerate(spec.args):
            assert f"#define TW_{op.name}_{a.upper()} {i}\n" in h
    assert len({int(o) for o in Op}) == len(Op) and min(int(o) for o in Op) > 0, "0 must stay an invalid op"


def test_the_c_header_marks_each_ops_weight_table_arguments():
    # The megakernel copies these table entries ahead of a task's waits (TW_TABLE_AHEAD).
    h = render_c_header()
    assert OPS[Op.LINEAR].weight_args == (OPS[Op.LINEAR].index("w_norm"), OPS[Op.LINEAR].index("w"))
    for op, spec in OPS.items():
        mask = sum(1 << i for i in spec.weight_args)
        assert (f"case TW_OP_{op.name}: return {mask:#x}u;" in h) == bool(mask), op
        assert all(spec.args[i] in ("w", "w2") or spec.args[i].startswith("w_") for i in spec.weight_args)
    assert f"#define TW_MAX_WEIGHT_ARGS {max(len(s.weight_args) for s in OPS.values())}\n" in h


def test_the_c_struct_mirrors_every_descriptor_field_and_offset():
    c = render_desc_struct()
    assert "static_assert(sizeof(TwDesc) == 128" in c
    for name in DESC_DTYPE.names:
        off = DESC_DTYPE.fields[name][1]
        assert f" {name}" in c and f"// offset {off}" in c
    assert "unsigned int wait_need[6];" in c and "int args[15];" in c


def test_a_descriptor_field_without_a_c_mirror_is_refused():
    with pytest.raises(TypeError, match="no C mirror"):
        render_desc_struct(np.dtype([("op", "<u2"), ("x", "<f8")]))
    with pytest.raises(TypeError, match="gap"):
        render_desc_struct(np.dtype({"names": ["a", "b"], "formats": ["u1", "<u4"], "offsets": [0, 4]}))
