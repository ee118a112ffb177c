"""Greedy DFlash is plain greedy decoding of the target, token for token, whatever the drafter.

The drafter only decides how many tokens a step commits, never which: a random drafter
(almost every proposal rejected), a perfect one (every block accepted, plus the bonus
token) and one wrong at a fixed slot (accept two, correct the third) must all reproduce
the target's own greedy output over 256 tokens, and stop exactly where it stops.
"""

from __future__ import annotations

import pytest
import torch

from dflash_toys import OracleDraft
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.decoder import DFlashDecoder, plain_decode
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.weights import random_draft_weights
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams

TARGET = preset("tiny")
DCFG = tiny_drafter(TARGET)
B = DCFG.block_size
N = 256
PROMPT = torch.randint(0, TARGET.vocab_size, (24,), generator=torch.Generator().manual_seed(0)).tolist()
CAPACITY = len(PROMPT) + N + B


@pytest.fixture(scope="module")
def weights():
    return random_weights(TARGET, seed=0)


@pytest.fixture(scope="module")
def target(weights) -> ReferenceModel:
    return ReferenceModel(weights, capacity=CAPACITY)


@pytest.fixture(scope="module")
def drafter(weights) -> DraftModel:
    return DraftModel(DCFG, random_draft_weights(DCFG, seed=1), weights, capacity=CAPACITY)


@pytest.fixture(scope="module")
def greedy(target) -> list[int]:
    """The target's own greedy continuation of PROMPT, one decode step per token."""
    return plain_decode(target, PROMPT, SamplingParams(max_tokens=N))


def run(decoder: DFlashDecoder, max_tokens: int = N) -> list[list[int]]:
    return list(decoder.generate(PROMPT, max_tokens=max_tokens))


def flat(steps: list[list[int]]) -> list[int]:
    return [t for step in steps for t in step]


def oracle(greedy: list[int], spoil: tuple[int, ...] = ()) -> OracleDraft:
    return OracleDraft(PROMPT + greedy, TARGET.vocab_size, B, spoil=spoil)


# =================================================================== equivalence
def test_greedy_dflash_with_a_random_drafter_equals_plain_greedy_decoding(target, drafter, greedy):
    decoder = DFlashDecoder(target, drafter, SamplingParams())
    steps = run(decoder)
    assert flat(steps) == greedy
    assert steps[0] == [greedy[0]]                         # the first token comes from the prefill
    assert decoder.stats.steps == len(steps) - 1 and decoder.stats.tokens == N - 1
    assert decoder.stats.histogram[0] > 0                  # random drafts get rejected


def test_greedy_dflash_with_a_perfect_drafter_commits_whole_blocks_and_equals_plain_greedy(target, greedy):
    decoder = DFlashDecoder(target, oracle(greedy), SamplingParams())
    steps = run(decoder)
    assert flat(steps) == greedy
    # 255 tokens after the first: 31 blocks of 7 accepted + the bonus, then a last block cut to 7.
    assert [len(s) for s in steps] == [1] + [B] * 31 + [7]
    assert decoder.stats.histogram[B - 1] == 31 and decoder.stats.mean == pytest.approx(255 / 32)


def test_a_drafter_wrong_at_slot_3_commits_two_proposals_and_the_correction(target, greedy):
    decoder = DFlashDecoder(target, oracle(greedy, spoil=(3,)), SamplingParams())
    steps = run(decoder)
    assert flat(steps) == greedy
    assert all(len(s) == 3 for s in steps[1:])             # 255 = 85 steps of 3
    assert decoder.last_step.accepted == 2


# ============================================================== where it stops
def first_new_token_after(tokens: list[int], index: int) -> int:
    """The first position >= index holding a token that does not occur before it."""
    return next(i for i in range(index, len(tokens)) if tokens[i] not in tokens[:i])


@pytest.mark.parametrize("kind", ["random", "perfect"])
def test_a_stop_token_ends_generation_right_after_it(target, drafter, greedy, kind):
    stop_at = first_new_token_after(greedy, 20)
    params = SamplingParams(stop_tokens=(greedy[stop_at],))
    decoder = DFlashDecoder(target, drafter if kind == "random" else oracle(greedy), params)
    assert flat(run(decoder)) == greedy[:stop_at + 1]
    assert decoder.finished


@pytest.mark.parametrize("max_tokens", [1, 2, 8, 9, 13])
def test_max_tokens_is_never_exceeded_nor_computed_past(target, greedy, max_tokens):
    decoder = DFlashDecoder(target, oracle(greedy), SamplingParams())
    assert flat(run(decoder, max_tokens)) == greedy[:max_tokens]
    # The last emitted token is never fed to the target: it holds the prompt and max_tokens - 1 more at most.
    assert target.position <= len(PROMPT) + max_tokens - 1


def test_max_tokens_defaults_to_the_sampling_parameters(target, greedy):
    decoder = DFlashDecoder(target, oracle(greedy), SamplingParams(max_tokens=5))
    assert flat(decoder.generate(PROMPT)) == greedy[:5]


# ================================================================== sampling runs
def test_sampled_dflash_is_reproducible_from_the_seed_and_respects_max_tokens(target, drafter):
    params = SamplingParams(temperature=0.8, top_k=50, seed=5)
    runs = [flat(run(DFlashDecoder(target, drafter, params), 40)) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 40
    other = flat(run(DFlashDecoder(target, drafter, SamplingParams(temperature=0.8, top_k=50, seed=6)), 40))
    assert other != runs[0]
