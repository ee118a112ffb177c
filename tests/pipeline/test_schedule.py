"""Scheduler: the arena plan never gives one word to two live buffers but does reuse
memory; the waits are few, point backwards, and still imply every dependency; the
placement cannot deadlock; the cost-model estimates are consistent.

Liveness is re-derived here from the tasks, with the planner's rule: a buffer is live
from its first access to the first task of the layer after its last access (everything
in that layer already depends on the previous one through the residual stream).
"""

from __future__ import annotations

import numpy as np
import pytest

from tilewarp.pipeline.graph.deps import access_table, group_hazards, hazard_pairs
from tilewarp.pipeline.errors import GraphError
from tilewarp.pipeline.graph.ir import Cost, Graph
from tilewarp.pipeline.graph.ops import Op
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import ARENA_ALIGN, MAX_WAITS, DeviceModel, Schedule, schedule
from tilewarp.pipeline.validate import validate

CFG = preset("tiny")
CAP = 256


@pytest.fixture(scope="module", params=[("tiny", "decode", 1, 132), ("tiny", "verify", 8, 132),
                                        ("tiny", "verify", 8, 3), ("mimo-mini", "verify", 8, 132)],
                ids=lambda p: f"{p[0]}-{p[1]}{p[2]}-w{p[3]}")
def sched(request) -> Schedule:
    name, kind, t, workers = request.param
    cfg = preset(name)
    g = build_step(cfg, t, kind=kind, capacity=CAP if name == "tiny" else 4096)
    return schedule(g, DeviceModel(workers=workers))


