"""Sampling: greedy, temperature, top-k, top-p, seeded draws, and parameter validation."""

import math

import pytest
import torch

from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.sampling import Sampler, SamplingParams, probabilities


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float32).log()


# ------------------------------------------------------------------------ greedy
def test_greedy_picks_the_argmax():
    logits = torch.tensor([0.1, 2.5, -1.0, 2.4, 0.0])
    assert Sampler(SamplingParams()).sample(logits) == 1


def test_greedy_breaks_ties_to_the_lowest_id():
    logits = torch.tensor([0.0, 3.0, 1.0, 3.0, 3.0])
    assert Sampler(SamplingParams()).sample(logits) == 1
    assert Sampler(SamplingParams()).sample_rows(logits.flip(0)[None]) == [0]


def test_greedy_distribution_is_the_point_mass_on_the_argmax():
    p = probabilities(torch.tensor([[1.0, 4.0, 4.0, -2.0]]), SamplingParams())
    assert p.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_greedy_sample_rows_takes_each_rows_argmax():
    logits = torch.tensor([[0.0, 1.0, 0.5], [2.0, 1.0, 0.5], [0.0, 0.0, 9.0]])
    assert Sampler(SamplingParams()).sample_rows(logits) == [1, 0, 2]


# ------------------------------------------------------------------ temperature
def test_temperature_one_without_filters_is_the_softmax():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    p = probabilities(logits, SamplingParams(temperature=1.0))
    torch.testing.assert_close(p, torch.softmax(logits, dim=-1), rtol=1e-6, atol=1e-7)


def test_temperature_divides_the_logits():
    logits = torch.randn(40, generator=torch.Generator().manual_seed(1))
    p = probabilities(logits, SamplingParams(temperature=2.5))
    torch.testing.assert_close(p, torch.softmax(logits / 2.5, dim=-1), rtol=1e-6, atol=1e-7)


def test_temperature_towards_zero_approaches_greedy():
    logits = torch.tensor([1.0, 1.3, 0.2, 1.25])
    mass_on_argmax = [float(probabilities(logits, SamplingParams(temperature=t))[1]) for t in (1.0, 0.1, 0.01)]
    assert mass_on_argmax[0] < mass_on_argmax[1] < mass_on_argmax[2]
    assert mass_on_argmax[2] > 0.99
    sampler = Sampler(SamplingParams(temperature=1e-3, seed=0))
    assert {sampler.sample(logits) for _ in range(200)} == {1}


def test_tiny_temperature_gives_a_point_mass_not_nan():
    p = probabilities(torch.tensor([10.0, 9.0, -5.0]), SamplingParams(temperature=1e-38))
    assert p.tolist() == [1.0, 0.0, 0.0]


# ------------------------------------------------------------------------- top-k
def test_top_k_keeps_exactly_the_k_most_likely_tokens():
    logits = torch.randn(100, generator=torch.Generator().manual_seed(2))
    p = probabilities(logits, SamplingParams(temperature=1.0, top_k=7))
    kept = p.nonzero().flatten()
    assert set(kept.tolist()) == set(logits.topk(7).indices.tolist())
    torch.testing.assert_close(p[kept], torch.softmax(logits[kept], dim=0))


def test_top_k_ties_at_the_cut_go_to_the_lower_ids():
    logits = torch.zeros(64)
    logits[40] = 1.0
    p = probabilities(logits, SamplingParams(temperature=1.0, top_k=3))
    assert p.nonzero().flatten().tolist() == [0, 1, 40]


def test_top_k_equal_to_vocab_changes_nothing():
    logits = torch.randn(10, generator=torch.Generator().manual_seed(3))
    full = probabilities(logits, SamplingParams(temperature=1.0))
    torch.testing.assert_close(probabilities(logits, SamplingParams(temperature=1.0, top_k=10)), full)


# ------------------------------------------------------------------------- top-p
# Hand-built distribution, ids deliberately not in probability order.
NUCLEUS = [0.2, 0.1, 0.4, 0.3]       # ranked: id 2 (0.4), id 3 (0.3), id 0 (0.2), id 1 (0.1)


