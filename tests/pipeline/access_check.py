"""Checking that every arena word an op touches is one its task declared: each task runs
twice, once on the real arena and once on a copy whose undeclared words are poisoned.
Words it changes must be declared writes, and the poisoned run must write the same bits
(so it read nothing undeclared); the KV caches (target and drafter) must end equal.
Shared by the executor tests of every program kind."""

from __future__ import annotations

import torch

from tilewarp.pipeline import cpu_exec, cpu_ops
from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.cpu_ops.context import Ctx
from tilewarp.pipeline.dflash.kv_cache import DraftKVCache
from tilewarp.pipeline.kv_cache import KVCache
from tilewarp.pipeline.lower import Program

POISON = 0x7FC0DEAD   # a NaN as fp32, a huge index as int32


def word_masks(p: Program) -> tuple[torch.Tensor, torch.Tensor]:
    """[tasks, arena words] bool: words each task declares (reads or writes), and writes."""
    touch = torch.zeros(p.n_tasks, p.arena_words, dtype=torch.bool)
    write = torch.zeros_like(touch)
    for a in p.access[p.access["space"] == 0]:
        rows = int(a["base"]) + torch.arange(int(a["r0"]), int(a["r1"]))[:, None] * int(a["ld"])
        words = (rows + torch.arange(int(a["c0"]), int(a["c1"]))[None, :]).flatten()
        touch[int(a["task"]), words] = True
        if a["mode"] == 1:
            write[int(a["task"]), words] = True
    return touch, write


def clone_cache(c: KVCache | DraftKVCache | None) -> KVCache | DraftKVCache | None:
    """A copy of a target or drafter cache with its own K/V tensors."""
    if c is None:
        return None
    d = type(c).__new__(type(c))
    d.__dict__.update(c.__dict__)
    d.k, d.v = [x.clone() for x in c.k], [x.clone() for x in c.v]
    return d


def same_cache(a: KVCache | DraftKVCache | None, b: KVCache | DraftKVCache | None) -> bool:
    if a is None:
        return b is None
    return all(torch.equal(x, y) for x, y in zip(a.k + a.v, b.k + b.v))


def check_accesses(monkeypatch, p: Program, ex: CpuExecutor) -> list[int]:
    """Wrap every op of `ex` for the check above; returns the list of tasks run so far."""
    touch, write = word_masks(p)
    task_of = {id(a): t for t, a in enumerate(ex.args)}
    seen: list[int] = []
    real = dict(cpu_ops.IMPLS)   # the ops themselves (cpu_exec.IMPLS may already be wrapped)

    def wrap(impl):
        def run(ctx: Ctx, a: dict) -> None:
            t = task_of[id(a)]
            before = ctx.arena.clone()
            poisoned = before.clone()
            poisoned.view(torch.int32)[~touch[t]] = POISON
            shadow = Ctx(ctx.cfg, poisoned, ctx.weights, clone_cache(ctx.cache), clone_cache(ctx.draft_cache))
            try:
                impl(shadow, a)
                shadow_error = None
            except Exception as e:   # an op that indexes with a poisoned int fails here
                shadow_error = e
            impl(ctx, a)
            assert shadow_error is None, f"{p.describe(t)} read undeclared words: {shadow_error!r}"
            after = ctx.arena.view(torch.int32)
            changed = before.view(torch.int32) != after
            stray = (changed & ~write[t]).nonzero().flatten()
            assert not len(stray), f"{p.describe(t)} wrote undeclared arena words {stray[:8].tolist()}"
            same = poisoned.view(torch.int32)[write[t]] == after[write[t]]
            assert bool(same.all()), f"{p.describe(t)} gives other results when undeclared words change"
            assert same_cache(shadow.cache, ctx.cache), p.describe(t)
            assert same_cache(shadow.draft_cache, ctx.draft_cache), p.describe(t)
            seen.append(t)
        return run

    monkeypatch.setattr(cpu_exec, "IMPLS", {op: wrap(f) for op, f in real.items()})
    return seen
