"""Validation of a lowered `Program`: does what the device will do compute the sequential
meaning of the step?

Checks, on the arrays themselves (not the Python graph):
1. structure: every task queued exactly once, known op codes, events in range;
2. events: each event's signals per step equal the `need` of every wait on it;
3. no deadlock: two steps are simulated (any ready worker moves); all tasks finish;
4. ordering: from the simulation, vector clocks give happens-before (worker program
   order plus event waits). Every pair of conflicting accesses (overlapping arena words or
   KV-cache heads, one a write) must be ordered as in build order; loop-carried buffers
   also across the step boundary; and every task of step 2 must follow every task of
   step 1 (so a counter can never be satisfied by a fast worker's next-step signal).
   Programs that run one step per launch (verify, draft) get their step barrier from the launch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GraphError
from .graph.deps import conflicts
from .graph.ops import Op
from .lower import Program
from .schedule import MAX_WAITS


@dataclass
class ValidationReport:
    tasks: int
    events: int
    hazards_checked: int


def _structure(p: Program) -> None:
    n = p.n_tasks
    seen = np.bincount(p.queue, minlength=n)
    if (seen != 1).any():
        bad = int(np.flatnonzero(seen != 1)[0])
        raise GraphError(f"{p.describe(bad) if bad < n else f'task {bad}'} is queued {seen[bad]} times, not once")
    if len(p.queue_start) != p.workers + 1 or p.queue_start[-1] != n:
        raise GraphError("queue_start does not partition the queue over the workers")
    valid_ops = {int(o) for o in Op}
    for t in range(n):
        if int(p.desc["op"][t]) not in valid_ops:
            raise GraphError(f"task {t}: unknown op code {int(p.desc['op'][t])}")
    if (p.desc["n_wait"] > MAX_WAITS).any():
        raise GraphError(f"a task has more than {MAX_WAITS} waits")
    ne = len(p.event_need)
    for t in range(n):
        d = p.desc[t]
        ev = list(d["wait_event"][: int(d["n_wait"])]) + list(d["signal"][: int(d["n_signal"])])
        if any(int(e) >= ne for e in ev):
            raise GraphError(f"{p.describe(t)} names an event outside [0, {ne})")


def _events(p: Program) -> None:
    signals = np.zeros(len(p.event_need), np.int64)
    for t in range(p.n_tasks):
        d = p.desc[t]
        for i in range(int(d["n_signal"])):
            signals[int(d["signal"][i])] += 1
    for t in range(p.n_tasks):
        d = p.desc[t]
        for i in range(int(d["n_wait"])):
            e, need = int(d["wait_event"][i]), int(d["wait_need"][i])
            if need != signals[e]:
                raise GraphError(f"{p.describe(t)} waits for {need} signals per step on event {e}, "
                                 f"which gets {signals[e]}")


def _simulate(p: Program, steps: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `steps` steps; return (vc [steps, tasks, workers], worker_of [tasks], qpos [tasks]).
    vc[s, t, w] = how many of worker w's task instances (counted across steps) happen
    before instance (t, s) finishes, itself included."""
    n, nw = p.n_tasks, p.workers
    worker_of = np.zeros(n, np.int64)
    qpos = np.zeros(n, np.int64)
    qlen = np.diff(p.queue_start).astype(np.int64)
    for w in range(nw):
        q = p.worker_tasks(w)
        worker_of[q] = w
        qpos[q] = np.arange(len(q))
    vc = np.zeros((steps, n, nw), np.int32)
    ev_vc = np.zeros((steps, len(p.event_need), nw), np.int32)
    counters = np.zeros(len(p.event_need), np.int64)
    cur = np.zeros(nw, np.int64)
    step = np.zeros(nw, np.int64)
    wvc = np.zeros((nw, nw), np.int32)
    active = [w for w in range(nw) if qlen[w]]
    desc = p.desc
    while active:
        moved = False
        for w in list(active):
            while True:
                t = int(p.queue[p.queue_start[w] + cur[w]])
                d = desc[t]
                s = int(step[w])
                clock = wvc[w].copy()
                ok = True
                for i in range(int(d["n_wait"])):
                    e = int(d["wait_event"][i])
                    ws = s - 1 if (int(d["wait_prev"]) >> i) & 1 else s
                    if counters[e] < int(d["wait_need"][i]) * (ws + 1):
                        ok = False
                        break
                    if ws >= 0:
                        np.maximum(clock, ev_vc[ws, e], out=clock)
                if not ok:
                    break
                clock[w] = s * qlen[w] + cur[w] + 1
                vc[s, t] = clock
                wvc[w] = clock
                for i in range(int(d["n_signal"])):
                    e = int(d["signal"][i])
                    counters[e] += 1
                    np.maximum(ev_vc[s, e], clock, out=ev_vc[s, e])
                moved = True
                cur[w] += 1
                if cur[w] == qlen[w]:
                    cur[w] = 0
                    step[w] += 1
                    if step[w] == steps:
                        active.remove(w)
                        break
        if not moved:
            w = active[0]
            t = int(p.queue[p.queue_start[w] + cur[w]])
            raise GraphError(f"deadlock: worker {w} cannot start {p.describe(t)} in step {int(step[w]) + 1}; "
                             f"{len(active)} workers blocked")
    return vc, worker_of, qpos


