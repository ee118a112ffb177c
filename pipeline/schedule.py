"""Scheduler: arena plan, events, placement on workers.

* Arena: carried buffers get fixed words at the start; scratch buffers are placed first-fit
  by liveness (free from the layer after their last access), so memory is reused across layers.
  Reuse adds dependencies (`_reuse_masks`), which go forward in build order: no cycle.
* Events: one monotonic counter per sync group; every task of the group signals it once
  per step. A task waits on the groups of its producers (`deps.group_hazards`), minus every
  group another of its waits already implies (transitive reduction over bitsets of
  groups), so waits stay few.
* Placement: list scheduling in build order onto the worker that frees first, with task
  times from the cost model. Each worker runs its tasks in build order, which is a
  topological order, so the lowest unfinished task is always runnable: no deadlock.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .errors import GraphError
from .gc_pause import without_gc
from .graph.deps import WRITE, access_table, group_hazards, hazard_pairs
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

    @cached_property
    def hazards(self) -> np.ndarray:
        """(consumer, producer, delta) task pairs, unique. Computed on demand: a large
        step has millions, and scheduling itself only needs the producers' groups."""
        return hazard_pairs(self.graph)


# ------------------------------------------------------------------ arena
def plan_arena(g: Graph, acc: np.ndarray | None = None, *, reuse: bool = True) -> tuple[int, list[tuple[Buffer, Buffer]]]:
    """Assign word offsets; return (arena words, pairs of buffers sharing words).
    `acc`: the graph's `access_table`, if the caller already has it. `reuse=False` gives
    every buffer its own words, so every intermediate survives the step (op-by-op checks)."""
    acc = access_table(g) if acc is None else acc
    n = len(g.tasks)
    nb = len(g.buffers)
    first = np.full(nb, -1, np.int64)
    last = np.full(nb, -1, np.int64)
    if len(acc):
        # acc is sorted by (buffer, task): a buffer's first and last rows are its extremes
        starts = np.r_[0, np.flatnonzero(np.diff(acc[:, 0])) + 1]
        ends = np.r_[starts[1:], len(acc)] - 1
        first[acc[starts, 0]] = acc[starts, 1]
        last[acc[ends, 0]] = acc[ends, 1]

    # A buffer last touched in layer L is free from the first task of layer L+1 on: every
    # task there depends on all of layer L through the residual stream, so the reuse
    # hazard is already implied and costs no extra wait.
    layer_start: dict[int, int] = {}
    for t in g.tasks:
        layer_start.setdefault(t.layer, t.index)
    used = np.flatnonzero(last >= 0).tolist()
    free_at = dict(zip(used, (layer_start.get(g.tasks[i].layer + 1, n + 1) if reuse else n + 1
                              for i in last[used].tolist())))

    def align(k: int) -> int:
        return -(-k // ARENA_ALIGN) * ARENA_ALIGN

    top = 0
    for b in g.buffers:
        if b.kind == "carried":
            b.offset, top = top, top + align(b.words)
        elif b.kind == "external":
            b.offset = -1
    base = top
    for b in g.buffers:
        if b.kind == "arena" and first[b.index] < 0:
            raise GraphError(f"buffer {b.name} is declared but no task touches it")
    live: list[tuple[int, int, Buffer]] = []   # (offset, end, buffer), sorted by offset
    # freed ranges still to be paired with reusers, in the order they were freed
    dead_lo = np.zeros(nb, np.int64)
    dead_hi = np.zeros(nb, np.int64)
    dead_buf: list[Buffer] = []
    shared: list[tuple[Buffer, Buffer]] = []
    scratch = [b for b in g.buffers if b.kind == "arena"]
    order = np.argsort(first[[b.index for b in scratch]], kind="stable").tolist()
    for b in (scratch[i] for i in order):
        start = int(first[b.index])
        still = []
        for entry in live:
            if free_at[entry[2].index] > start:
                still.append(entry)
            else:
                dead_lo[len(dead_buf)], dead_hi[len(dead_buf)] = entry[0], entry[1]
                dead_buf.append(entry[2])
        live = still
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
        k = len(dead_buf)
        for i in np.flatnonzero((dead_lo[:k] < off + size) & (off < dead_hi[:k])).tolist():
            shared.append((dead_buf[i], b))
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
    late = False
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
                late = late or last_task[grp] > task
        missing = must[task] & ~acc
        while missing:
            grp = missing.bit_length() - 1
            keep.append((grp, 0))
            acc |= cov[grp] | (1 << grp)
            missing &= ~acc
        waits.append(keep)
        own = group_of[task]
        cov[own] |= acc
        pcov[own] |= pacc
    if late:
        _prune_carried(waits, group_of, cov, n_groups)
    for task, keep in enumerate(waits):
        if len(keep) > MAX_WAITS:
            raise GraphError(f"task {task} ({stages[task]}) needs {len(keep)} waits > {MAX_WAITS}: "
                             f"{[names[g] for g, _ in keep]}")
    return waits


def _prune_carried(waits: list[list[tuple[int, int]]], group_of: list[int], cov: list[int], n_groups: int) -> None:
    """Drop the loop-carried waits that other kept waits imply, using final coverage.

    A loop-carried wait on g names g's previous-step instance, which implies all of g's
    final cov; but a wait on a group *later* in build order is met in the first pass
    before g's cov is complete, so what it implies is missed there (e.g. a DFlash draft
    step's wait on the previous step's verify, implied by its wait on the previous
    ACCEPT). Same-step waits, and so cov, do not depend on loop-carried ones; this pass
    recomputes only pcov from the kept waits and re-checks the kept loop-carried ones."""
    pcov = [0] * n_groups
    for task, keep in enumerate(waits):
        pacc = 0
        carried = False
        for grp, delta in keep:
            if delta == 0:
                pacc |= pcov[grp]
            else:
                carried = True
        if carried:
            new = [w for w in keep if w[1] == 0]
            for grp, delta in keep:
                if delta != 0 and not pacc >> grp & 1:
                    new.append((grp, delta))
                    pacc |= cov[grp] | (1 << grp)
            waits[task] = new
        pcov[group_of[task]] |= pacc


def _bits(groups: np.ndarray, n_groups: int) -> int:
    """A Python-int bitset with the given group ids set."""
    flags = np.zeros(n_groups, bool)
    flags[groups] = True
    return int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")


def _reuse_masks(g: Graph, shared: list[tuple[Buffer, Buffer]], acc: np.ndarray, group_of: np.ndarray,
                 n_groups: int) -> list[int]:
    """Per task, the groups it must follow because it writes words a dead buffer used."""
    must = [0] * len(g.tasks)
    if not shared:
        return must
    starts = np.r_[0, np.flatnonzero(np.diff(acc[:, 0])) + 1]
    ends = np.r_[starts[1:], len(acc)]
    span = dict(zip(acc[starts, 0].tolist(), zip(starts.tolist(), ends.tolist())))
    dead_mask: dict[int, int] = {}
    need: dict[int, int] = {}   # new buffer -> groups of every dead buffer it overlaps
    for dead, new in shared:
        m = dead_mask.get(dead.index)
        if m is None:
            lo, hi = span[dead.index]
            m = dead_mask[dead.index] = _bits(group_of[acc[lo:hi, 1]], n_groups)
        need[new.index] = need.get(new.index, 0) | m
    for b, m in need.items():
        lo, hi = span[b]
        part = acc[lo:hi]
        for task in np.unique(part[part[:, 2] == WRITE, 1]).tolist():
            must[task] |= m
    return must


def _check_groups(g: Graph, acc: np.ndarray, codes: np.ndarray, group_of: np.ndarray, last_task: np.ndarray,
                  names: list[str]) -> None:
    """A group's tasks must not depend on each other, and a same-step wait must be on a
    group that is complete before the waiting task in build order. Checked on group
    codes; the message is built from the task pairs, which are only needed then."""
    cons, grp, delta = codes[:, 0], codes[:, 1], codes[:, 2]
    if not (((grp == group_of[cons]) | (last_task[grp] > cons)) & (delta == 0)).any():
        return
    pairs = hazard_pairs(g, acc)
    cons, prod, delta = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    pg = group_of[prod]
    same = (pg == group_of[cons]) & (delta == 0)
    if same.any():
        k = int(np.flatnonzero(same)[0])
        raise GraphError(f"tasks {prod[k]} and {cons[k]} of group {names[pg[k]]!r} depend on each other; "
                         "a sync group must be independent tasks")
    late = (last_task[pg] > cons) & (delta == 0)
    k = int(np.flatnonzero(late)[0])
    raise GraphError(f"task {cons[k]} ({g.tasks[cons[k]].stage}) needs group {names[pg[k]]!r}, whose last "
                     f"task {last_task[pg[k]]} comes after it: the wait could never complete")


def _place(g: Graph, model: DeviceModel, waits: list[list[tuple[int, int]]], group_of: list[int], n_groups: int
           ) -> tuple[list[int], list[list[int]], list[float], float, list[float]]:
    """List scheduling in build order onto the worker that frees first; a task starts once
    its worker is free and the groups it waits on (this step) are done. Returns
    (worker per task, queues, estimated finish per task, critical path, bytes per worker)."""
    n = len(g.tasks)
    times = [model.task_time(t.cost.bytes, t.cost.flops) for t in g.tasks]
    group_done = [0.0] * n_groups
    group_cp = [0.0] * n_groups
    free = [(0.0, w) for w in range(model.workers)]
    heapq.heapify(free)
    replace = heapq.heapreplace
    worker_of = [0] * n
    finish = [0.0] * n
    queues: list[list[int]] = [[] for _ in range(model.workers)]
    wbytes = [0.0] * model.workers
    cp_best = 0.0
    for t, task in enumerate(g.tasks):
        ready = cp_in = 0.0
        for grp, d in waits[t]:
            if d == 0:
                if group_done[grp] > ready:
                    ready = group_done[grp]
                if group_cp[grp] > cp_in:
                    cp_in = group_cp[grp]
        cp = times[t] + cp_in
        f, w = free[0]
        end = (f if f > ready else ready) + times[t]
        replace(free, (end, w))
        finish[t] = end
        worker_of[t] = w
        queues[w].append(t)
        wbytes[w] += task.cost.bytes
        grp = group_of[t]
        if end > group_done[grp]:
            group_done[grp] = end
        if cp > group_cp[grp]:
            group_cp[grp] = cp
        if cp > cp_best:
            cp_best = cp
    return worker_of, queues, finish, cp_best, wbytes


@without_gc
def schedule(g: Graph, model: DeviceModel | None = None, *, reuse_arena: bool = True) -> Schedule:
    model = model or DeviceModel()
    n = len(g.tasks)
    acc = access_table(g)
    arena_words, shared = plan_arena(g, acc, reuse=reuse_arena)

    gid: dict[str, int] = {}
    group_of_l = [gid.setdefault(t.group, len(gid)) for t in g.tasks]
    group_of = np.asarray(group_of_l, dtype=np.int64)
    names = list(gid)
    size = np.bincount(group_of, minlength=len(gid)).tolist()
    last_task = np.full(len(gid), -1, np.int64)
    np.maximum.at(last_task, group_of, np.arange(n))

    codes = group_hazards(g, acc, group_of, len(gid))   # (consumer, producer group, delta)
    _check_groups(g, acc, codes, group_of, last_task, names)
    cand: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for c, grp, d in codes.tolist():
        cand[c].append((grp, d))
    must = _reuse_masks(g, shared, acc, group_of, len(gid))
    waits = _reduce_waits(cand, must, group_of_l, last_task.tolist(), len(gid), names, [t.stage for t in g.tasks])
    worker_of, queues, finish, cp_best, wbytes = _place(g, model, waits, group_of_l, len(gid))
    return Schedule(g, group_of_l, names, size, waits, worker_of, queues, arena_words, shared, finish, cp_best,
                    wbytes)
