"""DFlash decoding: one draft pass proposes B-1 tokens, one target pass verifies B.

The invariant between steps: the target's KV cache and the drafter's context hold the
same committed tokens (prompt, then every anchor and accepted proposal), and ``anchor``
is the last emitted token, which neither cache holds yet. One step at position a::

    draft.propose(anchor, a)                  -> proposals d_1..d_g, q_1..q_g
    target.verify([anchor, d_1..d_g])         -> p_1..p_{g+1}, hidden states of the g+1 tokens
    verify_block                              -> commits d_1..d_n and one correction/bonus c
    draft.append_context(hidden of all g+1)   # the verify step's output, before acceptance is known
    target.truncate(a+1+n); draft.truncate(a+1+n)   # roll both back to the committed tokens
    anchor = c

Appending the context of all verified tokens and then truncating both caches (rather than
appending only the accepted ones) is what a static device program does: the verify step
produces the context for all B tokens and acceptance only moves the lengths back. A
token's context K/V depends on that token alone, so the result is the same either way.

The block shrinks at the end of a request (g+1 = tokens still allowed), so no token past
``max_tokens`` is ever computed or emitted; a stop token ends the request right after it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

import torch

from ..errors import InputError
from ..reference import ReferenceModel, StepOutput, TokenIds
from ..sampling import SamplingParams, probabilities
from .copy_draft import CopyDraft, copied_prefix
from .draft_model import DraftOutput
from .verify import categorical, sample_proposals, verify_block


class Target(Protocol):
    """What the decoder needs of the target (``ReferenceModel`` has it)."""

    cfg: object

    @property
    def position(self) -> int: ...
    def prefill(self, ids: TokenIds, *, return_hidden: Sequence[int] = ()) -> StepOutput: ...
    def verify(self, tokens: TokenIds, *, return_hidden: Sequence[int] = ()) -> StepOutput: ...
    def truncate(self, length: int) -> None: ...
    def reset(self) -> None: ...


class Drafter(Protocol):
    """What the decoder needs of the drafter (``DraftModel`` has it)."""

    cfg: object

    @property
    def context_length(self) -> int: ...
    def append_context(self, hidden: dict[int, torch.Tensor], positions: Sequence[int]) -> None: ...
    def propose(self, anchor: int, position: int) -> DraftOutput: ...
    def truncate(self, length: int) -> None: ...
    def reset(self) -> None: ...


@dataclass
class AcceptanceStats:
    """Tokens committed per verify step (accepted proposals + the correction/bonus token)."""

    block_size: int
    histogram: list[int] = field(default_factory=list)    # histogram[n - 1]: steps that committed n tokens

    def __post_init__(self) -> None:
        if not self.histogram:
            self.histogram = [0] * self.block_size

    def record(self, committed: int) -> None:
        if not 1 <= committed <= self.block_size:
            raise InputError(f"committed: a step commits 1..{self.block_size} tokens, got {committed}")
        self.histogram[committed - 1] += 1

    @property
    def steps(self) -> int:
        return sum(self.histogram)

    @property
    def tokens(self) -> int:
        return sum(n * c for n, c in enumerate(self.histogram, start=1))

    @property
    def mean(self) -> float:
        """Mean tokens committed per step (the acceptance length); 0 before the first step."""
        return self.tokens / self.steps if self.steps else 0.0


@dataclass(frozen=True)
class StepRecord:
    """One DFlash step, for tests and tracing."""

    anchor: int
    position: int                  # the anchor's position = committed tokens before the step
    proposals: list[int]           # d_1..d_g (g = B-1, fewer at the end of a request)
    accepted: int
    committed: list[int]           # the tokens the step emitted (cut after a stop token)
    draft: DraftOutput
    target_logits: torch.Tensor    # [g+1, vocab]


class DFlashDecoder:
    """Generates with a target and a DFlash drafter; lossless with respect to the target.

    One request at a time: ``start`` (or ``generate``) resets both models' caches. With
    ``copy`` (`copy_draft.CopyDraft`), proposals are copied from the context where it
    repeats itself (the proposal distribution of a copied slot is one-hot: still lossless).
    """

    def __init__(self, target: Target, draft: Drafter, params: SamplingParams, copy: CopyDraft | None = None):
        params.check_vocab(target.cfg.vocab_size)
        draft.cfg.check_target(target.cfg)
        self.target = target
        self.draft = draft
        self.params = params
        self.block_size: int = draft.cfg.block_size
        self.layers = tuple(draft.cfg.target_layer_ids)
        self.generator = torch.Generator(device="cpu")
        if params.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(params.seed)
        self.stats = AcceptanceStats(self.block_size)
        self.last_step: StepRecord | None = None
        self.copy = copy
        self._history: list[int] = []   # the committed tokens both caches hold (prompt, then output)
        self._anchor = -1
        self._left = 0               # tokens the request may still emit
        self._done = True

    # ------------------------------------------------------------------- API
    def generate(self, prompt: TokenIds, max_tokens: int | None = None) -> Iterator[list[int]]:
        """Committed tokens, one list per step: first the token from the prefill, then 1..B per step.

        Both models are reset first. ``max_tokens`` defaults to the sampling parameters'.
        The prompt is prefilled here, so bad input raises before iteration starts.
        """
        first = self.start(prompt, max_tokens)

        def steps() -> Iterator[list[int]]:
            yield [first]
            while not self._done:
                yield self.step().committed

        return steps()

    @property
    def finished(self) -> bool:
        return self._done

    def start(self, prompt: TokenIds, max_tokens: int | None = None) -> int:
        """Prefill the prompt into both caches and return the first generated token."""
        left = self.params.max_tokens if max_tokens is None else max_tokens
        if isinstance(left, bool) or not isinstance(left, int) or left < 1:
            raise InputError(f"max_tokens={left!r} is invalid: allowed an integer >= 1")
        self._done = True                                   # until the prefill succeeds
        self.target.reset()
        self.draft.reset()
        self.stats = AcceptanceStats(self.block_size)
        self.last_step = None
        out = self.target.prefill(prompt, return_hidden=self.layers)
        n = self.target.position
        self.draft.append_context(out.hidden, range(n))
        first = self._pick(out.logits[-1])
        self._history = [int(t) for t in prompt]
        self._anchor, self._left = first, left - 1
        self._done = self._left == 0 or first in self.params.stop_tokens
        return first

    def step(self) -> StepRecord:
        """One draft + verify step; returns what it did and committed."""
        if self._done:
            raise InputError("step: the request is finished (stop token or max_tokens reached); call start()")
        position = self.target.position
        if self.draft.context_length != position:
            raise InputError(f"step: the drafter holds {self.draft.context_length} context tokens but the target "
                             f"holds {position}; the caches were changed outside the decoder")
        size = min(self.block_size, self._left)           # verify never computes a token past max_tokens
        draft = self.draft.propose(self._anchor, position)
        proposals, q = sample_proposals(draft.proposal_logits[:size - 1], self.params, self.generator)
        if self.copy is not None:
            proposals, q = self._copied(draft.proposal_logits[:size - 1], proposals, q)
        block = [self._anchor] + proposals
        out = self.target.verify(block, return_hidden=self.layers)
        verdict = verify_block(proposals, q, out.logits, self.params, self.generator)
        kept = position + 1 + verdict.accepted            # the anchor and the accepted proposals
        self.draft.append_context(out.hidden, range(position, position + size))
        self.target.truncate(kept)
        self.draft.truncate(kept)
        self.stats.record(len(verdict.tokens))
        committed = self._cut(verdict.tokens)
        self._history += block[:1 + verdict.accepted]
        self._anchor = committed[-1]
        self._left -= len(committed)
        self._done = self._done or self._left == 0
        self.last_step = StepRecord(anchor=block[0], position=position, proposals=proposals,
                                    accepted=verdict.accepted, committed=committed, draft=draft,
                                    target_logits=out.logits)
        return self.last_step

    # ---------------------------------------------------------------- pieces
    def _copied(self, logits: torch.Tensor, proposals: list[int], q: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Copy drafting over the drafter's proposals; a copied slot's q is one-hot."""
        assert self.copy is not None
        prefix = copied_prefix(self._history + [self._anchor], logits, self.copy)
        if not prefix:
            return proposals, q
        k = len(prefix)
        q = q.clone()
        q[:k] = 0.0
        q[torch.arange(k), prefix] = 1.0
        return prefix + proposals[k:], q

    def _pick(self, logits: torch.Tensor) -> int:
        """One token from the target's logits ``[V]`` (the first token, from the prefill)."""
        if self.params.greedy:
            return int(logits.argmax())
        return categorical(probabilities(logits[None], self.params)[0], self.generator)

    def _cut(self, tokens: list[int]) -> list[int]:
        """The tokens up to and including the first stop token (which ends the request)."""
        for i, t in enumerate(tokens):
            if t in self.params.stop_tokens:
                self._done = True
                return tokens[:i + 1]
        return tokens


def plain_decode(target: ReferenceModel, prompt: TokenIds, params: SamplingParams,
                 max_tokens: int | None = None) -> list[int]:
    """Greedy or sampled decoding with the target alone, one token per step: DFlash's yardstick."""
    left = params.max_tokens if max_tokens is None else operator.index(max_tokens)
    generator = torch.Generator(device="cpu")
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)

    def pick(logits: torch.Tensor) -> int:
        if params.greedy:
            return int(logits.argmax())
        return categorical(probabilities(logits[None], params)[0], generator)

    target.reset()
    out: list[int] = [pick(target.prefill(prompt).logits[-1])]
    while len(out) < left and out[-1] not in params.stop_tokens:
        out.append(pick(target.decode(out[-1]).logits[-1]))
    return out
