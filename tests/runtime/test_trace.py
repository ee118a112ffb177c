"""The in-kernel trace exports as valid Chrome / Perfetto trace-event JSON: complete ("X")
events with name, ts, dur, pid, tid; one named track per worker; wait slices separate
from op slices; per-op totals add up."""

import json

import numpy as np

from tilewarp.pipeline.graph.ops import Op
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import DeviceModel, schedule
from tilewarp.runtime.trace import (TRACE_WORDS, TraceRecord, chrome_trace, op_summary, records, stage_floor_summary,
                                    stage_kind)


def program():
    return lower(schedule(build_step(preset("tiny"), 1, kind="decode", capacity=64), DeviceModel(workers=4)))


def fake_raw(p, cap):
    raw = np.zeros((p.workers, cap, TRACE_WORDS), np.uint64)
    t = 1_000_000
    for w in range(p.workers):
        for i, task in enumerate(p.worker_tasks(w)[:cap].tolist()):
            raw[w, i] = (task | (1 << 32), t, t + 500, t + 2500, t + 1000 if i % 2 else 0)
            t += 3000
    return raw.reshape(-1)


def test_records_stop_at_the_first_empty_slot_and_decode_task_and_step():
    p = program()
    recs = records(fake_raw(p, 8), p.workers, 8)
    assert len(recs) == sum(min(8, len(p.worker_tasks(w))) for w in range(p.workers))
    r = recs[0]
    assert (r.worker, r.step) == (0, 1) and r.task == int(p.worker_tasks(0)[0]) and r.fetched < r.ready < r.done
    assert r.body == 0 and r.prologue_ns == 0                 # an op that marks no body
    assert recs[1].body and recs[1].prologue_ns == 500        # body marked 500 ns after the op began


def test_the_export_is_trace_event_json():
    p = program()
    doc = json.loads(json.dumps(chrome_trace(records(fake_raw(p, 8), p.workers, 8), p)))
    assert isinstance(doc["traceEvents"], list) and doc["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names[0] == "SM worker 0"
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    for e in xs:
        assert isinstance(e["name"], str) and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert e["ts"] >= 0 and e["dur"] > 0
        assert {"task", "stage", "step"} <= set(e["args"])
    assert any(e["args"].get("prologue_us") == 0.5 for e in xs if e["cat"] == "op")
    assert {e["name"] for e in xs if e["cat"] == "wait"} == {"wait"}
    assert "EMBED" in {e["name"] for e in xs if e["cat"] == "op"}


def test_op_summary_adds_busy_wait_and_prologue_time_per_op():
    p = program()
    recs = records(fake_raw(p, 8), p.workers, 8)
    summary = op_summary(recs, p)
    assert sum(s["count"] for s in summary.values()) == len(recs)
    assert abs(sum(s["prologue_us"] for s in summary.values()) - 0.5 * sum(1 for r in recs if r.body)) < 1e-9
    for s in summary.values():
        assert abs(s["busy_us"] - 2.0 * s["count"]) < 1e-9 and abs(s["wait_us"] - 0.5 * s["count"]) < 1e-9


def test_each_op_is_timed_against_its_byte_floor_over_its_stages():
    # Two tasks of one stage: the stage's wall runs from the first start to the last end.
    p = program()
    op = p.desc["op"]
    stage = p.stages[0]
    tasks = [i for i in range(p.n_tasks) if p.stages[i] == stage][:2]
    recs = [TraceRecord(0, tasks[0], 1, 0, 1_000, 3_000)] + \
        ([TraceRecord(1, tasks[1], 1, 0, 2_000, 5_000)] if len(tasks) > 1 else [])
    task_bytes = [1e6] * p.n_tasks
    s = stage_floor_summary(recs, p, task_bytes, bandwidth=1e12)
    name = next(iter(s))
    assert len(s) == 1 and name == Op(int(op[tasks[0]])).name
    got = s[name]
    wall = (5.0 if len(tasks) > 1 else 3.0) - 1.0
    assert got["stages"] == 1 and abs(got["wall_us"] - wall) < 1e-9
    assert abs(got["floor_us"] - len(tasks)) < 1e-9          # 1 MB per task at 1 TB/s = 1 us
    assert abs(got["pct_floor"] - 100 * len(tasks) / wall) < 1e-9


def test_the_floor_summary_can_label_stages_its_own_way():
    # e.g. attention of global and of sliding-window layers as two rows
    p = program()
    stage = p.stages[0]
    task = next(i for i in range(p.n_tasks) if p.stages[i] == stage)
    recs = [TraceRecord(0, task, 1, 0, 1_000, 3_000)]
    s = stage_floor_summary(recs, p, [1e6] * p.n_tasks, bandwidth=1e12, label=lambda op, st: f"{op} @ {st}")
    assert list(s) == [f"{Op(int(p.desc['op'][task])).name} @ {stage}"]


def test_summaries_by_stage_kind_part_the_qkv_o_and_router_gemvs():
    # tools/ab_defines.py --by-stage: "LINEAR:qkv", "LINEAR:o", ... over every layer
    p = program()
    recs = records(fake_raw(p, 64), p.workers, 64)
    by_kind = op_summary(recs, p, stage_kind)
    assert sum(s["count"] for s in by_kind.values()) == len(recs)
    linear_kinds = {k for k in by_kind if k.startswith("LINEAR:")}
    assert linear_kinds and linear_kinds <= {"LINEAR:qkv", "LINEAR:o", "LINEAR:router", "LINEAR:down"}
    assert stage_kind("LINEAR", "L3.qkv") == "LINEAR:qkv" and stage_kind("SAMPLE", "sample") == "SAMPLE:sample"
    assert set(stage_floor_summary(recs, p, [1.0] * p.n_tasks, 1e12, stage_kind)) == set(by_kind)
