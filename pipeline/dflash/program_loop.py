"""The host loop around a DFlash program that chains steps on the device.

Each launch runs several whole DFlash steps (draft, verify, acceptance) with no host in
between; the host only hands over the anchor, reads the committed tokens and decides
how many steps the next launch runs. Any executor with `dflash(anchor, steps)` and a
target `cache` works (the CPU executor here; the megakernel runner once it has the ops).

Steps per launch are capped so that a launch never commits more than B-1 tokens past
`max_tokens` (at most `left // B` steps, at least one), and by the room left in the KV
cache (a step writes B positions). What a launch commits past `max_tokens` or a stop
token is dropped from the output; the request ends there, so the caches need no rollback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

import torch

from ..errors import DeviceError, InputError
from ..kv_cache import KVCache

if TYPE_CHECKING:
    from ..lower import Program


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


def history_words(p: "Program", history: Sequence[int] | None, pos: int, vocab: int) -> tuple[int, torch.Tensor] | None:
    """What to write before a launch of a program with copy drafting (COPY_DRAFT reads the
    committed tokens 0..pos-1 from its carried `history`, which ACCEPT only extends): the
    buffer's arena offset and the tokens as int32; None for a program without copy drafting."""
    if "copy_draft" not in p.meta:
        return None
    if history is None or len(history) != pos:
        raise InputError(f"this DFlash program copies from the context: pass history= the {pos} committed tokens "
                         f"both caches hold, got {'none' if history is None else len(history)}")
    words = torch.tensor(list(history), dtype=torch.int32)
    bad = words[(words < 0) | (words >= vocab)]
    if bad.numel():
        raise InputError(f"history: token ids {bad[:4].tolist()} outside [0, {vocab})")
    return p.buffer("history").offset, words


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
