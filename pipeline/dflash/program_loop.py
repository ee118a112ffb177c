"""The host loop around a DFlash program that chains steps on the device.

Each launch runs several whole DFlash steps (draft, verify, acceptance) with no host in
between; the host only hands over the anchor, reads the committed tokens and decides
how many steps the next launch runs. Any executor with `dflash(anchor, steps)` and a
target `cache` works; the CPU executor and the megakernel runner share that method
(`ChainedDFlash`), and with it the host mirror of a copy-drafting program's token history
(`HistoryMirror`).

Steps per launch are capped so that a launch never commits more than B-1 tokens past
`max_tokens` (at most `left // B` steps, at least one), and by the room left in the KV
cache (a step writes B positions). What a launch commits past `max_tokens` or a stop
token is dropped from the output; the request ends there, so the caches need no rollback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Iterable, Literal, Protocol, Sequence

import torch

from ..errors import DeviceError, InputError
from ..graph.ops import STATE_POS
from ..kv_cache import KVCache

if TYPE_CHECKING:
    from ..lower import BufferInfo, Program
    from .kv_cache import DraftKVCache


def begin_dflash_launch(steps: int, max_steps: int, cache: KVCache, draft_cache, block_size: int) -> int:
    """Checks before a launch of `steps` chained DFlash steps (at most `max_steps`, the
    program's out rows): both caches at one position with room for every step's block.
    Returns that position. Shared by every executor of the dflash program."""
    if not 1 <= steps <= max_steps:
        raise InputError(f"steps={steps} not in [1, {max_steps}] per launch")
    pos = cache.length
    if draft_cache.length != pos:
        raise InputError(f"the drafter holds {draft_cache.length} context tokens but the target cache {pos}")
    cache.check_room(steps * block_size)   # a step writes B positions and may commit all of them
    return pos


def end_dflash_launch(rows, end: int, pos: int, cache: KVCache, draft_cache, block_size: int) -> list[list[int]]:
    """After a launch: the tokens each step committed, from the program's out rows
    (`[n, tokens..., padding]` per step) and its final position `end`; both caches move
    to `end` (the drafter's context K/V were written up to the last block's end)."""
    committed = [[int(t) for t in row[1:1 + int(row[0])]] for row in rows]
    if end != pos + sum(map(len, committed)):
        raise DeviceError(f"ACCEPT's position {end} and its out rows ({sum(map(len, committed))} tokens from "
                          f"{pos}) disagree")
    draft_cache.mark_written(pos, end - len(committed[-1]) + block_size)
    cache.length = draft_cache.length = end
    return committed


class HistoryMirror:
    """The token history a copy-drafting program's carried buffer holds (COPY_DRAFT reads the
    committed tokens 0..pos-1 there), mirrored on the host, so that a launch writes only what
    the buffer lacks: the prompt at a request's first launch, then nothing, since ACCEPT
    extends the buffer step by step. Rewriting all of it at every launch (a list to a tensor,
    an id check, a pageable copy: ~80 us of host time) cost ~10 us per DFlash step on the
    H200."""

    def __init__(self, p: "Program", vocab: int):
        self.offset = p.buffer("history").offset if "copy_draft" in p.meta else None
        self.vocab = vocab
        self.held: list[int] = []

    def upload(self, history: Sequence[int] | None, pos: int) -> tuple[int, torch.Tensor] | None:
        """Before a launch at `pos`: the arena offset and int32 words to write (possibly
        none), or None for a program without copy drafting. `history` must be the `pos`
        committed tokens both caches hold."""
        if self.offset is None:
            return None
        if history is None or len(history) != pos:
            raise InputError(f"this DFlash program copies from the context: pass history= the {pos} committed "
                             f"tokens both caches hold, got {'none' if history is None else len(history)}")
        history = list(history)
        n = len(self.held)
        start = n if n <= pos and history[:n] == self.held else 0
        words = torch.tensor(history[start:], dtype=torch.int32)
        bad = words[(words < 0) | (words >= self.vocab)]
        if bad.numel():
            self.held = []
            raise InputError(f"history: token ids {bad[:4].tolist()} outside [0, {self.vocab})")
        self.held = history
        return self.offset + start, words

    def launched(self, anchor: int, committed: list[list[int]]) -> None:
        """After a launch: ACCEPT wrote each step's anchor and accepted tokens after the history."""
        if self.offset is not None:
            self.held += [anchor] + [t for row in committed for t in row][:-1]

    def forget(self) -> None:
        """The buffer may no longer hold the mirror (a failed launch): rewrite it next time."""
        self.held = []