def _word_ranges(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) arena words spanned by each access (a tile's first to last word)."""
    lo = a["base"] + a["r0"].astype(np.int64) * a["ld"] + a["c0"]
    hi = a["base"] + (a["r1"].astype(np.int64) - 1) * a["ld"] + a["c1"]
    return lo, hi


def _hazards(p: Program) -> tuple[np.ndarray, np.ndarray]:
    """Conflicting access pairs (earlier task, later task) in build order, plus the
    loop-carried ones (task late in step s, task early in step s+1).

    Within one buffer, tiles are compared in (row, col) coordinates. Different buffers
    that share arena words (reuse) are compared by word ranges, and must not be live at
    the same time: the sequential meaning itself would be wrong if a write to one
    clobbered the other between two of its accesses, however well the events order them.
    """
    acc = p.access
    order = np.lexsort((acc["task"], acc["buf"]))
    acc = acc[order]
    bounds = np.flatnonzero(np.diff(acc["buf"])) + 1
    groups = np.split(np.arange(len(acc)), bounds)
    same: list[np.ndarray] = []
    carried: list[np.ndarray] = []
    cols = lambda a: np.stack([a["task"], a["mode"], a["r0"], a["r1"], a["c0"], a["c1"]], axis=1).astype(np.int64)
    for idx in groups:
        part = acc[idx]
        i, j = conflicts(cols(part))
        ti, tj = part["task"][i], part["task"][j]
        same.append(np.stack([ti[ti < tj], tj[ti < tj]], axis=1))
        if p.buffers[int(part["buf"][0])].kind == "carried":
            carried.append(np.stack([ti[ti > tj], tj[ti > tj]], axis=1))
    # Different buffers sharing arena words (reuse): compare word intervals.
    ext = []
    for g in groups:
        if acc["space"][g[0]] != 0:
            continue
        a = acc[g]
        lo, hi = _word_ranges(a)
        ext.append((int(lo.min()), int(hi.max()), a, lo, hi))
    ext.sort(key=lambda e: e[0])
    for x in range(len(ext)):
        for y in range(x + 1, len(ext)):
            if ext[y][0] >= ext[x][1]:
                break
            _, _, a, alo, ahi = ext[x]
            _, _, b, blo, bhi = ext[y]
            ov = (alo[:, None] < bhi[None, :]) & (blo[None, :] < ahi[:, None])
            ov &= (a["mode"][:, None] == 1) | (b["mode"][None, :] == 1)
            i, j = np.nonzero(ov)
            if not len(i):
                continue
            ta, tb = a["task"][i], b["task"][j]
            if not (ta.max() < tb.min() or tb.max() < ta.min()):
                na, nb = p.buffers[int(a["buf"][0])].name, p.buffers[int(b["buf"][0])].name
                raise GraphError(f"buffers {na} and {nb} share arena words while both are live: tasks "
                                 f"{int(ta.min())}..{int(ta.max())} use {na} and tasks {int(tb.min())}..{int(tb.max())} "
                                 f"use {nb} on the same words")
            lo_t, hi_t = np.minimum(ta, tb), np.maximum(ta, tb)
            keep = lo_t != hi_t
            same.append(np.stack([lo_t[keep], hi_t[keep]], axis=1))
    cat = lambda xs: np.unique(np.concatenate(xs), axis=0) if xs else np.zeros((0, 2), np.int64)
    return cat(same), cat(carried)


#: Program kinds whose launch runs several steps back to back (the others run one).
CHAINED_KINDS = frozenset({"decode", "dflash"})


def chains_steps(p: Program) -> bool:
    """Does one launch run several steps back to back (decode, dflash), or exactly one
    (verify, draft)?"""
    return p.kind in CHAINED_KINDS


def validate(p: Program) -> ValidationReport:
    _structure(p)
    _events(p)
    steps = 2 if chains_steps(p) else 1
    vc, worker_of, qpos = _simulate(p, steps=steps)
    same, carried = _hazards(p)
    qlen = np.diff(p.queue_start).astype(np.int64)
    if steps == 1:
        carried = carried[:0]
    for s in range(steps):
        a, b = same[:, 0], same[:, 1]
        need = s * qlen[worker_of[a]] + qpos[a] + 1
        bad = vc[s, b, worker_of[a]] < need
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise GraphError(f"unordered conflict in step {s + 1}: {p.describe(int(b[k]))} may run before "
                             f"{p.describe(int(a[k]))} finishes, and they touch the same memory")
    if len(carried):
        a, b = carried[:, 0], carried[:, 1]
        bad = vc[1, b, worker_of[a]] < qpos[a] + 1
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise GraphError(f"unordered loop-carried conflict: {p.describe(int(b[k]))} of step 2 may run before "
                             f"{p.describe(int(a[k]))} of step 1 finishes")
    floor = vc[steps - 1].min(axis=0) if steps == 2 else qlen
    short = np.flatnonzero(floor < qlen)
    if len(short):
        w = int(short[0])
        t = int(np.argmin(vc[1][:, w]))
        raise GraphError(f"step 2's {p.describe(t)} may start before worker {w} finishes step 1: steps can "
                         "overlap, so an event count could be met by a next-step signal")
    return ValidationReport(p.n_tasks, len(p.event_need), len(same) + len(carried))
