"""The megakernel's in-kernel trace, exported as a Chrome / Perfetto trace.

With `trace_cap > 0` the controller of every worker records, per task instance, when it
fetched the descriptor, when its waits were resolved, when the task was done and, for ops
that mark it (the GEMV executor), when the op's main loop began after its prologue
(descriptor decode, input staging and norm) (%globaltimer, ns). Here those records become
trace events: one track per worker (SM), a "wait" slice and an op slice per task, named by
op and stage, with the prologue's length in the op slice's arguments. Open the JSON at
https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from tilewarp.pipeline.graph.ops import Op
from tilewarp.pipeline.lower import Program

TRACE_WORDS = 5   # mirrors TW_TRACE_WORDS in csrc/megakernel.cu


class TraceRecord(NamedTuple):
    """One task instance on one worker; times in ns of the GPU's global timer."""
    worker: int
    task: int
    step: int
    fetched: int
    ready: int      # waits resolved: the op starts
    done: int
    body: int = 0   # the op's main loop began (after its prologue); 0 if the op marks none

    @property
    def prologue_ns(self) -> int:
        return self.body - self.ready if self.body > self.ready else 0


def records(raw: np.ndarray, workers: int, cap: int) -> list[TraceRecord]:
    """Every filled record, worker by worker."""
    r = raw.reshape(workers, cap, TRACE_WORDS)
    out = []
    for w in range(workers):
        for task_step, t0, t1, t2, body in r[w].tolist():
            if t2 == 0:
                break
            out.append(TraceRecord(w, task_step & 0xFFFFFFFF, task_step >> 32, t0, t1, t2, body))
    return out


def chrome_trace(recs: list[TraceRecord], program: Program) -> dict:
    """Trace-event JSON (the 'X' complete-event form): times in microseconds from the
    first record, pid 0 = the GPU, tid = worker."""
    if not recs:
        return {"traceEvents": [], "displayTimeUnit": "ns"}
    t_min = min(r.fetched for r in recs)
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": "megakernel"}}]
    for w in sorted({r.worker for r in recs}):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": w, "args": {"name": f"SM worker {w}"}})
    for r in recs:
        op = Op(int(program.desc["op"][r.task])).name
        args = {"task": r.task, "stage": program.stages[r.task], "step": r.step}
        common = {"pid": 0, "tid": r.worker}
        if r.ready > r.fetched:
            events.append({"name": "wait", "cat": "wait", "ph": "X", "ts": (r.fetched - t_min) / 1e3,
                           "dur": (r.ready - r.fetched) / 1e3, "args": args, **common})
        op_args = {**args, "prologue_us": r.prologue_ns / 1e3} if r.body else args
        events.append({"name": op, "cat": "op", "ph": "X", "ts": (r.ready - t_min) / 1e3,
                       "dur": max(r.done - r.ready, 1) / 1e3, "args": op_args, **common})
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def op_summary(recs: list[TraceRecord], program: Program,
               label: Callable[[str, str], str] | None = None) -> dict[str, dict[str, float]]:
    """Per op: count, total and mean busy time (us), total wait time (us), and the part of
    the busy time spent in prologues (ops that mark their body). `label(op, stage)` may
    name the rows differently, as in `stage_floor_summary`."""
    out: dict[str, dict[str, float]] = {}
    for r in recs:
        op = Op(int(program.desc["op"][r.task])).name
        if label:
            op = label(op, program.stages[r.task])
        s = out.setdefault(op, {"count": 0, "busy_us": 0.0, "wait_us": 0.0, "prologue_us": 0.0})
        s["count"] += 1
        s["busy_us"] += (r.done - r.ready) / 1e3
        s["wait_us"] += (r.ready - r.fetched) / 1e3
        s["prologue_us"] += r.prologue_ns / 1e3
    for s in out.values():
        s["mean_us"] = s["busy_us"] / max(1, s["count"])
    return out


def stage_floor_summary(recs: list[TraceRecord], program: Program,
                        task_bytes: list[float], bandwidth: float,
                        label: Callable[[str, str], str] | None = None) -> dict[str, dict[str, float]]:
    """Each op as a per-op micro-benchmark inside the real step: per op, summed over its
    stages (the tasks of one stage run together between two dependency points), the wall
    time from the stage's first start to its last finish, the bytes its tasks read
    (`task_bytes[task]`, the cost model's), and the op's byte floor at `bandwidth`
    (bytes/s) as % of that wall time. `label(op, stage)` may name the rows differently
    (e.g. attention of global and of sliding-window layers apart); default: the op."""
    stages: dict[tuple[int, str], dict] = {}
    for r in recs:
        op, stage = Op(int(program.desc["op"][r.task])).name, program.stages[r.task]
        st = stages.setdefault((r.step, stage),
                               {"op": label(op, stage) if label else op, "lo": r.ready, "hi": r.done, "bytes": 0.0})
        st["lo"], st["hi"] = min(st["lo"], r.ready), max(st["hi"], r.done)
        st["bytes"] += task_bytes[r.task]
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


def stage_kind(op: str, stage: str) -> str:
    """A row label for the summaries: the op and its stage's kind without the layer
    ("LINEAR:qkv" for stage "L3.qkv"), so that the qkv, o and router GEMVs part."""
    return f"{op}:{stage.split('.', 1)[-1]}"


def write_trace(path: str | Path, recs, program: Program) -> Path:
    path = Path(path)
    path.write_text(json.dumps(chrome_trace(recs, program)))
    return path