class ChainedDFlash(ABC):
    """`dflash`, one launch of chained DFlash steps, for every executor of the dflash program
    (the CPU executor and the megakernel runner): the checks, the history upload, the launch
    and the committed rows are one code. An executor supplies the three hooks below (how it
    writes its arena, runs a launch, reads a word back), the members declared here, and
    `_check_kind`, `_begin` and `ints`, which both executors have for every program kind.
    List it after the executor's own base, so that those come first."""

    p: "Program"
    cache: KVCache
    draft_cache: "DraftKVCache"
    _out: "BufferInfo"
    _state: int
    _history: HistoryMirror

    @abstractmethod
    def _write_ints(self, offset: int, words: torch.Tensor) -> None:
        """Write int32 `words` into the arena at word `offset`."""

    @abstractmethod
    def _launch_steps(self, steps: int, seed: int, order: str) -> None:
        """Run one launch of `steps` chained steps of the program."""

    @abstractmethod
    def _read_int(self, offset: int) -> int:
        """The int32 arena word at `offset`."""

    def dflash(self, anchor: int, steps: int, *, seed: int = 0, order: Literal["random", "in_order"] = "random",
               temperature: float = 0.0, sample_seed: int = 0, history: Sequence[int] | None = None
               ) -> list[list[int]]:
        """Run `steps` DFlash steps in one launch from `anchor` (the last emitted token, in
        neither cache); returns the tokens each step committed (1..B each; the last one is
        the next anchor). Both caches end at the new position. At `temperature` > 0 the
        target's choices are samples (`counter_rng`) and acceptance is lossless for the
        argmax drafter: the tokens are those sampled plain decoding would emit. `seed` and
        `order` pick the CPU executor's worker interleavings (the GPU has its own).
        `history`: the committed tokens both caches hold, for a program with copy drafting."""
        self._check_kind("dflash", "dflash")
        b = self.p.tokens
        pos = begin_dflash_launch(steps, self._out.rows, self.cache, self.draft_cache, b)
        hist = self._history.upload(history, pos)
        self._begin([anchor], pos, temperature, sample_seed)
        if hist is not None and len(hist[1]):
            self._write_ints(*hist)
        try:
            self._launch_steps(steps, seed, order)
        except BaseException:
            self._history.forget()
            raise
        end = self._read_int(self._state + STATE_POS)
        rows = end_dflash_launch(self.ints("out_tokens")[:steps], end, pos, self.cache, self.draft_cache, b)
        self._history.launched(anchor, rows)
        return rows


class DFlashExecutor(Protocol):
    cache: KVCache

    def dflash(self, anchor: int, steps: int, *, seed: int = 0, temperature: float = 0.0,
               sample_seed: int = 0, history: Sequence[int] | None = None) -> list[list[int]]: ...


def launch_steps(ex: DFlashExecutor, anchor: int, left: int, block_size: int, *, steps_per_launch: int = 16,
                 stop_tokens: Iterable[int] = (), seed: int = 0, temperature: float = 0.0,
                 sample_seed: int = 0, history: Sequence[int] | None = None) -> list[list[int]]:
    """One launch from `anchor`: the tokens each of its steps committed, cut where the
    request ends (`left` tokens still wanted, or a stop token, which is kept). Streaming
    callers call this launch by launch; `generate` loops it to the end of a request.
    `history`: the committed tokens before the anchor (programs with copy drafting)."""
    if left < 1 or steps_per_launch < 1:
        raise InputError(f"left={left} and steps_per_launch={steps_per_launch} must be >= 1")
    room = (ex.cache.capacity - ex.cache.length) // block_size
    if room < 1:
        raise InputError(f"context overflow: {ex.cache.length} cached tokens leave no room for a "
                         f"{block_size}-token DFlash step in capacity {ex.cache.capacity}")
    stops = frozenset(stop_tokens)
    steps = min(steps_per_launch, max(1, left // block_size), room)
    out: list[list[int]] = []
    for committed in ex.dflash(anchor, steps, seed=seed, temperature=temperature, sample_seed=sample_seed,
                               history=history):
        cut = _cut(committed[:left], stops)
        out.append(cut)
        left -= len(cut)
        if left == 0 or cut[-1] in stops:
            break
    return out


def generate(ex: DFlashExecutor, first: int, max_tokens: int, block_size: int, *, steps_per_launch: int = 16,
             stop_tokens: Iterable[int] = (), seed: int = 0, temperature: float = 0.0,
             sample_seed: int = 0, prompt: Sequence[int] | None = None) -> list[list[int]]:
    """Tokens committed per step, starting with `[first]` (the prefill's token, which
    neither cache holds yet), until `max_tokens` tokens or a stop token. `temperature`,
    `sample_seed`: the programs' counter-based sampling (`counter_rng`); `seed` only
    picks the executor's worker interleavings (varied per launch). `prompt`: the prefilled
    tokens, which a program with copy drafting needs (its history)."""
    if max_tokens < 1 or steps_per_launch < 1:
        raise InputError(f"max_tokens={max_tokens} and steps_per_launch={steps_per_launch} must be >= 1")
    stops = frozenset(stop_tokens)
    out = [[first]]
    left = max_tokens - 1
    launch = 0
    while left > 0 and out[-1][-1] not in stops:
        history = None if prompt is None else list(prompt) + [t for r in out for t in r][:-1]
        rows = launch_steps(ex, out[-1][-1], left, block_size, steps_per_launch=steps_per_launch,
                            stop_tokens=stops, seed=seed + launch, temperature=temperature, sample_seed=sample_seed,
                            history=history)
        out += rows
        left -= sum(len(r) for r in rows)
        launch += 1
    return out


def _cut(tokens: list[int], stops: frozenset[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in stops:
            return tokens[:i + 1]
    return tokens
