"""Lowering: a scheduled graph becomes a `Program` of plain numpy arrays.

The `Program` is what both executors run: the CPU executor interprets it, the megakernel
uploads it. Nothing in it refers to Python objects: task descriptors (`DESC_DTYPE`, 128
bytes, little-endian, the one definition of the layout), per-worker queues, event sizes,
the arena size and the buffer, weight and access tables.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import GraphError
from .graph.ir import KV, At, Ld, W
from .graph.ops import N_ARGS, OPS, Op
from .schedule import MAX_WAITS, Schedule

#: The task descriptor: 128 bytes. `wait_prev` bit i set = wait i counts the previous step.
DESC_DTYPE = np.dtype([
    ("op", "<u2"), ("flags", "<u2"), ("n_wait", "u1"), ("n_signal", "u1"), ("wait_prev", "u1"), ("pad", "u1"),
    ("task", "<u4"), ("signal", "<u4", (2,)),
    ("wait_event", "<u4", (MAX_WAITS,)), ("wait_need", "<u4", (MAX_WAITS,)),
    ("args", "<i4", (N_ARGS - 1,)),
], align=True)
DESC_ARGS = N_ARGS - 1
assert DESC_DTYPE.itemsize == 128, DESC_DTYPE.itemsize
assert all(len(s.args) <= DESC_ARGS for s in OPS.values())

#: One row per tile a task touches: what validation checks the events against.
ACCESS_DTYPE = np.dtype([("task", "<i4"), ("mode", "<i4"), ("space", "<i4"), ("base", "<i8"), ("ld", "<i4"),
                         ("r0", "<i4"), ("r1", "<i4"), ("c0", "<i4"), ("c1", "<i4")])


@dataclass
class BufferInfo:
    name: str
    offset: int
    rows: int
    cols: int
    dtype: str
    kind: str


@dataclass
class WeightInfo:
    name: str
    kind: str
    index: int
    detail: dict


@dataclass
class Program:
    model: str
    kind: str
    tokens: int
    capacity: int
    workers: int
    desc: np.ndarray          # DESC_DTYPE [tasks]
    queue_start: np.ndarray   # int32 [workers + 1]: worker w runs queue[queue_start[w]:queue_start[w+1]]
    queue: np.ndarray         # int32 [tasks]
    event_need: np.ndarray    # uint32 [events]: signals per step
    arena_words: int
    buffers: list[BufferInfo]
    weights: list[WeightInfo]
    access: np.ndarray        # ACCESS_DTYPE
    stages: list[str]         # per task, for messages and traces
    meta: dict

    @property
    def n_tasks(self) -> int:
        return len(self.desc)

    def buffer(self, name: str) -> BufferInfo:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)

    def worker_tasks(self, w: int) -> np.ndarray:
        return self.queue[self.queue_start[w]:self.queue_start[w + 1]]

    def arg(self, task: int, name: str) -> int:
        return int(self.desc["args"][task][OPS[Op(int(self.desc["op"][task]))].index(name)])

    def describe(self, task: int) -> str:
        return f"task {task} ({Op(int(self.desc['op'][task])).name}, {self.stages[task]})"

    # ------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        header = {k: getattr(self, k) for k in ("model", "kind", "tokens", "capacity", "workers", "arena_words",
                                                "stages", "meta")}
        header["buffers"] = [asdict(b) for b in self.buffers]
        header["weights"] = [asdict(w) for w in self.weights]
        with open(path, "wb") as f:
            np.savez(f, desc=self.desc, queue_start=self.queue_start, queue=self.queue, event_need=self.event_need,
                     access=self.access, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Program":
        try:
            z = np.load(Path(path), allow_pickle=False)
            header = json.loads(bytes(z["header"]).decode())
            desc = z["desc"]
        except (OSError, ValueError, KeyError) as e:
            raise GraphError(f"{path}: not a tilewarp program ({e})") from None
        if desc.dtype != DESC_DTYPE:
            raise GraphError(f"{path}: descriptor layout differs from this tilewarp version")
        return cls(header["model"], header["kind"], header["tokens"], header["capacity"], header["workers"],
                   desc, z["queue_start"], z["queue"], z["event_need"], header["arena_words"],
                   [BufferInfo(**b) for b in header["buffers"]], [WeightInfo(**w) for w in header["weights"]],
                   z["access"], header["stages"], header["meta"])


def lower(s: Schedule) -> Program:
    g = s.graph
    n = len(g.tasks)
    weight_ids = {name: d.index for name, d in g.weights.items()}

    def resolve(v: object) -> int:
        if isinstance(v, At):
            if v.buf.offset < 0:
                raise GraphError(f"argument points into {v.buf.name}, which has no arena words")
            return v.buf.offset + v.row * v.buf.cols + v.col
        if isinstance(v, Ld):
            return v.buf.cols
        if isinstance(v, W):
            return weight_ids[v.name]
        if isinstance(v, KV):
            return v.layer
        return int(v)  # type: ignore[arg-type]

    desc = np.zeros(n, dtype=DESC_DTYPE)
    args = np.zeros((n, DESC_ARGS), dtype=np.int64)
    n_access = sum(len(t.reads) + len(t.writes) for t in g.tasks)
    access = np.zeros(n_access, dtype=ACCESS_DTYPE)
    rows = []
    for t in g.tasks:
        spec = OPS[t.op]
        args[t.index, :len(spec.args)] = [resolve(t.args[a]) for a in spec.args]
        w = s.waits[t.index]
        d = desc[t.index]
        d["op"], d["n_wait"], d["n_signal"], d["task"] = int(t.op), len(w), 1, t.index
        d["signal"][0] = s.group_of[t.index]
        for i, (grp, delta) in enumerate(w):
            d["wait_event"][i] = grp
            d["wait_need"][i] = s.group_size[grp]
            if delta:
                d["wait_prev"] |= 1 << i
        for mode, tiles in ((0, t.reads), (1, t.writes)):
            for tl in tiles:
                b = tl.buf
                space = 0 if b.kind != "external" else 1 + b.index
                rows.append((t.index, mode, space, max(b.offset, 0), b.cols, tl.r0, tl.r1, tl.c0, tl.c1))
    if np.abs(args).max(initial=0) >= 2**31:
        raise GraphError("an argument does not fit in int32 (arena too large?)")
    desc["args"] = args.astype(np.int32)
    access[:] = rows
    counts = [len(q) for q in s.queues]
    queue_start = np.zeros(len(s.queues) + 1, dtype=np.int32)
    queue_start[1:] = np.cumsum(counts)
    queue = np.asarray([t for q in s.queues for t in q], dtype=np.int32)
    meta = {"critical_path_s": s.critical_path, "makespan_s": s.makespan,
            "worker_bytes_max": max(s.worker_bytes), "worker_bytes_mean": sum(s.worker_bytes) / len(s.worker_bytes),
            "groups": s.group_names}
    return Program(
        model=g.cfg.name, kind=g.kind, tokens=g.tokens, capacity=g.capacity, workers=len(s.queues), desc=desc,
        queue_start=queue_start, queue=queue, event_need=np.asarray(s.group_size, dtype=np.uint32),
        arena_words=s.arena_words,
        buffers=[BufferInfo(b.name, b.offset, b.rows, b.cols, b.dtype, b.kind) for b in g.buffers],
        weights=[WeightInfo(d.name, d.kind, d.index, d.detail) for d in g.weights.values()],
        access=access, stages=[t.stage for t in g.tasks], meta=meta)
