"""The in-kernel trace exports as valid Chrome / Perfetto trace-event JSON: complete ("X")
events with name, ts, dur, pid, tid; one named track per worker; wait slices separate
from op slices; per-op totals add up."""

import json

import numpy as np

from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import DeviceModel, schedule
from tilewarp.runtime.trace import TRACE_WORDS, chrome_trace, op_summary, records


def program():
    return lower(schedule(build_step(preset("tiny"), 1, kind="decode", capacity=64), DeviceModel(workers=4)))


def fake_raw(p, cap):
    raw = np.zeros((p.workers, cap, TRACE_WORDS), np.uint64)
    t = 1_000_000
    for w in range(p.workers):
        for i, task in enumerate(p.worker_tasks(w)[:cap].tolist()):
            raw[w, i] = (task | (1 << 32), t, t + 500, t + 2500)
            t += 3000
    return raw.reshape(-1)


def test_records_stop_at_the_first_empty_slot_and_decode_task_and_step():
    p = program()
    recs = records(fake_raw(p, 8), p.workers, 8)
    assert len(recs) == sum(min(8, len(p.worker_tasks(w))) for w in range(p.workers))
    w, task, step, t0, t1, t2 = recs[0]
    assert (w, step) == (0, 1) and task == int(p.worker_tasks(0)[0]) and t0 < t1 < t2


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
    assert {e["name"] for e in xs if e["cat"] == "wait"} == {"wait"}
    assert "EMBED" in {e["name"] for e in xs if e["cat"] == "op"}


def test_op_summary_adds_busy_and_wait_time_per_op():
    p = program()
    recs = records(fake_raw(p, 8), p.workers, 8)
    summary = op_summary(recs, p)
    assert sum(s["count"] for s in summary.values()) == len(recs)
    for s in summary.values():
        assert abs(s["busy_us"] - 2.0 * s["count"]) < 1e-9 and abs(s["wait_us"] - 0.5 * s["count"]) < 1e-9
