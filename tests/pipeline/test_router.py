"""The sigmoid router: the correction bias chooses, the unbiased scores weigh (MiMo-V2 / DeepSeek-V3 noaux_tc)."""

import pytest
import torch

from tilewarp.pipeline.errors import ConfigError
from tilewarp.pipeline.reference import limit_to_top_groups, route


def logits_for(scores: list[float]) -> torch.Tensor:
    """Router logits whose sigmoid is exactly `scores` (up to fp32)."""
    s = torch.tensor([scores], dtype=torch.float64)
    return torch.log(s / (1 - s)).float()


def test_top_k_of_sigmoid_scores_without_bias():
    ids, weights = route(logits_for([0.1, 0.9, 0.3, 0.8]), torch.zeros(4), top_k=2)
    assert ids.tolist() == [[1, 3]]
    torch.testing.assert_close(weights, torch.tensor([[0.9, 0.8]]) / 1.7)


def test_correction_bias_changes_the_choice_but_not_the_weights():
    scores = [0.9, 0.8, 0.1, 0.3]
    bias = torch.tensor([0.0, 0.0, 0.75, 0.0])           # expert 2: 0.1 + 0.75 = 0.85 beats expert 1's 0.8
    ids, weights = route(logits_for(scores), bias, top_k=2)
    assert ids.tolist() == [[0, 2]]
    torch.testing.assert_close(weights, torch.tensor([[0.9, 0.1]]) / (0.9 + 0.1))


def test_ids_are_ordered_by_biased_score():
    ids, _ = route(logits_for([0.5, 0.6, 0.7, 0.1]), torch.tensor([0.3, 0.0, 0.0, 0.0]), top_k=3)
    assert ids.tolist() == [[0, 2, 1]]       # 0.8, 0.7, 0.6


def test_weights_sum_to_routed_scaling_when_normalised():
    logits = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    bias = torch.randn(8, generator=torch.Generator().manual_seed(1)) * 0.1
    _, weights = route(logits, bias, top_k=3, routed_scaling=2.5)
    torch.testing.assert_close(weights.sum(-1), torch.full((16,), 2.5))


def test_without_normalisation_weights_are_raw_scores_times_scaling():
    scores = [0.2, 0.7, 0.4, 0.6]
    ids, weights = route(logits_for(scores), torch.zeros(4), top_k=2, norm_topk_prob=False, routed_scaling=3.0)
    assert ids.tolist() == [[1, 3]]
    torch.testing.assert_close(weights, torch.tensor([[0.7 * 3.0, 0.6 * 3.0]]))


def test_router_math_is_fp32_even_for_bf16_inputs():
    # 1.0 and 1.002 are one number in bf16; in fp32 expert 1 wins.
    logits = torch.tensor([[1.0, 1.002, -3.0]], dtype=torch.float32)
    ids, weights = route(logits, torch.zeros(3, dtype=torch.bfloat16), top_k=1, norm_topk_prob=False)
    assert ids.tolist() == [[1]]
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.sigmoid(torch.tensor([[1.002]])))


# ------------------------------------------------------------- group-limited top-k
# 8 experts in 4 groups of 2: {0,1} {2,3} {4,5} {6,7}.
GROUP_SCORES = [0.95, 0.01, 0.60, 0.61, 0.90, 0.02, 0.10, 0.20]
# group score = sum of its top-2: g0 0.96, g1 1.21, g2 0.92, g3 0.30


def test_one_group_is_plain_top_k():
    ids, _ = route(logits_for(GROUP_SCORES), torch.zeros(8), top_k=2)
    assert ids.tolist() == [[0, 4]]


def test_group_limit_keeps_only_the_best_groups():
    ids, weights = route(logits_for(GROUP_SCORES), torch.zeros(8), top_k=2, n_group=4, topk_group=1)
    assert ids.tolist() == [[3, 2]]      # group 1 wins on its sum although 0 and 4 score higher alone
    torch.testing.assert_close(weights, torch.tensor([[0.61, 0.60]]) / 1.21)


def test_group_limit_with_two_groups_chooses_within_their_union():
    ids, _ = route(logits_for(GROUP_SCORES), torch.zeros(8), top_k=2, n_group=4, topk_group=2)
    assert ids.tolist() == [[0, 3]]      # groups 1 and 0 kept; expert 4 (group 2) is out


def test_group_scores_use_biased_scores():
    bias = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0])   # lifts group 2 to 1.42
    ids, weights = route(logits_for(GROUP_SCORES), bias, top_k=2, n_group=4, topk_group=1)
    assert ids.tolist() == [[4, 5]]
    torch.testing.assert_close(weights, torch.tensor([[0.90, 0.02]]) / 0.92)


def test_masked_groups_never_win_even_when_kept_scores_are_negative():
    # Every biased score is negative; group 0 is kept (-1.1 - 1.2 > 2 x -1.99). Masking with
    # 0.0 (as the HF DeepSeek-V3 port does) would let masked experts win; -inf does not.
    scores = [0.9, 0.8, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]
    ids, _ = route(logits_for(scores), torch.full((8,), -2.0), top_k=2, n_group=4, topk_group=1)
    assert ids.tolist() == [[0, 1]]


def test_limit_to_top_groups_masks_other_groups_with_minus_inf():
    scores = torch.tensor([GROUP_SCORES])
    masked = limit_to_top_groups(scores, n_group=4, topk_group=2)
    expected = scores.clone()
    expected[0, 4:] = float("-inf")
    assert torch.equal(masked, expected)


def test_group_limit_works_per_token():
    rows = torch.cat([logits_for(GROUP_SCORES), logits_for(GROUP_SCORES[::-1])])
    ids, _ = route(rows, torch.zeros(8), top_k=2, n_group=4, topk_group=1)
    assert ids.tolist() == [[3, 2], [4, 5]]


def test_top_k_larger_than_the_kept_groups_is_a_config_error():
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        route(torch.zeros(1, 8), torch.zeros(8), top_k=3, n_group=4, topk_group=1)
    with pytest.raises(ConfigError, match="n_group"):
        route(torch.zeros(1, 8), torch.zeros(8), top_k=2, n_group=3, topk_group=1)