@pytest.mark.parametrize("top_p, kept", [
    (0.35, [2]),            # 0.4 >= 0.35 already
    (0.65, [2, 3]),         # 0.4 < 0.65 <= 0.7
    (0.85, [2, 3, 0]),      # 0.7 < 0.85 <= 0.9
    (0.95, [2, 3, 0, 1]),
    (1.0, [2, 3, 0, 1]),
])
def test_top_p_keeps_the_smallest_nucleus_reaching_top_p(top_p, kept):
    p = probabilities(logits_of(NUCLEUS), SamplingParams(temperature=1.0, top_p=top_p))
    assert sorted(p.nonzero().flatten().tolist()) == sorted(kept)
    mass = sum(NUCLEUS[i] for i in kept)
    expected = [NUCLEUS[i] / mass if i in kept else 0.0 for i in range(4)]
    torch.testing.assert_close(p, torch.tensor(expected), rtol=1e-5, atol=1e-7)


def test_top_p_reached_exactly_keeps_just_that_prefix():
    # 64 equal logits: each token has exactly 1/64, so 32 tokens hold exactly 0.5 (ties: lowest ids).
    p = probabilities(torch.zeros(64), SamplingParams(temperature=1.0, top_p=0.5))
    assert p.nonzero().flatten().tolist() == list(range(32))


def test_top_p_always_keeps_the_most_likely_token():
    p = probabilities(logits_of([0.05, 0.9, 0.05]), SamplingParams(temperature=1.0, top_p=1e-6))
    assert p.tolist() == [0.0, 1.0, 0.0]


def test_top_p_applies_after_top_k_renormalises():
    # Alone, top_p=0.72 needs 3 tokens (0.4+0.3 = 0.7 < 0.72). After top_k=3 the mass is
    # [0.4, 0.3, 0.2] / 0.9, and the first two reach 0.78 >= 0.72.
    logits = logits_of(NUCLEUS)
    alone = probabilities(logits, SamplingParams(temperature=1.0, top_p=0.72))
    after_k = probabilities(logits, SamplingParams(temperature=1.0, top_k=3, top_p=0.72))
    assert int((alone > 0).sum()) == 3
    assert sorted(after_k.nonzero().flatten().tolist()) == [2, 3]


def test_top_p_applies_after_temperature():
    # At temperature 1 token 0 alone holds 0.6 >= 0.5; flattened by temperature 4 it does not.
    logits = logits_of([0.6, 0.25, 0.15])
    assert int((probabilities(logits, SamplingParams(temperature=1.0, top_p=0.5)) > 0).sum()) == 1
    assert int((probabilities(logits, SamplingParams(temperature=4.0, top_p=0.5)) > 0).sum()) == 2


def test_probabilities_work_row_by_row_on_batches():
    logits = torch.randn(5, 30, generator=torch.Generator().manual_seed(4))
    params = SamplingParams(temperature=0.7, top_k=12, top_p=0.8)
    batched = probabilities(logits, params)
    for row in range(5):
        torch.testing.assert_close(batched[row], probabilities(logits[row], params))
    torch.testing.assert_close(batched.sum(-1), torch.ones(5))


def test_minus_inf_logits_get_zero_probability():
    p = probabilities(torch.tensor([0.0, float("-inf"), 1.0]), SamplingParams(temperature=1.0))
    assert p[1] == 0 and math.isclose(float(p.sum()), 1.0, rel_tol=1e-6)


# --------------------------------------------------------------- random draws
def test_same_seed_draws_the_same_tokens():
    logits = torch.randn(8, 64, generator=torch.Generator().manual_seed(5))
    params = SamplingParams(temperature=1.0, seed=1234)
    first, second = Sampler(params), Sampler(params)
    assert [first.sample_rows(logits) for _ in range(5)] == [second.sample_rows(logits) for _ in range(5)]


def test_different_seeds_draw_different_tokens():
    logits = torch.zeros(64, 64)     # uniform over 64 tokens: 64 equal draws by chance ~ 64**-63
    a = Sampler(SamplingParams(temperature=1.0, seed=1)).sample_rows(logits)
    b = Sampler(SamplingParams(temperature=1.0, seed=2)).sample_rows(logits)
    assert a != b


