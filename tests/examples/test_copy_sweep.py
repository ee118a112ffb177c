"""`examples/train/copy_sweep.py`: replaying a policy over one teacher-forced trace commits,
step for step, what the real decoder commits with that policy (the sweep's premise: the
drafter's block at an anchor depends on the committed text only)."""

from __future__ import annotations

import pytest
import torch

from examples.train.copy_sweep import replay, trace
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.copy_draft import CopyDraft
from tilewarp.pipeline.dflash.decoder import DFlashDecoder
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.weights import random_draft_weights
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams

CFG = preset("tiny")
DCFG = tiny_drafter(CFG)
N = 96
UNIT = torch.randint(0, CFG.vocab_size, (11,), generator=torch.Generator().manual_seed(3)).tolist()
PROMPT = UNIT * 3 + UNIT[:5]                    # repeats itself: copying has sources from the start
CAP = len(PROMPT) + N + 2 * DCFG.block_size


class LoopingTarget(ReferenceModel):
    """The reference target, except that it continues the prompt's period after 4 of every
    7 positions (a small target's loops, broken often enough that copies also fail)."""

    def _forward(self, tokens, layers):
        out = super()._forward(tokens, layers)
        n = out.logits.shape[0]
        for row, pos in enumerate(range(self.position - n + 1, self.position + 1)):
            if pos % 7 < 4:
                out.logits[row] = -10.0
                out.logits[row, UNIT[pos % len(UNIT)]] = 10.0
        return out


@pytest.fixture(scope="module")
def pair():
    w = random_weights(CFG, 0)
    return w, random_draft_weights(DCFG, 1)


@pytest.mark.parametrize("copy", [None, CopyDraft(min_match=1, trust_permille=1000),
                                  CopyDraft(min_match=1, trust_permille=300)], ids=["drafter", "eager", "picky"])
def test_replaying_a_policy_commits_what_the_decoder_commits(pair, copy):
    w, dw = pair
    params = SamplingParams(max_tokens=N)
    t = trace(LoopingTarget(w, capacity=CAP), DraftModel(DCFG, dw, w, capacity=CAP), PROMPT, params)
    dec = DFlashDecoder(LoopingTarget(w, capacity=CAP), DraftModel(DCFG, dw, w, capacity=CAP), params, copy)
    steps = list(dec.generate(PROMPT, N))
    assert t.seq == PROMPT + [tok for s in steps for tok in s]
    assert replay(t, DCFG.block_size, copy) == [len(s) for s in steps[1:]]


def test_policies_differ_on_this_prompt(pair):
    """(So the test above compares policies that actually copy.)"""
    w, dw = pair
    t = trace(LoopingTarget(w, capacity=CAP), DraftModel(DCFG, dw, w, capacity=CAP), PROMPT,
              SamplingParams(max_tokens=N))
    plain = replay(t, DCFG.block_size, None)
    eager = replay(t, DCFG.block_size, CopyDraft(min_match=1, trust_permille=1000))
    assert sum(eager) == sum(plain) == N - 1 and len(eager) < len(plain), (plain, eager)
