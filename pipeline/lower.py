"""Lowering: a scheduled graph becomes a `Program` of plain numpy arrays.

The `Program` is what both executors run: the CPU executor interprets it, the megakernel
uploads it. Nothing in it refers to Python objects: task descriptors (`DESC_DTYPE`, 128
bytes, little-endian, the one definition of the layout), per-worker queues, event sizes,
the arena size and the buffer, weight and access tables.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch

from .errors import GraphError
from .gc_pause import without_gc
from .graph.deps import access_rows
from .graph.ir import KV, At, Graph, Ld, W
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

#: One row per tile a task touches: what validation checks the events against. `buf`
#: (index into `Program.buffers`) keeps two buffers apart even where the arena plan put
#: them on the same words; `space` is 0 for the arena, 1 + buffer index outside it.
ACCESS_DTYPE = np.dtype([("task", "<i4"), ("mode", "<i4"), ("buf", "<i4"), ("space", "<i4"), ("base", "<i8"),
                         ("ld", "<i4"), ("r0", "<i4"), ("r1", "<i4"), ("c0", "<i4"), ("c1", "<i4")])


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

    def exported_hidden(self, read: Callable[[str], torch.Tensor]) -> dict[int, torch.Tensor]:
        """A verify step's exported hidden states, target layer -> [T, hidden], from its
        `hidden_out` buffer as an executor reads it back (`read(buffer name)`)."""
        layers = self.meta.get("export_layers")
        if not layers or self.kind != "verify":
            raise GraphError("this program exports no hidden states (build_verify_step(export_layers=...))")
        h = read("hidden_out")
        return dict(zip(layers, h.split(h.shape[-1] // len(layers), dim=-1)))

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
        # Everything that can fail on a foreign or damaged file fails inside this block
        # (a truncated zip raises BadZipFile, a foreign header KeyError or TypeError).
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                arrays = {k: z[k] for k in ("desc", "queue_start", "queue", "event_need", "access")}
            prog = cls(header["model"], header["kind"], header["tokens"], header["capacity"], header["workers"],
                       arrays["desc"], arrays["queue_start"], arrays["queue"], arrays["event_need"],
                       header["arena_words"], [BufferInfo(**b) for b in header["buffers"]],
                       [WeightInfo(**w) for w in header["weights"]], arrays["access"], header["stages"],
                       header["meta"])
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise GraphError(f"{path}: not a tilewarp program ({type(e).__name__}: {e})") from None
        if prog.desc.dtype != DESC_DTYPE:
            raise GraphError(f"{path}: descriptor layout differs from this tilewarp version")
        if prog.access.dtype != ACCESS_DTYPE:
            raise GraphError(f"{path}: access table layout differs from this tilewarp version")
        return prog


def _resolver(g: Graph) -> Callable[[object], int]:
    """Symbolic argument -> int32 value: At = arena word offset, Ld = row stride, W =
    weight table id, KV = cache table id (the layer)."""
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
    return resolve


def _args(s: Schedule) -> np.ndarray:
    """int64 [tasks, DESC_ARGS]: each task's arguments in its op's order, resolved."""
    g = s.graph
    resolve = _resolver(g)
    args = np.zeros((len(g.tasks), DESC_ARGS), dtype=np.int64)
    by_op: dict[Op, tuple[list[int], list[list[int]]]] = {}
    memo: dict[int, int] = {}   # id -> value: builders share argument objects between tasks
    for t in g.tasks:
        names = OPS[t.op].args
        vals = t.args.values() if tuple(t.args) == names else [t.args[a] for a in names]
        idx, rows = by_op.setdefault(t.op, ([], []))
        idx.append(t.index)
        row = []
        for v in vals:
            if type(v) is not int:
                r = memo.get(id(v))
                if r is None:
                    r = memo[id(v)] = resolve(v)
                v = r
            row.append(v)
        rows.append(row)
    for op, (idx, rows) in by_op.items():
        args[idx, :len(OPS[op].args)] = rows
    return args


def _access(s: Schedule) -> np.ndarray:
    """ACCESS_DTYPE rows in build order (per task: reads, then writes)."""
    g = s.graph
    raw = access_rows(g)   # buffer, task, mode, r0, r1, c0, c1
    ext = np.asarray([b.kind == "external" for b in g.buffers], bool)
    base = np.asarray([max(b.offset, 0) for b in g.buffers], np.int64)
    cols = np.asarray([b.cols for b in g.buffers], np.int64)
    buf = raw[:, 0]
    access = np.zeros(len(raw), dtype=ACCESS_DTYPE)
    access["task"], access["mode"], access["buf"] = raw[:, 1], raw[:, 2], buf
    access["space"] = np.where(ext[buf], 1 + buf, 0)
    access["base"], access["ld"] = base[buf], cols[buf]
    for k, name in enumerate(("r0", "r1", "c0", "c1")):
        access[name] = raw[:, 3 + k]
    return access


@without_gc
def lower(s: Schedule) -> Program:
    g = s.graph
    n = len(g.tasks)
    args = _args(s)
    if np.abs(args).max(initial=0) >= 2**31:
        raise GraphError("an argument does not fit in int32 (arena too large?)")

    desc = np.zeros(n, dtype=DESC_DTYPE)
    desc["op"] = [int(t.op) for t in g.tasks]
    desc["n_wait"] = [len(w) for w in s.waits]
    desc["n_signal"] = 1
    desc["task"] = np.arange(n)
    desc["signal"][:, 0] = s.group_of
    flat = [(t, i, grp, delta) for t, w in enumerate(s.waits) for i, (grp, delta) in enumerate(w)]
    if flat:
        t, i, grp, delta = np.asarray(flat, dtype=np.int64).T
        desc["wait_event"][t, i] = grp
        desc["wait_need"][t, i] = np.asarray(s.group_size, np.int64)[grp]
        prev = np.zeros(n, np.int64)
        np.bitwise_or.at(prev, t[delta != 0], 1 << i[delta != 0])
        desc["wait_prev"] = prev
    desc["args"] = args.astype(np.int32)

    counts = [len(q) for q in s.queues]
    queue_start = np.zeros(len(s.queues) + 1, dtype=np.int32)
    queue_start[1:] = np.cumsum(counts)
    queue = np.asarray([t for q in s.queues for t in q], dtype=np.int32)
    meta = {"critical_path_s": s.critical_path, "makespan_s": s.makespan,
            "worker_bytes_max": max(s.worker_bytes), "worker_bytes_mean": sum(s.worker_bytes) / len(s.worker_bytes),
            "groups": s.group_names, **g.meta}
    return Program(
        model=g.cfg.name, kind=g.kind, tokens=g.tokens, capacity=g.capacity, workers=len(s.queues), desc=desc,
        queue_start=queue_start, queue=queue, event_need=np.asarray(s.group_size, dtype=np.uint32),
        arena_words=s.arena_words,
        buffers=[BufferInfo(b.name, b.offset, b.rows, b.cols, b.dtype, b.kind) for b in g.buffers],
        weights=[WeightInfo(d.name, d.kind, d.index, d.detail) for d in g.weights.values()],
        access=_access(s), stages=[t.stage for t in g.tasks], meta=meta)
