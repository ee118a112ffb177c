"""The CPU executor: interprets a lowered `Program` on the CPU with torch.

It runs the same arrays the megakernel runs: per-worker queues in order, waits on
monotonic event counters (`counter[e] >= need[e] * step`, the previous step's count for
loop-carried waits), one signal per task per step. Which ready worker goes next is drawn
at random from a seeded generator, and workers drift across step boundaries, so a test
run explores the interleavings a GPU could produce; a state where no worker can move is
a deadlock and raises, naming each blocked task and the event it waits on.
"""

from __future__ import annotations

import math
import random
from typing import Literal

import numpy as np
import torch

from .cpu_ops import IMPLS
from .cpu_ops.context import Ctx
from .dflash.kv_cache import DraftKVCache
from .dflash.program_loop import ChainedDFlash, HistoryMirror
from .dflash.weights import DraftWeights
from .errors import DeviceError, GraphError, InputError
from .graph.ops import OPS, STATE_INV_TEMP, STATE_POS, STATE_SEED, STATE_STEP, Op
from .kv_cache import KVCache
from .lower import Program
from .weight_table import weight_table
from .weights import Weights


class CpuExecutor(ChainedDFlash):
    """Runs one program; DFlash programs (meta "drafter") also take the drafter's weights
    and its context cache, which the draft ops read and write like the target's cache."""

    def __init__(self, program: Program, weights: Weights, cache: KVCache, *,
                 draft_weights: DraftWeights | None = None, draft_cache: DraftKVCache | None = None):
        if weights.cfg.name != program.model:
            raise GraphError(f"program was built for {program.model!r}, weights are {weights.cfg.name!r}")
        if cache.capacity != program.capacity:
            raise GraphError(f"program capacity {program.capacity} != KV cache capacity {cache.capacity}")
        check_drafter(program, draft_weights, draft_cache)
        self.p = program
        self.cfg = weights.cfg
        self.cache = cache
        self.draft_cache = draft_cache
        self._history = HistoryMirror(program, self.cfg.vocab_size)
        self.ctx = Ctx(self.cfg, torch.zeros(program.arena_words, dtype=torch.float32),
                       weight_table(program.weights, weights, draft_weights), cache, draft_cache)
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
        bufs = {b.name: b for b in program.buffers}
        self._state = bufs["state"].offset
        self._tokens = bufs["tokens"].offset
        self._out = bufs.get("out_tokens")   # draft programs have none

    # ---------------------------------------------------------------- host side
    def _begin(self, tokens: list[int], position: int | None = None, temperature: float = 0.0,
               sample_seed: int = 0) -> None:
        """Tokens into the head of the token buffer; the position (default: the cache's
        length), a zero step count and the sampling parameters into the state block."""
        bad = [x for x in tokens if not 0 <= x < self.cfg.vocab_size]
        if bad:
            raise InputError(f"token ids {bad} outside [0, {self.cfg.vocab_size})")
        if not (math.isfinite(temperature) and temperature >= 0):
            raise InputError(f"temperature={temperature!r} is invalid: allowed a finite number >= 0 (0 = greedy)")
        ints = self.ctx.arena_i
        ints[self._tokens:self._tokens + len(tokens)] = torch.tensor(tokens, dtype=torch.int32)
        ints[self._state + STATE_POS] = self.cache.length if position is None else position
        ints[self._state + STATE_STEP] = 0
        ints[self._state + STATE_SEED] = (sample_seed & 0xFFFFFFFF) - ((sample_seed & 0x80000000) << 1)
        self.ctx.arena[self._state + STATE_INV_TEMP] = 1.0 / temperature if temperature else 0.0

    def _check_kind(self, kind: str, method: str) -> None:
        if self.p.kind != kind:
            raise GraphError(f"{method}() needs a {kind} program, this one is {self.p.kind!r}")

    def _check_tokens(self, tokens: list[int]) -> None:
        if len(tokens) != self.p.tokens:
            raise InputError(f"this program takes {self.p.tokens} token(s) per step, got {len(tokens)}")

    def ints(self, name: str) -> torch.Tensor:
        """A copy of an int32 buffer of the program (e.g. `tokens`, `out_tokens`), [rows, cols]."""
        b = self.p.buffer(name)
        return self.ctx.arena_i[b.offset:b.offset + b.rows * b.cols].view(b.rows, b.cols).clone()

    def floats(self, name: str) -> torch.Tensor:
        """A copy of an fp32 buffer of the program (e.g. `logits`, `hidden_out`), [rows, cols]."""
        b = self.p.buffer(name)
        return self.ctx.rows(b.offset, b.cols, b.rows, b.cols).clone()

    def decode(self, token: int, steps: int, *, seed: int = 0, order: Literal["random", "in_order"] = "random",
               temperature: float = 0.0, sample_seed: int = 0) -> list[int]:
        """Feed `token`, run `steps` decode steps in one launch; return the new tokens.
        Greedy, or sampled at `temperature` with the counter-based noise of `sample_seed`
        (`counter_rng`). `seed` only picks the worker interleaving."""
        self._check_kind("decode", "decode")
        if not 1 <= steps <= self._out.rows:
            raise InputError(f"steps={steps} not in [1, {self._out.rows}] per launch")
        self.cache.check_room(steps)
        self._begin([token], None, temperature, sample_seed)
        self._run(steps, seed, order)
        self.cache.length += steps
        ints = self.ctx.arena_i
        return ints[self._out.offset:self._out.offset + steps].tolist()

    def verify(self, tokens: list[int], *, seed: int = 0, order: Literal["random", "in_order"] = "random",
               temperature: float = 0.0, sample_seed: int = 0) -> tuple[torch.Tensor, list[int]]:
        """Run one step over T tokens; return (logits [T, V], the token each row chooses:
        argmax, or the sample at `temperature`). The cache keeps all T; the caller
        truncates what it rejects."""
        self._check_kind("verify", "verify")
        self._check_tokens(list(tokens))
        self.cache.check_room(len(tokens))
        self._begin(list(tokens), None, temperature, sample_seed)
        self._run(1, seed, order)
        self.cache.length += len(tokens)
        lg = self.p.buffer("logits")
        logits = self.ctx.rows(lg.offset, lg.cols, lg.rows, lg.cols).clone()
        ints = self.ctx.arena_i
        return logits, ints[self._out.offset:self._out.offset + self.p.tokens].tolist()

    def draft(self, anchor: int, *, seed: int = 0,
              order: Literal["random", "in_order"] = "random") -> tuple[torch.Tensor, list[int]]:
        """One draft pass anchored at the drafter's context length; returns (proposal
        logits [B-1, V], proposals d_1..d_{B-1}). The context length does not move."""
        self._check_kind("draft", "draft")
        dc = self.draft_cache
        pos = dc.length
        dc.check_room(self.p.tokens)
        self._begin([anchor], pos)
        self._run(1, seed, order)
        dc.mark_written(pos, pos + self.p.tokens)   # the block's K/V went to positions pos..
        return self.floats("draft_logits"), self.ints("tokens")[0, 1:].tolist()

    # ----------------------------------------------------------- ChainedDFlash hooks
    def _write_ints(self, offset: int, words: torch.Tensor) -> None:
        self.ctx.arena_i[offset:offset + len(words)] = words

    def _launch_steps(self, steps: int, seed: int, order: str) -> None:
        self._run(steps, seed, order)

    def _read_int(self, offset: int) -> int:
        return int(self.ctx.arena_i[offset])

    def logits(self) -> torch.Tensor:
        return self.floats("logits")

    def hidden(self) -> dict[int, torch.Tensor]:
        """The last verify step's exported hidden states: target layer -> [T, hidden]."""
        return self.p.exported_hidden(self.floats)

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
            try:
                IMPLS[self.ops[task]](self.ctx, self.args[task])
            except DeviceError as e:   # name the task, as the megakernel's error record does
                raise DeviceError(f"cpu executor at {self.p.describe(task)}: {e}") from e
            for e in self._signals[task]:
                self.counters[e] += 1
            cursor[w] += 1
            if cursor[w] == len(queues[w]):
                cursor[w] = 0
                step[w] += 1
                if step[w] > base + steps:
                    del cursor[w]
        self.steps_done += steps


def check_drafter(p: Program, weights: DraftWeights | None, cache: DraftKVCache | None) -> None:
    """A DFlash program needs the drafter it was built for, and a context cache of the
    program's capacity; other programs take neither."""
    name = p.meta.get("drafter")
    if name is None:
        if weights is not None or cache is not None:
            raise GraphError(f"a {p.kind} program uses no drafter, but one was given")
        return
    if weights is None or cache is None:
        raise GraphError(f"this {p.kind} program runs drafter {name!r}: pass draft_weights and draft_cache")
    if weights.cfg.name != name or cache.cfg != weights.cfg:
        raise GraphError(f"program was built for drafter {name!r}; weights are {weights.cfg.name!r}, the context "
                         f"cache is for {cache.cfg.name!r}")
    if cache.capacity != p.capacity:
        raise GraphError(f"program capacity {p.capacity} != drafter context capacity {cache.capacity}")
