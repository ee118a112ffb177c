"""Dependencies from tile overlap: the only way edges come to exist.

Within a step the meaning is sequential in build order, so for two tasks a < b touching
overlapping tiles of one buffer with at least one write, b depends on a (read-after-write,
write-after-read, write-after-write). Buffers that live across steps ("carried": tokens,
step state, outputs) also give loop-carried edges: an access in step s+1 that comes
*earlier* in build order than a conflicting access of step s depends on it (delta -1).
Arena reuse adds its own requirement (the scheduler's `reuse_masks`).

Everything here is vectorised per buffer: a 70-layer verify step has ~50k tasks.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph

READ, WRITE = 0, 1


def access_rows(g: Graph) -> np.ndarray:
    """int64 [n, 7]: (buffer, task, mode, r0, r1, c0, c1) in build order: per task its
    reads, then its writes, as declared."""
    rows = [(tl.buf.index, t.index, mode, tl.r0, tl.r1, tl.c0, tl.c1)
            for t in g.tasks for mode, tiles in ((READ, t.reads), (WRITE, t.writes)) for tl in tiles]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 7)


def access_table(g: Graph) -> np.ndarray:
    """`access_rows` sorted by buffer then task (stable: a task's rows keep their order)."""
    acc = access_rows(g)
    return acc[np.lexsort((acc[:, 1], acc[:, 0]))]


def conflicts(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of overlapping accesses by different tasks, at least one a write.
    `acc` columns: task, mode, r0, r1, c0, c1."""
    task, mode, r0, r1, c0, c1 = (acc[:, i] for i in range(6))
    ov = ((r0[:, None] < r1[None, :]) & (r0[None, :] < r1[:, None])
          & (c0[:, None] < c1[None, :]) & (c0[None, :] < c1[:, None]))
    ov &= (mode[:, None] == WRITE) | (mode[None, :] == WRITE)
    ov &= task[:, None] != task[None, :]
    return np.nonzero(ov)


def _forward_conflicts(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like `conflicts`, but each unordered pair once, as (i, j) with task[i] < task[j];
    `part` (columns task, mode, r0, r1, c0, c1) must be sorted by task."""
    task, mode, r0, r1, c0, c1 = (part[:, i] for i in range(6))
    ov = task[:, None] < task[None, :]
    ov &= (mode[:, None] == WRITE) | (mode[None, :] == WRITE)
    ov &= (r0[:, None] < r1[None, :]) & (r0[None, :] < r1[:, None])
    ov &= (c0[:, None] < c1[None, :]) & (c0[None, :] < c1[:, None])
    return np.nonzero(ov)


def hazard_pairs(g: Graph, acc: np.ndarray | None = None) -> np.ndarray:
    """int64 [n, 3]: (consumer task, producer task, delta), unique, sorted by rows.
    `acc`: the graph's `access_table`, if the caller already has it.

    Pairs are packed into one int64 key, (consumer * n + producer) * 2 + (delta + 1),
    whose order is the rows' lexicographic order: a 70-layer verify step has millions of
    pairs, and a 1-D sort is many times faster than a row-wise unique."""
    acc = access_table(g) if acc is None else acc
    n = len(g.tasks)
    bounds = np.flatnonzero(np.diff(acc[:, 0])) + 1
    keys = []
    for part in np.split(acc, bounds):
        if len(part) < 2:
            continue
        i, j = _forward_conflicts(part[:, 1:])
        ti, tj = part[i, 1], part[j, 1]          # ti < tj
        keys.append((tj * n + ti) * 2 + 1)       # tj follows ti in this step
        if g.buffers[int(part[0, 0])].kind == "carried":
            keys.append((ti * n + tj) * 2)       # next step's ti follows this step's tj
    return _unpack(keys, n)


def _unpack(keys: list[np.ndarray], n: int) -> np.ndarray:
    """Sorted unique keys (a * n + b) * 2 + (delta + 1) -> rows (a, b, delta). A sort and
    a comparison: numpy's `unique` hashes first, which is slower on millions of keys."""
    if not keys:
        return np.zeros((0, 3), np.int64)
    key = np.concatenate(keys)
    key.sort()
    key = key[np.r_[True, key[1:] != key[:-1]]]
    pair = key >> 1
    return np.stack([pair // n, pair % n, (key & 1) - 1], axis=1)


def _by_group(grp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(permutation sorting `grp`, start of each run in that order, group of each run)."""
    perm = np.argsort(grp, kind="stable")
    s = grp[perm]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return perm, starts, s[starts]


def group_hazards(g: Graph, acc: np.ndarray, group_of: np.ndarray, n_groups: int) -> np.ndarray:
    """int64 [m, 3]: (consumer task, producer *group*, delta), unique, sorted by rows; the
    same set as `hazard_pairs` with each producer replaced by its group.

    What the scheduler needs, without the task pairs: in a 70-layer verify step every
    expert task reads the whole hidden state that ~60 projection tiles wrote, which is
    millions of task pairs but one group per consumer. Only writes create conflicts, so
    each buffer's overlap matrix is writes x accesses, and per-consumer group sets come
    from OR-reducing runs of rows (or columns) sorted by group."""
    bounds = np.flatnonzero(np.diff(acc[:, 0])) + 1
    G = int(n_groups)
    keys: list[np.ndarray] = []
    for part in np.split(acc, bounds):
        w = np.flatnonzero(part[:, 2] == WRITE)
        if len(part) < 2 or not len(w):
            continue
        task = part[:, 1]
        cperm, cstarts, cgrp = _by_group(group_of[task])
        col = part[cperm]
        wperm, wstarts, wgrp = _by_group(group_of[task[w]])
        row = part[w[wperm]]
        r0, r1, c0, c1 = (row[:, k, None] for k in (3, 4, 5, 6))
        ov = (r0 < col[None, :, 4]) & (col[None, :, 3] < r1) & (c0 < col[None, :, 6]) & (col[None, :, 5] < c1)
        tw, tc = row[:, 1], col[:, 1]
        later = ov & (tw[:, None] < tc[None, :])     # the write comes first: the access depends on it
        earlier = ov & (tc[None, :] < tw[:, None])   # the access comes first: the write depends on it
        u, x = np.nonzero(np.logical_or.reduceat(later, wstarts, axis=0))
        keys.append((tc[x] * G + wgrp[u]) * 2 + 1)
        i, u = np.nonzero(np.logical_or.reduceat(earlier, cstarts, axis=1))
        keys.append((tw[i] * G + cgrp[u]) * 2 + 1)
        if g.buffers[int(part[0, 0])].kind == "carried":
            # next step's earlier task follows this step's later one
            i, u = np.nonzero(np.logical_or.reduceat(later, cstarts, axis=1))
            keys.append((tw[i] * G + cgrp[u]) * 2)
            u, x = np.nonzero(np.logical_or.reduceat(earlier, wstarts, axis=0))
            keys.append((tc[x] * G + wgrp[u]) * 2)
    return _unpack(keys, G)
