"""Validation: correct programs pass, and every kind of broken program is caught: a
missing wait, a wrong wait count, a task queued twice or not at all, two live buffers on
the same arena words, and a wait that can never be met (deadlock).

Each mutation test first checks that the unmutated program validates, so a test can
only pass because validation noticed the mutation.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from tilewarp.pipeline import schedule as schedule_mod
from tilewarp.pipeline.errors import GraphError
from tilewarp.pipeline.graph.ir import Graph
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import Program, lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import MAX_WAITS, DeviceModel, schedule
from tilewarp.pipeline.validate import validate

CFG = preset("tiny")
CAP = 256


def build(kind: str = "decode") -> Graph:
    return build_step(CFG, 1 if kind == "decode" else 8, kind=kind, capacity=CAP)


def with_desc(p: Program, desc: np.ndarray) -> Program:
    q = copy.copy(p)
    q.desc = desc
    return q


def drop_wait(p: Program, task: int, i: int) -> Program:
    """The program with wait i of `task` deleted (later waits shift down)."""
    d = p.desc.copy()
    n = int(d["n_wait"][task])
    for f in ("wait_event", "wait_need"):
        row = d[f][task]
        row[i:n - 1] = row[i + 1:n].copy()
        row[n - 1] = 0
    prev = int(d["wait_prev"][task])
    d["wait_prev"][task] = (prev & ((1 << i) - 1)) | ((prev >> (i + 1)) << i)
    d["n_wait"][task] = n - 1
    return with_desc(p, d)


@pytest.fixture(scope="module")
def one_task_per_worker() -> Program:
    """Tiny decode with a worker per task: no ordering comes from a shared queue, so every
    wait is the only thing that orders its producer before its consumer."""
    g = build("decode")
    return lower(schedule(g, DeviceModel(workers=len(g.tasks))))


# ------------------------------------------------------------------ correct programs
@pytest.mark.parametrize("kind", ["decode", "verify"])
@pytest.mark.parametrize("workers", [1, 3, 132])
def test_tiny_programs_validate(kind, workers):
    p = lower(schedule(build(kind), DeviceModel(workers=workers)))
    report = validate(p)
    assert report.tasks == p.n_tasks and report.events == len(p.event_need) and report.hazards_checked > p.n_tasks


def test_one_task_per_worker_validates(one_task_per_worker):
    validate(one_task_per_worker)


# ------------------------------------------------------------------ waits
def test_removing_any_single_wait_is_caught(one_task_per_worker):
    p = one_task_per_worker
    cases = [(t, i) for t in range(p.n_tasks) for i in range(int(p.desc["n_wait"][t]))]
    assert len(cases) >= 50
    prev_waits = sum(int(p.desc["wait_prev"][t] >> i & 1) for t, i in cases)
    assert prev_waits > 0, "decode has loop-carried waits; they must be checked too"
    if len(cases) > 200:
        cases = random.Random(0).sample(cases, 200)
    for t, i in cases:
        with pytest.raises(GraphError, match="unordered|may start before|may run before"):
            validate(drop_wait(p, t, i))


@pytest.mark.parametrize("delta", [-1, 1])
def test_a_wrong_wait_need_is_caught(one_task_per_worker, delta):
    p = one_task_per_worker
    t = next(t for t in range(p.n_tasks) if p.desc["n_wait"][t] and p.desc["wait_need"][t][0] > 1)
    d = p.desc.copy()
    d["wait_need"][t][0] = int(d["wait_need"][t][0]) + delta
    with pytest.raises(GraphError, match="waits for .* signals per step"):
        validate(with_desc(p, d))


def test_a_signal_on_the_wrong_event_is_caught(one_task_per_worker):
    p = one_task_per_worker
    d = p.desc.copy()
    d["signal"][5][0] = d["signal"][40][0]
    with pytest.raises(GraphError, match="signals per step"):
        validate(with_desc(p, d))


def test_an_event_id_out_of_range_is_caught(one_task_per_worker):
    p = one_task_per_worker
    d = p.desc.copy()
    t = next(t for t in range(p.n_tasks) if p.desc["n_wait"][t])
    d["wait_event"][t][0] = len(p.event_need)
    with pytest.raises(GraphError, match="outside"):
        validate(with_desc(p, d))


def test_more_than_max_waits_or_an_unknown_op_is_caught(one_task_per_worker):
    p = one_task_per_worker
    d = p.desc.copy()
    d["n_wait"][7] = MAX_WAITS + 1
    with pytest.raises(GraphError, match="more than"):
        validate(with_desc(p, d))
    d = p.desc.copy()
    d["op"][7] = 0
    with pytest.raises(GraphError, match="unknown op code 0"):
        validate(with_desc(p, d))


# ------------------------------------------------------------------ queues
def test_a_task_queued_twice_and_another_missing_is_caught():
    p = lower(schedule(build("decode"), DeviceModel(workers=4)))
    validate(p)
    q = copy.copy(p)
    q.queue = p.queue.copy()
    dup = int(q.queue[0])
    q.queue[-1] = dup
    with pytest.raises(GraphError, match="queued (2|0) times"):
        validate(q)


def test_a_task_missing_from_every_queue_is_caught():
    p = lower(schedule(build("decode"), DeviceModel(workers=4)))
    q = copy.copy(p)
    w = int(np.argmax(np.diff(p.queue_start)))
    drop = int(p.queue_start[w])   # the first task of the busiest worker
    q.queue = np.delete(p.queue, drop)
    q.queue_start = p.queue_start.copy()
    q.queue_start[w + 1:] -= 1
    with pytest.raises(GraphError, match="queued 0 times"):
        validate(q)


def test_queue_bounds_that_do_not_partition_the_queue_are_caught():
    p = lower(schedule(build("decode"), DeviceModel(workers=4)))
    q = copy.copy(p)
    q.queue_start = p.queue_start.copy()
    q.queue_start[-1] -= 1
    with pytest.raises(GraphError, match="partition"):
        validate(q)


# ------------------------------------------------------------------ arena
def live_pairs(g: Graph) -> list[tuple]:
    """(a, b) scratch buffers whose lifetimes (first to last access, by task) overlap."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in g.tasks:
        for tl in t.reads + t.writes:
            first.setdefault(tl.buf.index, t.index)
            last[tl.buf.index] = t.index
    scratch = [b for b in g.buffers if b.kind == "arena"]
    return [(a, b) for a in scratch for b in scratch
            if a is not b and first[a.index] < first[b.index] <= last[a.index]]


