"""Copy drafting: where the context already holds what comes next, propose it.

A small target's greedy text loops (a third of the held-out steps of the stdlib pair repeat
a block seen within 32 tokens: `examples/train/README.md`), and a drafter copies such a
stretch only as well as it has learned to. Prompt lookup fixes that at no model cost: find
the latest earlier occurrence of the longest suffix of ``context + [anchor]`` (at least
`min_match`, at most `max_match` tokens) and take the tokens that followed it as the
block's proposals, slot by slot, until the drafter is *confident* of a different token
there (its softmax maximum at least `confident_permille` / 1000); from that slot on the
drafter's own proposals stay.

Lossless either way: the target verifies whatever the block holds, and a copied token is a
deterministic proposal (its q is one-hot), which the rejection rule treats exactly like
the argmax drafter's. One rule, three homes: this module (the reference decoder and the CPU
op), `csrc/ops/copy_draft.cuh` (the GPU), tied by `tests/pipeline/test_copy_draft.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import InputError

#: Longest suffix the device op compares (csrc/ops/copy_draft.cuh mirrors it).
MAX_MATCH_LIMIT = 64


@dataclass(frozen=True)
class CopyDraft:
    """When copying overrides the drafter. The defaults were the best of a sweep on the stdlib
    pair's 32 held-out prompts: 4.134 -> 4.29 per step with the 5-layer drafter, 4.185 ->
    4.291 with the 6-layer one, 4.310 -> 4.314 with the soft-label one, which copies well by
    itself (`examples/train/README.md`, session 10); hence off by default in the Engine."""

    min_match: int = 3
    max_match: int = 16
    confident_permille: int = 800

    def __post_init__(self) -> None:
        if not 1 <= self.min_match <= self.max_match <= MAX_MATCH_LIMIT:
            raise InputError(f"copy drafting: need 1 <= min_match ({self.min_match}) <= max_match "
                             f"({self.max_match}) <= {MAX_MATCH_LIMIT}")
        if not 0 <= self.confident_permille <= 1000:
            raise InputError(f"copy drafting: confident_permille={self.confident_permille} not in [0, 1000]")


def copy_source(seq: Sequence[int], min_match: int, max_match: int) -> int | None:
    """Where the copy starts: the end ``e`` (``e < len(seq)``) of the earlier occurrence of
    the longest suffix of ``seq`` (capped at ``max_match``; the latest one among equals),
    or None when no suffix of at least ``min_match`` tokens occurred before."""
    n = len(seq)
    if n < 2:
        return None
    s = torch.as_tensor(list(seq), dtype=torch.int64)
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
    return int(ends[length == best].max())


def confident_rows(logits: torch.Tensor, permille: int) -> list[bool]:
    """Per row of draft logits ``[R, V]``: is the softmax maximum >= permille / 1000? As
    ``permille * sum(exp(l - max)) <= 1000`` in fp32, the form the device computes."""
    x = logits.float()
    sums = torch.exp(x - x.max(dim=-1, keepdim=True).values).sum(dim=-1)
    return (sums * float(permille) <= 1000.0).tolist()


def copied_prefix(seq: Sequence[int], argmax: Sequence[int], confident: Sequence[bool], policy: CopyDraft) -> list[int]:
    """The tokens that replace the block's first proposals (possibly none): ``seq`` is the
    committed context plus the anchor; ``argmax`` / ``confident`` the drafter's argmax and
    confidence per slot. Copies slot by slot until the drafter is confident of another token.
    Which slots are copied depends on no sample, so a copied slot's proposal is deterministic."""
    start = copy_source(seq, policy.min_match, policy.max_match)
    if start is None:
        return []
    out: list[int] = []
    for i in range(min(len(argmax), len(seq) - start)):
        c = int(seq[start + i])
        if confident[i] and int(argmax[i]) != c:
            break
        out.append(c)
    return out