def aligned(words: int) -> int:
    return -(-words // ARENA_ALIGN) * ARENA_ALIGN


def live_ranges(g: Graph) -> dict[int, tuple[int, int]]:
    """buffer index -> [first task, task from which its words may be reused)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in g.tasks:
        for tl in t.reads + t.writes:
            first.setdefault(tl.buf.index, t.index)
            last[tl.buf.index] = t.index
    layer_start: dict[int, int] = {}
    for t in g.tasks:
        layer_start.setdefault(t.layer, t.index)
    end = len(g.tasks) + 1
    return {b: (first[b], layer_start.get(g.tasks[last[b]].layer + 1, end)) for b in first}


def word_overlaps(g: Graph) -> list[tuple]:
    bufs = [b for b in g.buffers if b.kind != "external"]
    out = []
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if a.offset < b.offset + aligned(b.words) and b.offset < a.offset + aligned(a.words):
                out.append((a, b))
    return out


# ------------------------------------------------------------------ arena
def test_buffers_sharing_arena_words_are_never_live_at_the_same_time(sched):
    g = sched.graph
    live = live_ranges(g)
    pairs = word_overlaps(g)
    assert pairs, "expected some reuse"
    for a, b in pairs:
        assert a.kind == b.kind == "arena", f"carried buffer {a.name} or {b.name} shares words"
        (fa, ea), (fb, eb) = live[a.index], live[b.index]
        assert ea <= fb or eb <= fa, f"{a.name} live {fa}..{ea} and {b.name} live {fb}..{eb} share words"


def test_arena_reuses_memory_and_every_buffer_fits_aligned(sched):
    g = sched.graph
    total = sum(aligned(b.words) for b in g.buffers if b.kind != "external")
    assert sched.arena_words < total / 2
    for b in g.buffers:
        if b.kind == "external":
            assert b.offset == -1
        else:
            assert b.offset % ARENA_ALIGN == 0 and 0 <= b.offset and b.offset + b.words <= sched.arena_words


def test_carried_buffers_sit_first_at_fixed_offsets(sched):
    g = sched.graph
    carried = [b for b in g.buffers if b.kind == "carried"]
    scratch = [b for b in g.buffers if b.kind == "arena"]
    assert max(b.offset + b.words for b in carried) <= min(b.offset for b in scratch)


def test_every_reuse_of_words_is_reported_as_shared(sched):
    """Validation and the reuse waits rely on `shared` naming every (dead, new) pair."""
    live = live_ranges(sched.graph)
    want = {tuple(sorted((a.index, b.index), key=lambda i: live[i][0])) for a, b in word_overlaps(sched.graph)}
    got = {(d.index, n.index) for d, n in sched.shared}
    assert got == want


# ------------------------------------------------------------------ events
def test_every_task_has_at_most_max_waits(sched):
    assert max(len(w) for w in sched.waits) <= MAX_WAITS
    assert all(len(set(w)) == len(w) for w in sched.waits), "a wait listed twice"


def test_same_step_waits_point_only_to_groups_that_finished_earlier_in_build_order(sched):
    last = np.full(len(sched.group_names), -1)
    np.maximum.at(last, np.asarray(sched.group_of), np.arange(len(sched.group_of)))
    for t, waits in enumerate(sched.waits):
        for grp, delta in waits:
            assert delta in (0, -1)
            if delta == 0:
                assert last[grp] < t, f"task {t} waits for group {sched.group_names[grp]} ending at {last[grp]}"
    cons, prod, delta = sched.hazards.T
    assert (prod[delta == 0] < cons[delta == 0]).all()


def closures(s: Schedule) -> tuple[list[int], list[int]]:
    """Per group, bitsets of (this-step groups, previous-step groups) complete once it is."""
    n = len(s.group_names)
    cov, pcov = [0] * n, [0] * n
    for t, waits in enumerate(s.waits):
        acc = pacc = 0
        for grp, delta in waits:
            if delta == 0:
                acc |= cov[grp] | 1 << grp
                pacc |= pcov[grp]
            else:
                pacc |= cov[grp] | 1 << grp
        cov[s.group_of[t]] |= acc
        pcov[s.group_of[t]] |= pacc
    return cov, pcov


def task_closure(s: Schedule, cov: list[int], pcov: list[int], t: int) -> tuple[int, int]:
    acc = pacc = 0
    for grp, delta in s.waits[t]:
        if delta == 0:
            acc |= cov[grp] | 1 << grp
            pacc |= pcov[grp]
        else:
            pacc |= cov[grp] | 1 << grp
    return acc, pacc


def test_the_reduced_waits_still_imply_every_dependency(sched):
    """Transitive reduction may drop a wait only if other waits cover it."""
    cov, pcov = closures(sched)
    for c, p, delta in sched.hazards.tolist():
        acc, pacc = task_closure(sched, cov, pcov, c)
        grp = sched.group_of[p]
        assert (acc if delta == 0 else pacc) >> grp & 1, (
            f"task {c} ({sched.graph.tasks[c].stage}) does not wait (even transitively) for task {p} "
            f"({sched.graph.tasks[p].stage}), delta {delta}")


def test_a_task_writing_reused_words_waits_for_every_task_of_the_previous_owner(sched):
    cov, pcov = closures(sched)
    users: dict[int, set[int]] = {}
    writers: dict[int, set[int]] = {}
    for t in sched.graph.tasks:
        for tl in t.reads + t.writes:
            users.setdefault(tl.buf.index, set()).add(t.index)
        for tl in t.writes:
            writers.setdefault(tl.buf.index, set()).add(t.index)
    checked = 0
    for dead, new in sched.shared:
        dead_groups = 0
        for u in users[dead.index]:
            dead_groups |= 1 << sched.group_of[u]
        for w in writers[new.index]:
            acc, _ = task_closure(sched, cov, pcov, w)
            assert dead_groups & ~acc == 0, f"task {w} may overwrite {dead.name} before all its users are done"
            checked += 1
    assert checked


def test_producer_groups_are_exactly_the_groups_of_the_task_level_hazards(sched):
    """The scheduler works on (consumer, producer group) pairs computed per buffer; they
    must be the task pairs of `hazard_pairs` with producers mapped to their groups."""
    g = sched.graph
    group_of = np.asarray(sched.group_of)
    h = hazard_pairs(g)
    want = np.unique(np.stack([h[:, 0], group_of[h[:, 1]], h[:, 2]], axis=1), axis=0)
    got = group_hazards(g, access_table(g), group_of, len(sched.group_names))
    assert np.array_equal(got, want)
    assert (h[:, 2] == -1).any(), "tokens and step state give loop-carried pairs"


def test_waits_are_fewer_than_the_dependencies_they_cover(sched):
    assert sum(len(w) for w in sched.waits) < len(sched.hazards)


# ------------------------------------------------------------------ placement
def test_every_task_is_placed_once_and_each_worker_runs_in_build_order(sched):
    flat = sorted(t for q in sched.queues for t in q)
    assert flat == list(range(len(sched.graph.tasks)))
    for w, q in enumerate(sched.queues):
        assert q == sorted(q)
        assert all(sched.worker_of[t] == w for t in q)


def test_the_placement_runs_two_steps_to_completion_without_deadlock(sched):
    """Event counters as on the device: a wait needs group size x step (x step-1 for the
    previous step); each worker runs its queue in order, step after step."""
    need = np.asarray(sched.group_size)
    counter = np.zeros(len(need), np.int64)
    cursor = [0] * len(sched.queues)
    step = [1] * len(sched.queues)
    active = [w for w, q in enumerate(sched.queues) if q]
    done = 0
    while active:
        moved = False
        for w in list(active):
            t = sched.queues[w][cursor[w]]
            if all(counter[g] >= need[g] * (step[w] + d) for g, d in sched.waits[t]):
                counter[sched.group_of[t]] += 1
                cursor[w] += 1
                done += 1
                moved = True
                if cursor[w] == len(sched.queues[w]):
                    cursor[w], step[w] = 0, step[w] + 1
                    if step[w] == 3:
                        active.remove(w)
        assert moved, f"deadlock after {done} task instances"
    assert done == 2 * len(sched.graph.tasks)


def test_critical_path_is_at_most_the_makespan_and_at_least_the_longest_task(sched):
    model = DeviceModel(workers=len(sched.queues))
    times = [model.task_time(t.cost.bytes, t.cost.flops) for t in sched.graph.tasks]
    assert max(times) <= sched.critical_path <= sched.makespan * (1 + 1e-12)
    assert sched.makespan >= sum(times) / len(sched.queues)


def test_bytes_per_worker_add_up_to_the_steps_bytes(sched):
    total = sum(t.cost.bytes for t in sched.graph.tasks)
    assert sum(sched.worker_bytes) == pytest.approx(total)
    assert len(sched.worker_bytes) == len(sched.queues)


def test_one_worker_gets_everything_and_more_workers_shorten_the_makespan():
    g1 = build_step(CFG, 8, kind="verify", capacity=CAP)
    one = schedule(g1, DeviceModel(workers=1))
    assert one.queues[0] == list(range(len(g1.tasks)))
    many = schedule(build_step(CFG, 8, kind="verify", capacity=CAP), DeviceModel(workers=32))
    assert many.makespan < one.makespan


# ------------------------------------------------------------------ malformed groups
def toy_graph(tasks: list[tuple]) -> Graph:
    """Tasks (group, reads, writes[, layer]) over one-row buffers named by single letters."""
    g = Graph(CFG, 1, "verify", CAP)
    bufs = {c: g.buffer(c, 1, 8) for c in sorted({c for t in tasks for c in t[1] + t[2]})}
    for group, reads, writes, *layer in tasks:
        g.task(Op.EMBED, {"tok_off": 0, "w": 0, "out_off": 0, "out_ld": 8, "t": 1, "c0": 0, "c1": 8},
               reads=[bufs[c].tile() for c in reads], writes=[bufs[c].tile() for c in writes], stage=group,
               layer=layer[0] if layer else 0, cost=Cost(64), group=group)
    return g


def test_a_sync_group_whose_tasks_depend_on_each_other_is_refused():
    with pytest.raises(GraphError, match="tasks 0 and 1 of group 'A' depend on each other"):
        schedule(toy_graph([("A", "", "a"), ("A", "a", "b")]))


def test_a_wait_on_a_group_that_ends_after_the_waiting_task_is_refused():
    with pytest.raises(GraphError, match="task 1 .* needs group 'A', whose last task 2 comes after it"):
        schedule(toy_graph([("A", "", "a"), ("B", "a", "b"), ("A", "", "c")]))


def test_independent_tasks_may_share_a_group_and_a_consumer_waits_once():
    s = schedule(toy_graph([("A", "", "a"), ("A", "", "b"), ("B", "ab", "c")]), DeviceModel(workers=3))
    assert s.group_size == [2, 1] and s.waits[2] == [(0, 0)]


def test_reusing_a_dead_buffers_words_waits_for_its_last_reader_even_without_a_data_dependency():
    """Layer 1's `c` gets the words of layer 0's `a`; the task writing `c` reads nothing,
    so only the reuse wait keeps it from clobbering `a` before task 1 has read it."""
    g = toy_graph([("A", "", "a", 0), ("B", "a", "b", 0), ("C", "", "c", 1), ("D", "bc", "d", 1)])
    s = schedule(g, DeviceModel(workers=4))
    a, c = (next(b for b in g.buffers if b.name == n) for n in "ac")
    assert c.offset == a.offset and [(x.name, y.name) for x, y in s.shared] == [("a", "c")]
    assert s.waits[2] == [(s.group_names.index("B"), 0)]
    validate(lower(s))
    s.waits[2] = []
    with pytest.raises(GraphError, match="unordered conflict"):
        validate(lower(s))