def lower_with_bad_arena(monkeypatch, kind: str, pick, shift: int = 0) -> Program:
    """Lower `kind` with a planner that moves one scratch buffer onto another live one
    (`pick` chooses the pair) and does not report the overlap in `shared`."""
    real = schedule_mod.plan_arena

    def bad(g: Graph, *args, **kwargs):
        top, shared = real(g, *args, **kwargs)
        a, b = pick(live_pairs(g))
        b.offset = a.offset + shift
        assert b.offset + b.words <= top
        return top, shared

    monkeypatch.setattr(schedule_mod, "plan_arena", bad)
    g = build(kind)
    return lower(schedule(g, DeviceModel(workers=len(g.tasks))))


def same_shape(pairs):
    return next((a, b) for a, b in pairs if a.cols == b.cols and a.words >= b.words)


def other_shape(pairs):
    return next((a, b) for a, b in pairs if a.cols != b.cols and a.words >= b.words)


@pytest.mark.parametrize("kind", ["decode", "verify"])
@pytest.mark.parametrize("pick,shift", [(same_shape, 0), (other_shape, 0), (other_shape, 32)],
                         ids=["same-shape", "other-shape", "other-shape-shifted"])
def test_two_live_buffers_on_the_same_arena_words_are_caught(monkeypatch, kind, pick, shift):
    g = build(kind)
    validate(lower(schedule(g, DeviceModel(workers=len(g.tasks)))))
    p = lower_with_bad_arena(monkeypatch, kind, pick, shift)
    with pytest.raises(GraphError, match="share arena words while both are live"):
        validate(p)


# ------------------------------------------------------------------ deadlock
def test_a_wait_on_a_group_that_finishes_later_on_the_same_worker_is_a_deadlock():
    g = build("decode")
    s = schedule(g, DeviceModel(workers=2))
    p = lower(s)
    validate(p)
    w = 0
    q = p.worker_tasks(w).tolist()
    t = next(t for t in q if p.desc["n_wait"][t] < MAX_WAITS)
    later = next(u for u in q if u > t and s.group_of[u] != s.group_of[t])
    d = p.desc.copy()
    n = int(d["n_wait"][t])
    d["wait_event"][t][n] = s.group_of[later]
    d["wait_need"][t][n] = s.group_size[s.group_of[later]]
    d["n_wait"][t] = n + 1
    with pytest.raises(GraphError, match="deadlock"):
        validate(with_desc(p, d))


def test_a_cycle_between_two_workers_is_a_deadlock():
    g = build("verify")
    s = schedule(g, DeviceModel(workers=len(g.tasks)))
    p = lower(s)
    # the last task (SAMPLE) waits on LM_HEAD; make the first LM_HEAD wait on SAMPLE too
    last = p.n_tasks - 1
    lm = next(t for t in range(p.n_tasks) if p.stages[t] == "lm_head")
    d = p.desc.copy()
    n = int(d["n_wait"][lm])
    d["wait_event"][lm][n] = s.group_of[last]
    d["wait_need"][lm][n] = 1
    d["n_wait"][lm] = n + 1
    with pytest.raises(GraphError, match="deadlock"):
        validate(with_desc(p, d))
