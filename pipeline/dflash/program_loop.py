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

from typing import Iterable, Protocol

from ..errors import InputError
from ..kv_cache import KVCache


class DFlashExecutor(Protocol):
    cache: KVCache

    def dflash(self, anchor: int, steps: int, *, seed: int = 0, temperature: float = 0.0,
               sample_seed: int = 0) -> list[list[int]]: ...


def launch_steps(ex: DFlashExecutor, anchor: int, left: int, block_size: int, *, steps_per_launch: int = 16,
                 stop_tokens: Iterable[int] = (), seed: int = 0, temperature: float = 0.0,
                 sample_seed: int = 0) -> list[list[int]]:
    """One launch from `anchor`: the tokens each of its steps committed, cut where the
    request ends (`left` tokens still wanted, or a stop token, which is kept). Streaming
    callers call this launch by launch; `generate` loops it to the end of a request."""
    if left < 1 or steps_per_launch < 1:
        raise InputError(f"left={left} and steps_per_launch={steps_per_launch} must be >= 1")
    room = (ex.cache.capacity - ex.cache.length) // block_size
    if room < 1:
        raise InputError(f"context overflow: {ex.cache.length} cached tokens leave no room for a "
                         f"{block_size}-token DFlash step in capacity {ex.cache.capacity}")
    stops = frozenset(stop_tokens)
    steps = min(steps_per_launch, max(1, left // block_size), room)
    out: list[list[int]] = []
    for committed in ex.dflash(anchor, steps, seed=seed, temperature=temperature, sample_seed=sample_seed):
        cut = _cut(committed[:left], stops)
        out.append(cut)
        left -= len(cut)
        if left == 0 or cut[-1] in stops:
            break
    return out


def generate(ex: DFlashExecutor, first: int, max_tokens: int, block_size: int, *, steps_per_launch: int = 16,
             stop_tokens: Iterable[int] = (), seed: int = 0, temperature: float = 0.0,
             sample_seed: int = 0) -> list[list[int]]:
    """Tokens committed per step, starting with `[first]` (the prefill's token, which
    neither cache holds yet), until `max_tokens` tokens or a stop token. `temperature`,
    `sample_seed`: the programs' counter-based sampling (`counter_rng`); `seed` only
    picks the executor's worker interleavings (varied per launch)."""
    if max_tokens < 1 or steps_per_launch < 1:
        raise InputError(f"max_tokens={max_tokens} and steps_per_launch={steps_per_launch} must be >= 1")
    stops = frozenset(stop_tokens)
    out = [[first]]
    left = max_tokens - 1
    launch = 0
    while left > 0 and out[-1][-1] not in stops:
        rows = launch_steps(ex, out[-1][-1], left, block_size, steps_per_launch=steps_per_launch,
                            stop_tokens=stops, seed=seed + launch, temperature=temperature, sample_seed=sample_seed)
        out += rows
        left -= sum(len(r) for r in rows)
        launch += 1
    return out


def _cut(tokens: list[int], stops: frozenset[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in stops:
            return tokens[:i + 1]
    return tokens
