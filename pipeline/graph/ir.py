"""Task-graph IR: buffers, tiles, tasks.

A step is the tasks' sequential meaning in build order; parallelism comes only from
dependencies, and dependencies come only from tiles (see `deps.py`): a builder says what
each task reads and writes, never which task it waits for.

Arguments that name memory are symbolic until lowering: `At(buffer, row, col)` becomes a
word offset once the arena is planned, `Ld(buffer)` its row stride, `W(name)` a weight
table id, `KV(layer)` a KV-cache table id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from ..config import ModelConfig
from ..errors import GraphError
from .ops import OPS, Op

# arena: planned scratch; carried: lives across steps (tokens, step state, outputs);
# external: memory outside the arena (the KV cache), declared only so hazards are derived.
BufKind = Literal["arena", "carried", "external"]


@dataclass(eq=False)
class Buffer:
    """A 2-D array of 4-byte words (fp32 or int32), row-major."""

    name: str
    rows: int
    cols: int
    dtype: Literal["f32", "i32"] = "f32"
    kind: BufKind = "arena"
    index: int = -1
    offset: int = -1   # word offset in the arena, set by the planner

    @property
    def words(self) -> int:
        return self.rows * self.cols

    def tile(self, r0: int = 0, r1: int | None = None, c0: int = 0, c1: int | None = None) -> "Tile":
        t = Tile(self, r0, self.rows if r1 is None else r1, c0, self.cols if c1 is None else c1)
        if not (0 <= t.r0 < t.r1 <= self.rows and 0 <= t.c0 < t.c1 <= self.cols):
            raise GraphError(f"tile [{t.r0}:{t.r1}, {t.c0}:{t.c1}] outside buffer {self.name} "
                             f"[{self.rows}, {self.cols}]")
        return t

    def __repr__(self) -> str:
        return f"Buffer({self.name}[{self.rows}x{self.cols}] {self.dtype})"


@dataclass(frozen=True, eq=False)
class Tile:
    buf: Buffer
    r0: int
    r1: int
    c0: int
    c1: int


@dataclass(frozen=True)
class At:
    buf: Buffer
    row: int = 0
    col: int = 0


@dataclass(frozen=True)
class Ld:
    buf: Buffer


@dataclass(frozen=True)
class W:
    name: str


@dataclass(frozen=True)
class KV:
    layer: int


Arg = Union[int, At, Ld, W, KV]

#: Each op's argument names as a set, for a one-comparison check per task.
_ARG_SETS = {op: frozenset(spec.args) for op, spec in OPS.items()}


@dataclass(frozen=True)
class Cost:
    """What a task moves and computes; the scheduler turns it into time."""

    bytes: float
    flops: float = 0.0


@dataclass(eq=False, slots=True)
class Task:
    index: int
    op: Op
    args: dict[str, Arg]
    reads: tuple[Tile, ...]
    writes: tuple[Tile, ...]
    stage: str
    group: str
    layer: int
    cost: Cost


@dataclass
class WeightDecl:
    """A weight the program reads; `kind` tells the runtime how to upload it."""

    name: str
    kind: Literal["bf16", "mxfp4_bank", "vector", "rope"]
    index: int
    detail: dict = field(default_factory=dict)


class Graph:
    """Tasks of one step of `tokens` tokens, in build (sequential-meaning) order."""

    def __init__(self, cfg: ModelConfig, tokens: int, kind: str, capacity: int):
        self.cfg = cfg
        self.tokens = tokens
        self.kind = kind
        self.capacity = capacity
        self.buffers: list[Buffer] = []
        self.tasks: list[Task] = []
        self.weights: dict[str, WeightDecl] = {}
        self.meta: dict = {}   # JSON-able facts the executors need (drafter, exported layers): Program.meta
        self._names: set[str] = set()

    def buffer(self, name: str, rows: int, cols: int, dtype: Literal["f32", "i32"] = "f32",
               kind: BufKind = "arena") -> Buffer:
        if name in self._names:
            raise GraphError(f"buffer {name!r} declared twice")
        if rows <= 0 or cols <= 0:
            raise GraphError(f"buffer {name!r} has empty shape [{rows}, {cols}]")
        self._names.add(name)
        b = Buffer(name, rows, cols, dtype, kind, index=len(self.buffers))
        self.buffers.append(b)
        return b

    def weight(self, name: str, kind: Literal["bf16", "mxfp4_bank", "vector", "rope"], **detail) -> W:
        if name not in self.weights:
            self.weights[name] = WeightDecl(name, kind, len(self.weights), detail)
        return W(name)

    def task(self, op: Op, args: dict[str, Arg], *, reads: list[Tile], writes: list[Tile], stage: str,
             layer: int, cost: Cost, group: str | None = None) -> Task:
        if args.keys() != _ARG_SETS[op]:
            spec = OPS[op]
            unknown = set(args) - set(spec.args)
            if unknown:
                raise GraphError(f"{stage}: op {op.name} has no argument(s) {sorted(unknown)}")
            missing = set(spec.args) - set(args)
            raise GraphError(f"{stage}: op {op.name} missing argument(s) {sorted(missing)}")
        t = Task(len(self.tasks), op, args, tuple(reads), tuple(writes), stage, group or stage, layer, cost)
        self.tasks.append(t)
        return t

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tasks:
            counts[t.op.name] = counts.get(t.op.name, 0) + 1
        return counts
