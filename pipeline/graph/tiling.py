"""The cost model that sizes tiles: enough tasks per stage to spread its bytes over the
workers, few enough that each task's fixed cost (fetch, waits, signal) stays small."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ceil_div


@dataclass(frozen=True)
class TilePolicy:
    workers: int = 132
    min_task_bytes: int = 24 << 10   # below this a task is mostly overhead
    row_align: int = 8               # output rows per tile are a multiple of this
    max_tiles: int = 4096
    swa_min_chunk: int = 32          # fewest keys per sliding-window attention chunk

    def tiles_for(self, total_bytes: float, rows: int) -> int:
        """How many tiles to cut `rows` into: one per worker, none below `min_task_bytes`.
        (Expert slots, several row ranges of one stage, are cut by `tiles_per_group`.)"""
        # The per-worker share rounds up: rounded down, it cut one tile too many whenever
        # the bytes do not divide by the workers (the T = 1 LM head had 133 tiles on 132
        # workers, and one worker ran a second, 70 us task: perf-notes v11).
        per_worker = math.ceil(total_bytes / self.workers)
        n = ceil_div(int(total_bytes), max(per_worker, self.min_task_bytes))
        n = max(1, min(n, self.max_tiles, ceil_div(rows, self.row_align)))
        return n

    def tiles_per_group(self, rows: int, groups: int, align: int, row_bytes: float) -> int:
        """Tiles to cut each of `groups` equal row ranges into (a MoE layer's expert slots):
        the count that gives the busiest worker the least work, a task's work being its
        bytes plus `min_task_bytes` of fixed cost, and no task below `min_task_bytes`.
        Why whole waves: the tasks of a stage past the first `workers` wait for a second
        round, so 192 tasks on 132 workers cost two task times where 128 larger ones cost
        one (the T = 8 expert stages, docs/perf-notes.md v10)."""
        units = ceil_div(rows, align)
        best_load, best_n = None, 1
        for n in range(1, units + 1):
            task_bytes = ceil_div(units, n) * align * row_bytes
            if n > 1 and task_bytes < self.min_task_bytes:
                break
            load = ceil_div(groups * n, self.workers) * (self.min_task_bytes + task_bytes)
            if best_load is None or load < best_load:
                best_load, best_n = load, n
        return best_n

    def split(self, rows: int, tiles: int, align: int | None = None) -> list[tuple[int, int]]:
        """`rows` cut into at most `tiles` ranges, each a multiple of `align` (but the last)."""
        align = align or self.row_align
        step = ceil_div(ceil_div(rows, tiles), align) * align
        return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def default_policy(tokens: int) -> TilePolicy:
    """The policy a step of `tokens` tokens is built with: at T > 1 the megakernel runs bf16
    GEMVs on tensor cores, in whole 16-row tiles (csrc/core/gemv_task.cuh), so output rows
    are cut in multiples of 16; at T = 1 the CUDA-core walk takes any multiple of 8."""
    return TilePolicy(row_align=16 if tokens > 1 else 8)


#: Most keys one attention task stages in shared memory (K + V bf16 for qk 192 / v 128
#: heads fill ~82 KB at 128; the megakernel refuses a chunk that does not fit).
MAX_ATTENTION_CHUNK = 128


def attention_chunk(capacity: int, kv_heads: int, workers: int) -> int:
    """Keys per attention chunk for a global layer: about one chunk per worker at full
    context, at least 64 keys so a chunk is worth a task, at most MAX_ATTENTION_CHUNK."""
    want = ceil_div(capacity * kv_heads, workers)
    chunk = 64
    while chunk < min(want, MAX_ATTENTION_CHUNK):
        chunk *= 2
    return chunk


def swa_chunks(keys: int, kv_heads: int, pol: TilePolicy) -> int:
    """Chunks per kv head for a sliding-window layer's `keys` (window + step slack): a
    layer has only a few kv heads, so one chunk each would leave most SMs idle; as many
    as keep each chunk at least `pol.swa_min_chunk` keys (below that a task is mostly its
    fixed cost), within the workers."""
    return max(1, min(keys // pol.swa_min_chunk, pol.workers // max(1, kv_heads)))
