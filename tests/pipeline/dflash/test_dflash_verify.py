"""The acceptance rules of a DFlash block, case by case (the statistics are in test_dflash_lossless)."""

from __future__ import annotations

import pytest
import torch

from tilewarp.pipeline.dflash.verify import (RESIDUAL_FLOOR, residual_distribution, sample_proposals, verify_block,
                                             verify_greedy, verify_sampling)
from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.sampling import SamplingParams, probabilities


def one_hot_logits(tokens: list[int], vocab: int = 10) -> torch.Tensor:
    """Target logits whose argmax in row i is tokens[i]."""
    logits = torch.zeros(len(tokens), vocab)
    logits[torch.arange(len(tokens)), torch.tensor(tokens)] = 5.0
    return logits


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ======================================================================== greedy
def test_greedy_accepts_while_proposals_match_and_emits_the_targets_token_at_the_first_mismatch():
    verdict = verify_greedy([4, 7, 1], one_hot_logits([4, 7, 2, 9]))
    assert verdict.tokens == [4, 7, 2] and verdict.accepted == 2


def test_greedy_rejecting_the_first_proposal_commits_only_the_correction():
    verdict = verify_greedy([3, 7, 2], one_hot_logits([4, 7, 2, 9]))
    assert verdict.tokens == [4] and verdict.accepted == 0


def test_greedy_accepting_every_proposal_adds_the_bonus_token():
    verdict = verify_greedy([4, 7, 2], one_hot_logits([4, 7, 2, 9]))
    assert verdict.tokens == [4, 7, 2, 9] and verdict.accepted == 3


def test_greedy_with_no_proposals_commits_the_targets_next_token():
    assert verify_greedy([], one_hot_logits([6])).tokens == [6]


def test_greedy_ties_go_to_the_lowest_id_like_the_sampler():
    logits = torch.zeros(2, 10)
    logits[0, [3, 5]] = 1.0
    assert verify_greedy([5], logits).tokens == [3]
    assert verify_block([3], torch.zeros(1, 10), logits, SamplingParams(), gen()).tokens == [3, 0]


# ====================================================================== sampling
def test_a_proposal_the_target_rules_out_is_never_accepted():
    """u is drawn from (0, 1]: p(d) = 0 rejects d even when u lands on the smallest value."""
    p = torch.tensor([[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    q = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    for seed in range(300):
        verdict = verify_sampling([0], q, p, gen(seed))
        assert verdict.accepted == 0 and verdict.tokens[0] in (1, 2)


def test_a_proposal_as_likely_under_the_target_as_under_the_draft_is_always_accepted():
    p = torch.tensor([[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    for seed in range(300):
        assert verify_sampling([1], p[:1].clone(), p, gen(seed)).tokens == [1, 2]


def test_the_correction_comes_only_from_tokens_the_target_favours_over_the_draft():
    """After a rejection the token is drawn from norm(max(0, p - q)): here only token 2 has p > q."""
    p = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64)
    outcomes = {tuple(verify_sampling([0], q, p, gen(seed)).tokens) for seed in range(300)}
    assert outcomes == {(0, 0), (0, 1), (2,)}


def test_residual_is_the_normalised_positive_part_of_p_minus_q():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    q = torch.tensor([0.4, 0.1, 0.1, 0.4], dtype=torch.float64)
    assert torch.allclose(residual_distribution(p, q), torch.tensor([0.0, 1 / 3, 2 / 3, 0.0], dtype=torch.float64))


def test_an_empty_residual_falls_back_to_p():
    """p == q leaves nothing to draw from; a rejection then only happens through rounding."""
    p = torch.tensor([0.25, 0.75], dtype=torch.float64)
    assert torch.equal(residual_distribution(p, p.clone()), p)
    nearly = p - torch.tensor([RESIDUAL_FLOOR / 4, -RESIDUAL_FLOOR / 4], dtype=torch.float64)
    assert torch.allclose(residual_distribution(p, nearly), p)


def test_sampling_verification_is_reproducible_from_the_seed():
    p = torch.softmax(torch.randn(4, 8, generator=gen(1)), -1)
    q = torch.softmax(torch.randn(3, 8, generator=gen(2)), -1)
    runs = [[verify_sampling([1, 2, 3], q, p, gen(seed)).tokens for seed in range(20)] for _ in range(2)]
    assert runs[0] == runs[1]
    assert len({tuple(r) for r in runs[0]}) > 1


def test_greedy_parameters_make_the_sampling_path_the_greedy_rule():
    """probabilities() is one-hot at temperature 0, so both rules agree without a special case."""
    logits = torch.randn(4, 10, generator=gen(3))
    best = logits.argmax(-1).tolist()
    greedy = SamplingParams()
    for proposals in ([best[0], best[1], 5], best[:3], [9 if best[0] != 9 else 8, 1, 1]):
        q = probabilities(one_hot_logits(proposals), greedy)
        expected = verify_greedy(proposals, logits)
        assert verify_sampling(proposals, q, probabilities(logits, greedy), gen()) == expected


def test_proposals_are_the_draft_argmax_when_greedy_and_draws_from_q_otherwise():
    draft_logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    tokens, q = sample_proposals(draft_logits, SamplingParams(), gen())
    assert tokens == [1, 0] and torch.equal(q, probabilities(draft_logits, SamplingParams()))
    params = SamplingParams(temperature=1.0, top_k=2)
    seen = {tuple(sample_proposals(draft_logits, params, gen(s))[0]) for s in range(200)}
    assert {t[0] for t in seen} == {1, 2} and {t[1] for t in seen} == {0, 2}   # top-2 of each row only


# ======================================================================== errors
def test_target_rows_must_number_one_more_than_the_proposals():
    with pytest.raises(InputError, match=r"target: need \[3, vocab\] rows for 2 proposals, got \(2, 10\)"):
        verify_greedy([1, 2], torch.zeros(2, 10))


def test_proposals_must_be_token_ids_in_the_vocabulary():
    with pytest.raises(InputError, match=r"draft_tokens: proposal 1 is 10, not a token id in \[0, 10\)"):
        verify_greedy([1, 10], torch.zeros(3, 10))


def test_a_proposal_the_draft_could_not_have_drawn_is_refused():
    p = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.5]], dtype=torch.float64)
    with pytest.raises(InputError, match=r"proposal 0 \(token 0\) has draft probability 0"):
        verify_sampling([0], q, p, gen())


def test_draft_probabilities_must_match_the_proposals():
    with pytest.raises(InputError, match=r"draft_probs: need \[2, 3\], got \(1, 3\)"):
        verify_sampling([0, 1], torch.full((1, 3), 1 / 3), torch.full((3, 3), 1 / 3), gen())
