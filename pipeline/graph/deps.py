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


def access_table(g: Graph) -> np.ndarray:
    """int64 [n, 7]: (buffer, task, mode, r0, r1, c0, c1), sorted by buffer then task."""
    rows = [(tl.buf.index, t.index, mode, tl.r0, tl.r1, tl.c0, tl.c1)
            for t in g.tasks for mode, tiles in ((READ, t.reads), (WRITE, t.writes)) for tl in tiles]
    acc = np.asarray(rows, dtype=np.int64).reshape(-1, 7)
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


def hazard_pairs(g: Graph) -> np.ndarray:
    """int64 [n, 3]: (consumer task, producer task, delta), unique."""
    acc = access_table(g)
    bounds = np.flatnonzero(np.diff(acc[:, 0])) + 1
    out = []
    for part in np.split(acc, bounds):
        if len(part) < 2:
            continue
        i, j = conflicts(part[:, 1:])
        ti, tj = part[i, 1], part[j, 1]
        fwd = ti < tj
        out.append(np.stack([tj[fwd], ti[fwd], np.zeros(int(fwd.sum()), np.int64)], axis=1))
        if g.buffers[int(part[0, 0])].kind == "carried":
            back = ti > tj   # j comes first in order: its next-step instance follows i
            out.append(np.stack([tj[back], ti[back], -np.ones(int(back.sum()), np.int64)], axis=1))
    if not out:
        return np.zeros((0, 3), np.int64)
    return np.unique(np.concatenate(out), axis=0)
