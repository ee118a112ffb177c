"""Stand-ins for the target and the drafter whose distributions are explicit tables.

``TableTarget`` is a Markov chain: the logits after token t are ``logits[t]``, whatever came
before, so plain sampling's law of a whole continuation is known in closed form.
``TableDraft`` proposes for slot i of a block anchored at token a from ``logits[a, i]``.
``OracleDraft`` proposes a fixed continuation (e.g. the target's own greedy output),
optionally spoiling the proposal at chosen slots. All of them keep the lengths the decoder
checks, and implement truncation exactly, so the decoder's bookkeeping runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from tilewarp.pipeline.dflash.draft_model import DraftOutput
from tilewarp.pipeline.reference import StepOutput

HIDDEN = 4


@dataclass(frozen=True)
class ToyTargetConfig:
    vocab_size: int
    num_layers: int = 1
    name: str = "toy-target"


@dataclass(frozen=True)
class ToyDraftConfig:
    block_size: int
    target_layer_ids: tuple[int, ...] = (0,)

    def check_target(self, target) -> None:
        pass


class TableTarget:
    """Markov-chain target: logits after token t are ``logits[t]`` ([V, V])."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits.float()
        self.cfg = ToyTargetConfig(vocab_size=logits.shape[-1])
        self.tokens: list[int] = []

    @property
    def position(self) -> int:
        return len(self.tokens)

    def _run(self, ids: Sequence[int]) -> StepOutput:
        ids = [int(t) for t in ids]
        self.tokens += ids
        hidden = torch.tensor(ids, dtype=torch.float32)[:, None].expand(-1, HIDDEN)
        return StepOutput(logits=self.logits[ids], hidden={0: hidden})

    def prefill(self, ids, *, return_hidden=()) -> StepOutput:
        return self._run(ids)

    def verify(self, tokens, *, return_hidden=()) -> StepOutput:
        return self._run(tokens)

    def decode(self, token, *, return_hidden=()) -> StepOutput:
        return self._run([token])

    def truncate(self, length: int) -> None:
        assert 0 <= length <= len(self.tokens)
        del self.tokens[length:]

    def reset(self) -> None:
        self.tokens.clear()


class _ContextCounter:
    """The drafter-side bookkeeping: context length, checked appends, exact truncation."""

    def __init__(self, block_size: int):
        self.cfg = ToyDraftConfig(block_size=block_size)
        self.context_length = 0

    def append_context(self, hidden, positions) -> None:
        positions = list(positions)
        assert positions == list(range(self.context_length, self.context_length + len(positions)))
        assert hidden[0].shape[0] == len(positions)
        self.context_length += len(positions)

    def truncate(self, length: int) -> None:
        assert 0 <= length <= self.context_length
        self.context_length = length

    def reset(self) -> None:
        self.context_length = 0


class TableDraft(_ContextCounter):
    """Proposal logits for slot i of a block anchored at a: ``logits[a, i]`` ([V, B, V])."""

    def __init__(self, logits: torch.Tensor):
        super().__init__(block_size=logits.shape[1])
        self.logits = logits.float()

    def propose(self, anchor: int, position: int) -> DraftOutput:
        assert position == self.context_length
        logits = self.logits[anchor]
        return DraftOutput(logits=logits, hidden=torch.zeros(logits.shape[0], HIDDEN), anchor=anchor,
                           position=position)


class OracleDraft(_ContextCounter):
    """Proposes ``sequence[position + i]`` for slot i (a sure bet for a target that continues
    ``sequence``), except at the block slots in ``spoil``, where it proposes another token."""

    def __init__(self, sequence: Sequence[int], vocab_size: int, block_size: int, spoil: Sequence[int] = ()):
        super().__init__(block_size=block_size)
        self.sequence = list(sequence)
        self.vocab_size = vocab_size
        self.spoil = set(spoil)

    def propose(self, anchor: int, position: int) -> DraftOutput:
        assert position == self.context_length and self.sequence[position] == anchor
        b = self.cfg.block_size
        logits = torch.zeros(b, self.vocab_size)
        for i in range(1, b):
            want = self.sequence[position + i] if position + i < len(self.sequence) else 0
            if i in self.spoil:
                want = (want + 1) % self.vocab_size
            logits[i, want] = 10.0
        return DraftOutput(logits=logits, hidden=torch.zeros(b, HIDDEN), anchor=anchor, position=position)
