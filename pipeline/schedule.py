"""Scheduler: arena plan, events, placement on workers.

* Arena: carried buffers get fixed words at the start; scratch buffers are placed first-fit
  by liveness (free from the layer after their last access), so memory is reused across layers.
  Reuse adds dependencies (`deps.reuse_deps`), which go forward in build order: no cycle.
* Events: one monotonic counter per sync group; every task of the group signals it once
  per step. A task waits on the groups of its producers, minus every group another of its
  waits already implies (transitive reduction over bitsets of groups), so waits stay few.
* Placement: list scheduling in build order onto the worker that frees first, with task
  times from the cost model. Each worker runs its tasks in build order, which is a
  topological order, so the lowest unfinished task is always runnable: no deadlock.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .errors import GraphError
from .graph.deps import WRITE, access_table, hazard_pairs
from .graph.ir import Buffer, Graph

MAX_WAITS = 6
ARENA_ALIGN = 32   # words (128 bytes): every buffer starts on a cache line


@dataclass(frozen=True)
class DeviceModel:
    """Rates the cost model turns bytes and FLOPs into time with (H100 SXM by default)."""

    workers: int = 132
    bandwidth: float = 3.0e12        # bytes/s, measured device-to-device copy
    flops: float = 50e12             # fp32 FMA path the GEMV tiles use
    task_overhead: float = 0.6e-6    # fetch + waits + signal, seconds

    def task_time(self, bytes_: float, flops: float) -> float:
        share = 1.0 / self.workers
        return bytes_ / (self.bandwidth * share) + flops / (self.flops * share) + self.task_overhead


@dataclass
class Schedule:
    graph: Graph
    hazards: np.ndarray                 # (consumer, producer, delta) task pairs
    group_of: list[int]                 # task -> group id (= event id)
    group_names: list[str]
    group_size: list[int]
    waits: list[list[tuple[int, int]]]  # task -> [(event, delta)]
    worker_of: list[int]
    queues: list[list[int]]
    arena_words: int
    shared: list[tuple[Buffer, Buffer]]
    est_finish: list[float]
    critical_path: float
    worker_bytes: list[float] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        return max(self.est_finish) if self.est_finish else 0.0


# ------------------------------------------------------------------ arena
def plan_arena(g: Graph) -> tuple[int, list[tuple[Buffer, Buffer]]]:
    """Assign word offsets; return (arena words, pairs of buffers sharing words)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in g.tasks:
        for tl in t.reads + t.writes:
            b = tl.buf.index
            first.setdefault(b, t.index)
            last[b] = t.index

    # A buffer last touched in layer L is free from the first task of layer L+1 on: every
    # task there depends on all of layer L through the residual stream, so the reuse
    # hazard is already implied and costs no extra wait.
    layer_start: dict[int, int] = {}
    for t in g.tasks:
        layer_start.setdefault(t.layer, t.index)
    free_at = {b: layer_start.get(g.tasks[i].layer + 1, len(g.tasks) + 1) for b, i in last.items()}

    def align(n: int) -> int:
        return -(-n // ARENA_ALIGN) * ARENA_ALIGN

    top = 0
    for b in g.buffers:
        if b.kind == "carried":
            b.offset, top = top, top + align(b.words)
        elif b.kind == "external":
            b.offset = -1
    base = top
    live: list[tuple[int, int, Buffer]] = []   # (offset, end, buffer), sorted by offset
    dead: list[tuple[int, int, Buffer]] = []   # freed ranges still to be paired with reusers
    shared: list[tuple[Buffer, Buffer]] = []
    scratch = sorted((b for b in g.buffers if b.kind == "arena" and b.index in first), key=lambda b: first[b.index])
    for b in g.buffers:
        if b.kind == "arena" and b.index not in first:
            raise GraphError(f"buffer {b.name} is declared but no task touches it")
    for b in scratch:
        start = first[b.index]
        still = []
        for off, end, lb in live:
            (still if free_at[lb.index] > start else dead).append((off, end, lb))
        live = sorted(still, key=lambda x: x[0])
        size = align(b.words)
        off = base
        for lo, hi, _ in live:
            if off + size <= lo:
                break
            off = max(off, hi)
        b.offset = off
        live.append((off, off + size, b))
        live.sort(key=lambda x: x[0])
        top = max(top, off + size)
        for lo, hi, db in dead:
            if lo < off + size and off < hi:
                shared.append((db, b))
    return top, shared


# ----------------------------------------------------------------- events
def _reduce_waits(cand: list[list[tuple[int, int]]], must: list[int], group_of: list[int], last_task: list[int],
                  n_groups: int, names: list[str], stages: list[str]) -> list[list[tuple[int, int]]]:
    """Drop waits implied by other waits. cov[g]: groups (this step) complete once g is;
    pcov[g]: groups of the previous step complete once g is. `must[t]` is a bitset of
    groups task t must follow (arena reuse): added as waits only where not yet implied."""
    cov = [0] * n_groups
    pcov = [0] * n_groups
    waits: list[list[tuple[int, int]]] = []
    for task, cands in enumerate(cand):
        keep: list[tuple[int, int]] = []
        acc = pacc = 0
        for grp, delta in sorted(cands, key=lambda gd: (gd[1] != 0, -last_task[gd[0]])):
            if delta == 0:
                if acc >> grp & 1:
                    continue
                keep.append((grp, 0))
                acc |= cov[grp] | (1 << grp)
                pacc |= pcov[grp]
            else:
                if pacc >> grp & 1:
                    continue
                keep.append((grp, -1))
                pacc |= cov[grp] | (1 << grp)
        missing = must[task] & ~acc
        while missing:
            grp = missing.bit_length() - 1
            keep.append((grp, 0))
            acc |= cov[grp] | (1 << grp)
            missing &= ~acc
        if len(keep) > MAX_WAITS:
            raise GraphError(f"task {task} ({stages[task]}) needs {len(keep)} waits > {MAX_WAITS}: "
                             f"{[names[g] for g, _ in keep]}")
        waits.append(keep)
        own = group_of[task]
        cov[own] |= acc
        pcov[own] |= pacc
    return waits


def _reuse_masks(g: Graph, shared: list[tuple[Buffer, Buffer]], acc: np.ndarray, group_of: np.ndarray) -> list[int]:
    """Per task, the groups it must follow because it writes words a dead buffer used."""
    must = [0] * len(g.tasks)
    by_buf: dict[int, np.ndarray] = {}
    bounds = np.flatnonzero(np.diff(acc[:, 0])) + 1
    for part in np.split(acc, bounds):
        by_buf[int(part[0, 0])] = part
    for dead, new in shared:
        mask = 0
        for grp in np.unique(group_of[by_buf[dead.index][:, 1]]).tolist():
            mask |= 1 << grp
        writers = by_buf[new.index]
        for task in np.unique(writers[writers[:, 2] == WRITE][:, 1]).tolist():
            must[task] |= mask
    return must


def schedule(g: Graph, model: DeviceModel | None = None) -> Schedule:
    model = model or DeviceModel()
    n = len(g.tasks)
    arena_words, shared = plan_arena(g)

    gid: dict[str, int] = {}
    group_of_l = [gid.setdefault(t.group, len(gid)) for t in g.tasks]
    group_of = np.asarray(group_of_l, dtype=np.int64)
    names = list(gid)
    size = np.bincount(group_of, minlength=len(gid)).tolist()
    last_task = np.full(len(gid), -1, np.int64)
    np.maximum.at(last_task, group_of, np.arange(n))

    pairs = hazard_pairs(g)   # (consumer, producer, delta)
    cons, prod, delta = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    pg = group_of[prod]
    same = (pg == group_of[cons]) & (delta == 0)
    if same.any():
        k = int(np.flatnonzero(same)[0])
        raise GraphError(f"tasks {prod[k]} and {cons[k]} of group {names[pg[k]]!r} depend on each other; "
                         "a sync group must be independent tasks")
    late = (last_task[pg] > cons) & (delta == 0)
    if late.any():
        k = int(np.flatnonzero(late)[0])
        raise GraphError(f"task {cons[k]} ({g.tasks[cons[k]].stage}) needs group {names[pg[k]]!r}, whose last "
                         f"task {last_task[pg[k]]} comes after it: the wait could never complete")
    codes = np.unique(np.stack([cons, pg, delta], axis=1), axis=0)
    cand: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for c, grp, d in codes.tolist():
        cand[c].append((grp, d))
    must = _reuse_masks(g, shared, access_table(g), group_of)
    waits = _reduce_waits(cand, must, group_of_l, last_task.tolist(), len(gid), names, [t.stage for t in g.tasks])

    # Placement by list scheduling; finish time of a group = its last member's.
    times = [model.task_time(t.cost.bytes, t.cost.flops) for t in g.tasks]
    group_done = [0.0] * len(gid)
    group_cp = [0.0] * len(gid)
    free = [(0.0, w) for w in range(model.workers)]
    heapq.heapify(free)
    worker_of = [0] * n
    finish = [0.0] * n
    queues: list[list[int]] = [[] for _ in range(model.workers)]
    wbytes = [0.0] * model.workers
    cp_best = 0.0
    for t in range(n):
        ready = max((group_done[grp] for grp, d in waits[t] if d == 0), default=0.0)
        cp = times[t] + max((group_cp[grp] for grp, d in waits[t] if d == 0), default=0.0)
        f, w = heapq.heappop(free)
        start = max(f, ready)
        finish[t] = start + times[t]
        heapq.heappush(free, (finish[t], w))
        worker_of[t] = w
        queues[w].append(t)
        wbytes[w] += g.tasks[t].cost.bytes
        grp = group_of_l[t]
        group_done[grp] = max(group_done[grp], finish[t])
        group_cp[grp] = max(group_cp[grp], cp)
        cp_best = max(cp_best, cp)
    return Schedule(g, pairs, group_of_l, names, size, waits, worker_of, queues, arena_words, shared, finish, cp_best,
                    wbytes)


def stage_counts(s: Schedule) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for t in s.graph.tasks:
        out[t.op.name] += 1
    return dict(out)
