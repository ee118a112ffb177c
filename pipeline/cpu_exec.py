"""The CPU executor: interprets a lowered `Program` on the CPU with torch.

It runs the same arrays the megakernel runs: per-worker queues in order, waits on
monotonic event counters (`counter[e] >= need[e] * step`, the previous step's count for
loop-carried waits), one signal per task per step. Which ready worker goes next is drawn
at random from a seeded generator, and workers drift across step boundaries, so a test
run explores the interleavings a GPU could produce; a state where no worker can move is
a deadlock and raises, naming each blocked task and the event it waits on.
"""

from __future__ import annotations

import random
from typing import Literal

import numpy as np
import torch

from .errors import GraphError, InputError
from .cpu_ops import IMPLS
from .cpu_ops.context import Ctx
from .graph.ops import OPS, STATE_POS, STATE_STEP, Op
from .kv_cache import KVCache
from .lower import Program
from .weight_table import weight_table
from .weights import Weights


class CpuExecutor:
    def __init__(self, program: Program, weights: Weights, cache: KVCache):
        if weights.cfg.name != program.model:
            raise GraphError(f"program was built for {program.model!r}, weights are {weights.cfg.name!r}")
        if cache.capacity != program.capacity:
            raise GraphError(f"program capacity {program.capacity} != KV cache capacity {cache.capacity}")
        self.p = program
        self.cfg = weights.cfg
        self.cache = cache
        self.ctx = Ctx(self.cfg, torch.zeros(program.arena_words, dtype=torch.float32),
                       weight_table(program.weights, weights), cache)
        self.counters = np.zeros(len(program.event_need), dtype=np.int64)
        self.steps_done = 0   # counters are never reset: steps keep counting across runs
        self.ops = [Op(int(o)) for o in program.desc["op"]]
        self.args = [dict(zip(OPS[op].args, row.tolist())) for op, row in zip(self.ops, program.desc["args"])]
        # (event, need per step, counts the previous step) per wait, unpacked once: reading
        # the structured descriptor array on every readiness check dominated the run time.
        d = program.desc
        self._waits = [[(int(d["wait_event"][t][i]), int(d["wait_need"][t][i]), bool(int(d["wait_prev"][t]) >> i & 1))
                        for i in range(int(d["n_wait"][t]))] for t in range(program.n_tasks)]
        self._signals = [[int(e) for e in d["signal"][t][:int(d["n_signal"][t])]] for t in range(program.n_tasks)]
        self._state = program.buffer("state").offset
        self._tokens = program.buffer("tokens").offset
        self._out = program.buffer("out_tokens")

    # ---------------------------------------------------------------- host side
    def _begin(self, tokens: list[int]) -> None:
        if len(tokens) != self.p.tokens:
            raise InputError(f"this program takes {self.p.tokens} token(s) per step, got {len(tokens)}")
        bad = [x for x in tokens if not 0 <= x < self.cfg.vocab_size]
        if bad:
            raise InputError(f"token ids {bad} outside [0, {self.cfg.vocab_size})")
        ints = self.ctx.arena_i
        ints[self._tokens:self._tokens + len(tokens)] = torch.tensor(tokens, dtype=torch.int32)
        ints[self._state + STATE_POS] = self.cache.length
        ints[self._state + STATE_STEP] = 0

    def decode(self, token: int, steps: int, *, seed: int = 0,
               order: Literal["random", "in_order"] = "random") -> list[int]:
        """Feed `token`, run `steps` greedy decode steps in one launch; return the new tokens."""
        if self.p.kind != "decode":
            raise GraphError("decode() needs a decode program")
        if not 1 <= steps <= self._out.rows:
            raise InputError(f"steps={steps} not in [1, {self._out.rows}] per launch")
        self.cache.check_room(steps)
        self._begin([token])
        self._run(steps, seed, order)
        self.cache.length += steps
        ints = self.ctx.arena_i
        return ints[self._out.offset:self._out.offset + steps].tolist()

    def verify(self, tokens: list[int], *, seed: int = 0,
               order: Literal["random", "in_order"] = "random") -> tuple[torch.Tensor, list[int]]:
        """Run one step over T tokens; return (logits [T, V], argmax per row). The cache
        keeps all T; the caller truncates what it rejects."""
        if self.p.kind != "verify":
            raise GraphError("verify() needs a verify program")
        self.cache.check_room(len(tokens))
        self._begin(list(tokens))
        self._run(1, seed, order)
        self.cache.length += len(tokens)
        lg = self.p.buffer("logits")
        logits = self.ctx.rows(lg.offset, lg.cols, lg.rows, lg.cols).clone()
        ints = self.ctx.arena_i
        return logits, ints[self._out.offset:self._out.offset + self.p.tokens].tolist()

    def logits(self) -> torch.Tensor:
        lg = self.p.buffer("logits")
        return self.ctx.rows(lg.offset, lg.cols, lg.rows, lg.cols).clone()

    # ----------------------------------------------------------- device side
    def _ready(self, task: int, step: int) -> tuple[bool, int]:
        for e, need, prev in self._waits[task]:
            if self.counters[e] < need * (step - 1 if prev else step):
                return False, e
        return True, -1

    def _run(self, steps: int, seed: int, order: str) -> None:
        rng = random.Random(seed)
        base = self.steps_done
        queues = [self.p.worker_tasks(w).tolist() for w in range(self.p.workers)]
        cursor = {w: 0 for w, q in enumerate(queues) if q}
        step = {w: base + 1 for w in cursor}
        while cursor:
            ready = [w for w in cursor if self._ready(queues[w][cursor[w]], step[w])[0]]
            if not ready:
                raise GraphError("deadlock: no worker can proceed; " + "; ".join(
                    f"worker {w} step {step[w] - base} at {self.p.describe(queues[w][cursor[w]])} waits on event "
                    f"{self._ready(queues[w][cursor[w]], step[w])[1]}" for w in list(cursor)[:4]))
            w = rng.choice(ready) if order == "random" else ready[0]
            task = queues[w][cursor[w]]
            IMPLS[self.ops[task]](self.ctx, self.args[task])
            for e in self._signals[task]:
                self.counters[e] += 1
            cursor[w] += 1
            if cursor[w] == len(queues[w]):
                cursor[w] = 0
                step[w] += 1
                if step[w] > base + steps:
                    del cursor[w]
        self.steps_done += steps
