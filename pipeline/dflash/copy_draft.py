"""Copy drafting: where the context already holds what comes next, propose it.

A small target's greedy text loops (a third of the held-out steps of the stdlib pair repeat
a block seen within 32 tokens: `examples/train/README.md`), and a drafter copies such a
stretch only as well as it has learned to. Prompt lookup fixes that at no model cost: find
the latest earlier occurrence of the longest suffix of ``context + [anchor]`` (at least
`min_match`, at most `max_match` tokens); the tokens that followed it are the copy. Where
they run into the anchor the text is a loop of period ``d`` (the distance back), and the
copy goes on around it: token i of the copy is the one ``d`` before token i + d.

How much of the copy to use is a bet on expected accepted length. With ``q_i`` the
drafter's probability of its own best token at slot i and ``c_i`` its probability of the
copy's token there, a block that copies the first k slots and keeps the drafter's argmax
after them accepts, if slots were independent, ``sum_j prod_{i<=j} f_i`` tokens, with
``f_i = trust + (1 - trust) c_i`` for a copied slot and ``f_i = q_i`` for a kept one. The
`trust` term is the evidence the drafter cannot see: a copied stretch is right far more
often than the drafter's marginal says. The k with the largest sum wins (the longest among
equals), 0 .. the copy's length.

Lossless either way: the target verifies whatever the block holds, k depends on the draft
logits and the context only (no sample), and a copied token is a deterministic proposal
(its q is one-hot), which the rejection rule treats exactly like the argmax drafter's. One
rule, three homes: this module (the reference decoder and the CPU op),
`csrc/ops/copy_draft.cuh` (the GPU), tied by `tests/pipeline/test_copy_draft.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import InputError

#: Longest suffix the device op compares (csrc/ops/copy_draft.cuh mirrors it).
MAX_MATCH_LIMIT = 64
#: How far back a source is looked for: the last SEARCH_WINDOW tokens of ``context +
#: [anchor]``. The device op stages them in shared memory (matching from L2, one load after
#: another along a long match, cost ~50 us a step), and the bound keeps its cost flat at long
#: contexts; csrc/ops/copy_draft.cuh mirrors it.
SEARCH_WINDOW = 32768


@dataclass(frozen=True)
class CopyDraft:
    """When copying overrides the drafter. The defaults were the best of sweeps
    (`examples/train/copy_sweep.py`) on the stdlib pair's held-out prompts: with the
    session 11 drafter, 4.408 -> 4.486 per step on the first 32, 4.296 -> 4.376 on all
    73 (`examples/train/README.md`, session 11)."""

    min_match: int = 2
    max_match: int = 16
    trust_permille: int = 300

    def __post_init__(self) -> None:
        if not 1 <= self.min_match <= self.max_match <= MAX_MATCH_LIMIT:
            raise InputError(f"copy drafting: need 1 <= min_match ({self.min_match}) <= max_match "
                             f"({self.max_match}) <= {MAX_MATCH_LIMIT}")
        if not 0 <= self.trust_permille <= 1000:
            raise InputError(f"copy drafting: trust_permille={self.trust_permille} not in [0, 1000]")


def copy_source(seq: Sequence[int], min_match: int, max_match: int) -> int | None:
    """Where the copy starts: the end ``e`` (``e < len(seq)``) of the earlier occurrence of
    the longest suffix of ``seq`` (capped at ``max_match``; the latest one among equals)
    within the last `SEARCH_WINDOW` tokens, or None when no suffix of at least
    ``min_match`` tokens occurred there before."""
    base = max(0, len(seq) - SEARCH_WINDOW)
    n = len(seq) - base
    if n < 2:
        return None
    s = torch.as_tensor(list(seq[base:]), dtype=torch.int64)
    ends = torch.arange(1, n)                         # e: an occurrence ends right before seq[e]
    run = torch.ones(n - 1, dtype=torch.bool)
    length = torch.zeros(n - 1, dtype=torch.int64)
    for m in range(min(max_match, n - 1)):
        ok = ends > m                                 # the occurrence stays inside seq
        same = torch.zeros_like(run)
        same[ok] = s[ends[ok] - 1 - m] == s[n - 1 - m]
        run &= same
        length += run
    best = int(length.max())
    if best < min_match:
        return None
    return base + int(ends[length == best].max())


def slot_probabilities(logits: torch.Tensor, copy: Sequence[int]) -> tuple[list[float], list[float]]:
    """Per draft row ``[R, V]`` (R >= len(copy)): the softmax maximum, and the probability of
    the copy's token for the rows the copy covers; fp32, as ``1 / s`` and ``exp(l_c - max) * (1 / s)``
    with ``s = sum(exp(l - max))``, the form the device computes."""
    x = logits.float()
    mx = x.max(dim=-1, keepdim=True).values
    sums = torch.exp(x - mx).sum(dim=-1)
    inv = 1.0 / sums
    rows = torch.arange(len(copy))
    chosen = torch.exp(x[rows, torch.tensor(list(copy), dtype=torch.int64)] - mx[rows, 0]) * inv[rows]
    return inv.tolist(), chosen.tolist()


def copy_length(best: Sequence[float], chosen: Sequence[float], trust_permille: int) -> int:
    """How many of the copy's tokens to use: the k in 0..len(chosen) with the largest expected
    accepted length (module docstring), the largest k among equals. fp32 throughout, in the
    device's order (`csrc/ops/copy_draft.cuh`)."""
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)   # noqa: E731
    trust = f32(trust_permille) / f32(1000.0)
    copied = [trust + (f32(1.0) - trust) * f32(c) for c in chosen]
    kept = [f32(q) for q in best]
    top, pick = f32(-1.0), 0
    for k in range(len(chosen) + 1):
        score, run = f32(0.0), f32(1.0)
        for i in range(len(best)):
            run = run * (copied[i] if i < k else kept[i])
            score = score + run
        if score >= top:
            top, pick = score, k
    return pick


def copied_prefix(seq: Sequence[int], logits: torch.Tensor, policy: CopyDraft) -> list[int]:
    """The tokens that replace the block's first proposals (possibly none): ``seq`` is the
    committed context plus the anchor, ``logits`` the draft rows ``[R, V]`` of the block's R
    proposals. Which slots are copied depends on no sample, so a copied proposal is
    deterministic."""
    start = copy_source(seq, policy.min_match, policy.max_match)
    if start is None:
        return []
    period = len(seq) - start                       # a copy that reaches the anchor repeats
    copy = [int(seq[start + i % period]) for i in range(logits.shape[0])]
    best, chosen = slot_probabilities(logits, copy)
    return copy[:copy_length(best, chosen, policy.trust_permille)]