def test_sample_rows_draws_the_same_stream_as_repeated_sample():
    logits = torch.randn(6, 20, generator=torch.Generator().manual_seed(6))
    params = SamplingParams(temperature=1.3, top_k=10, seed=99)
    one_by_one = Sampler(params)
    assert Sampler(params).sample_rows(logits) == [one_by_one.sample(row) for row in logits]


def test_empirical_frequencies_match_probabilities():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -3.0, 1.5])
    params = SamplingParams(temperature=0.9, top_k=5, seed=2024)
    expected = probabilities(logits, params)
    draws = 20000
    tokens = Sampler(params).sample_rows(logits.expand(draws, -1))
    counts = torch.bincount(torch.tensor(tokens), minlength=7).double()
    kept = expected > 0
    assert counts[~kept].sum() == 0, "a token outside top-k was drawn"
    chi2 = float((((counts - draws * expected) ** 2) / (draws * expected))[kept].sum())
    assert chi2 < 18.47       # chi-square, 4 degrees of freedom, p = 0.001


def test_zero_probability_tokens_are_never_drawn():
    logits = torch.tensor([float("-inf"), 0.0, float("-inf"), 0.0, float("-inf")])
    tokens = Sampler(SamplingParams(temperature=1.0, seed=3)).sample_rows(logits.expand(2000, -1))
    assert set(tokens) == {1, 3}


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize("field, value", [
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", "hot"),
    ("top_k", -1), ("top_k", 2.5), ("top_k", True),
    ("top_p", 0.0), ("top_p", 1.01), ("top_p", float("nan")),
    ("seed", -1), ("seed", 2 ** 64), ("seed", 1.0),
    ("max_tokens", 0), ("max_tokens", 3.0),
    ("stop_tokens", (5, -1)), ("stop_tokens", 7), ("stop_tokens", ("a",)),
])
def test_invalid_parameter_is_rejected_by_name(field, value):
    with pytest.raises(InputError, match=field):
        SamplingParams(**{field: value})


def test_valid_parameters_are_accepted_and_stop_tokens_become_a_tuple():
    p = SamplingParams(temperature=0.7, top_k=40, top_p=0.95, seed=0, max_tokens=1, stop_tokens=[3, 9])
    assert p.stop_tokens == (3, 9) and not p.greedy
    assert SamplingParams().greedy


def test_check_vocab_rejects_stop_ids_outside_the_vocab():
    SamplingParams(stop_tokens=(99,)).check_vocab(100)
    with pytest.raises(InputError, match="stop_tokens.*100"):
        SamplingParams(stop_tokens=(100,)).check_vocab(100)


def test_check_vocab_rejects_top_k_larger_than_the_vocab():
    SamplingParams(top_k=100).check_vocab(100)
    with pytest.raises(InputError, match="top_k"):
        SamplingParams(top_k=101).check_vocab(100)


def test_params_are_frozen():
    with pytest.raises(AttributeError):
        SamplingParams().temperature = 1.0


@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=1.0, seed=0)])
def test_nan_logits_are_rejected(params):
    logits = torch.tensor([0.0, float("nan"), 1.0])
    with pytest.raises(InputError, match="logits.*NaN"):
        Sampler(params).sample(logits)
    with pytest.raises(InputError, match="NaN"):
        probabilities(logits, params)


def test_plus_inf_and_all_minus_inf_logits_are_rejected():
    with pytest.raises(InputError, match=r"\+inf"):
        probabilities(torch.tensor([0.0, float("inf")]), SamplingParams(temperature=1.0))
    with pytest.raises(InputError, match="-inf"):
        probabilities(torch.full((3,), float("-inf")), SamplingParams(temperature=1.0))


def test_sample_takes_one_row_and_sample_rows_takes_a_matrix():
    sampler = Sampler(SamplingParams())
    with pytest.raises(InputError, match="sample_rows"):
        sampler.sample(torch.zeros(2, 5))
    with pytest.raises(InputError, match=r"\[T, vocab\]"):
        sampler.sample_rows(torch.zeros(5))
    with pytest.raises(InputError, match="floating-point"):
        sampler.sample(torch.zeros(5, dtype=torch.int64))
