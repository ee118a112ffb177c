"""Rollback: after a rejection both caches hold exactly the committed tokens, and the next
step computes what a fresh run over the committed sequence computes.

Each step appends all B verified tokens to both caches and then truncates both to the
committed length, so every rejection below exercises a real rollback of both caches.
"""

from __future__ import annotations

import pytest
import torch

from dflash_toys import OracleDraft
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.decoder import DFlashDecoder, StepRecord, plain_decode
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.weights import random_draft_weights
from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams

TARGET = preset("tiny")
DCFG = tiny_drafter(TARGET)
PROMPT = torch.randint(0, TARGET.vocab_size, (30,), generator=torch.Generator().manual_seed(4)).tolist()
CAPACITY = 128
# As in test_reference: fp32 GEMMs of different shapes differ in the last bits, which bf16
# caches can turn into one bf16 step; logits of different paths agree to ~1e-4 relative.
LOGIT_RTOL = 1e-3


@pytest.fixture(scope="module")
def weights():
    return random_weights(TARGET, seed=0)


@pytest.fixture(scope="module")
def draft_weights():
    return random_draft_weights(DCFG, seed=1)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def new_drafter(weights, draft_weights) -> DraftModel:
    return DraftModel(DCFG, draft_weights, weights, capacity=CAPACITY)


def step_until_rejection(decoder: DFlashDecoder, emitted: list[int]) -> StepRecord:
    for _ in range(20):
        record = decoder.step()
        emitted += record.committed
        if record.accepted < len(record.proposals):
            return record
    raise AssertionError("no proposal was rejected in 20 steps")


def test_after_a_rejection_both_caches_hold_exactly_the_committed_tokens(weights, draft_weights):
    target, drafter = ReferenceModel(weights, capacity=CAPACITY), new_drafter(weights, draft_weights)
    decoder = DFlashDecoder(target, drafter, SamplingParams(max_tokens=64))
    emitted = [decoder.start(PROMPT)]
    record = step_until_rejection(decoder, emitted)
    committed = len(PROMPT) + len(emitted) - 1             # the last emitted token is the next anchor
    assert target.position == drafter.context_length == committed
    assert record.position + record.accepted + 1 == committed


def test_the_step_after_a_rejection_matches_a_fresh_run_over_the_committed_tokens(weights, draft_weights):
    target, drafter = ReferenceModel(weights, capacity=CAPACITY), new_drafter(weights, draft_weights)
    decoder = DFlashDecoder(target, drafter, SamplingParams(max_tokens=64))
    emitted = [decoder.start(PROMPT)]
    step_until_rejection(decoder, emitted)
    after = decoder.step()

    sequence, anchor = PROMPT + emitted[:-1], emitted[-1]
    fresh_target, fresh_drafter = ReferenceModel(weights, capacity=CAPACITY), new_drafter(weights, draft_weights)
    prefill = fresh_target.prefill(sequence, return_hidden=DCFG.target_layer_ids)
    fresh_drafter.append_context(prefill.hidden, range(len(sequence)))
    assert after.anchor == anchor and after.position == len(sequence)

    draft = fresh_drafter.propose(anchor, len(sequence)).logits
    assert relative_error(after.draft.logits, draft) < LOGIT_RTOL
    assert torch.equal(after.draft.logits.argmax(-1), draft.argmax(-1))
    verify = fresh_target.verify([anchor] + after.proposals).logits
    assert relative_error(after.target_logits, verify) < LOGIT_RTOL
    assert torch.equal(after.target_logits.argmax(-1), verify.argmax(-1))


def test_a_rejection_in_the_middle_of_a_block_rolls_the_target_back_to_it(weights):
    """Accept two proposals, reject the third: the target keeps anchor + 2 and the next verify
    matches a fresh target over the committed tokens."""
    target = ReferenceModel(weights, capacity=CAPACITY)
    greedy = plain_decode(target, PROMPT, SamplingParams(max_tokens=40))
    decoder = DFlashDecoder(target, OracleDraft(PROMPT + greedy, TARGET.vocab_size, DCFG.block_size, spoil=(3,)),
                            SamplingParams(max_tokens=40))
    emitted = [decoder.start(PROMPT)]
    for _ in range(3):
        record = decoder.step()
        emitted += record.committed
        assert record.accepted == 2 and target.position == len(PROMPT) + len(emitted) - 1
    after = decoder.step()
    fresh = ReferenceModel(weights, capacity=CAPACITY)
    fresh.prefill(PROMPT + emitted[:-1])
    expected = fresh.verify([emitted[-1]] + after.proposals).logits
    assert relative_error(after.target_logits, expected) < LOGIT_RTOL


def test_a_step_refuses_caches_changed_behind_the_decoders_back(weights, draft_weights):
    target, drafter = ReferenceModel(weights, capacity=CAPACITY), new_drafter(weights, draft_weights)
    decoder = DFlashDecoder(target, drafter, SamplingParams(max_tokens=64))
    decoder.start(PROMPT)
    drafter.truncate(drafter.context_length - 1)
    with pytest.raises(InputError, match=r"the drafter holds 29 context tokens but the target holds 30"):
        decoder.step()


def test_a_finished_request_takes_no_more_steps(weights, draft_weights):
    decoder = DFlashDecoder(ReferenceModel(weights, capacity=CAPACITY), new_drafter(weights, draft_weights),
                            SamplingParams(max_tokens=1))
    decoder.start(PROMPT)
    assert decoder.finished
    with pytest.raises(InputError, match=r"step: the request is finished"):
        decoder.step()


def test_bad_requests_fail_when_generate_is_called_not_on_first_iteration(weights, draft_weights):
    decoder = DFlashDecoder(ReferenceModel(weights, capacity=CAPACITY), new_drafter(weights, draft_weights),
                            SamplingParams())
    with pytest.raises(InputError, match=r"ids: empty"):
        decoder.generate([])
    with pytest.raises(InputError, match=r"max_tokens=0 is invalid"):
        decoder.generate(PROMPT, max_tokens=0)
    with pytest.raises(InputError, match=r"stop_tokens: id 512 is out of range"):
        DFlashDecoder(decoder.target, decoder.draft, SamplingParams(stop_tokens=(512,)))
