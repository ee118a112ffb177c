"""The megakernel's in-kernel trace, exported as a Chrome / Perfetto trace.

With `trace_cap > 0` the controller of every worker records, per task instance, when it
fetched the descriptor, when its waits were resolved and when the task was done
(%globaltimer, ns). Here those records become trace events: one track per worker (SM),
a "wait" slice and an op slice per task, named by op and stage. Open the JSON at
https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tilewarp.pipeline.graph.ops import Op
from tilewarp.pipeline.lower import Program

TRACE_WORDS = 4   # mirrors TW_TRACE_WORDS in csrc/megakernel.cu


def records(raw: np.ndarray, workers: int, cap: int) -> list[tuple[int, int, int, int, int, int]]:
    """(worker, task, step, fetched, ready, done) for every filled record."""
    r = raw.reshape(workers, cap, TRACE_WORDS)
    out = []
    for w in range(workers):
        for task_step, t0, t1, t2 in r[w].tolist():
            if t2 == 0:
                break
            out.append((w, task_step & 0xFFFFFFFF, task_step >> 32, t0, t1, t2))
    return out


def chrome_trace(recs: list[tuple[int, int, int, int, int, int]], program: Program) -> dict:
    """Trace-event JSON (the 'X' complete-event form): times in microseconds from the
    first record, pid 0 = the GPU, tid = worker."""
    if not recs:
        return {"traceEvents": [], "displayTimeUnit": "ns"}
    t_min = min(r[3] for r in recs)
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": "megakernel"}}]
    for w in sorted({r[0] for r in recs}):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": w, "args": {"name": f"SM worker {w}"}})
    for w, task, step, t0, t1, t2 in recs:
        op = Op(int(program.desc["op"][task])).name
        common = {"pid": 0, "tid": w, "args": {"task": task, "stage": program.stages[task], "step": step}}
        if t1 > t0:
            events.append({"name": "wait", "cat": "wait", "ph": "X", "ts": (t0 - t_min) / 1e3,
                           "dur": (t1 - t0) / 1e3, **common})
        events.append({"name": op, "cat": "op", "ph": "X", "ts": (t1 - t_min) / 1e3, "dur": max(t2 - t1, 1) / 1e3,
                       **common})
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def op_summary(recs: list[tuple[int, int, int, int, int, int]], program: Program) -> dict[str, dict[str, float]]:
    """Per op: count, total and mean busy time (us), total wait time (us)."""
    out: dict[str, dict[str, float]] = {}
    for _, task, _, t0, t1, t2 in recs:
        op = Op(int(program.desc["op"][task])).name
        s = out.setdefault(op, {"count": 0, "busy_us": 0.0, "wait_us": 0.0})
        s["count"] += 1
        s["busy_us"] += (t2 - t1) / 1e3
        s["wait_us"] += (t1 - t0) / 1e3
    for s in out.values():
        s["mean_us"] = s["busy_us"] / max(1, s["count"])
    return out


def stage_floor_summary(recs: list[tuple[int, int, int, int, int, int]], program: Program,
                        task_bytes: list[float], bandwidth: float) -> dict[str, dict[str, float]]:
    """Each op as a per-op micro-benchmark inside the real step: per op, summed over its
    stages (the tasks of one stage run together between two dependency points), the wall
    time from the stage's first start to its last finish, the bytes its tasks read
    (`task_bytes[task]`, the cost model's), and the op's byte floor at `bandwidth`
    (bytes/s) as % of that wall time."""
    stages: dict[tuple[int, str], dict] = {}
    for _, task, step, _t0, t1, t2 in recs:
        st = stages.setdefault((step, program.stages[task]),
                               {"op": Op(int(program.desc["op"][task])).name, "lo": t1, "hi": t2, "bytes": 0.0})
        st["lo"], st["hi"] = min(st["lo"], t1), max(st["hi"], t2)
        st["bytes"] += task_bytes[task]
    out: dict[str, dict[str, float]] = {}
    for st in stages.values():
        o = out.setdefault(st["op"], {"stages": 0, "wall_us": 0.0, "bytes": 0.0})
        o["stages"] += 1
        o["wall_us"] += (st["hi"] - st["lo"]) / 1e3
        o["bytes"] += st["bytes"]
    for o in out.values():
        o["floor_us"] = o["bytes"] / bandwidth * 1e6
        o["pct_floor"] = 100.0 * o["floor_us"] / o["wall_us"] if o["wall_us"] > 0 else 0.0
    return out


def write_trace(path: str | Path, recs, program: Program) -> Path:
    path = Path(path)
    path.write_text(json.dumps(chrome_trace(recs, program)))
    return path
