"""The DFlash drafter: its math, what the block attends to, and what its cache keeps.

The tiny drafter's window is 16 context tokens; contexts of 20-40 tokens below cross it
(and wrap its 32-slot ring). Hidden states are random: the drafter cannot tell them from
a target's, and random ones make every context token matter.
"""

from __future__ import annotations

import pytest
import torch

from dflash_hand import hand_draft_logits
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.weights import DraftWeights, random_draft_tensors
from tilewarp.pipeline.errors import ConfigError, InputError
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.weights import DictSource

TARGET = preset("tiny")
CFG = tiny_drafter(TARGET)
WINDOW = CFG.window


@pytest.fixture(scope="module")
def target():
    return random_weights(TARGET, seed=0)


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return dict(random_draft_tensors(CFG, seed=1))


def drafter(target, tensors, capacity: int = 128, **changed: torch.Tensor) -> DraftModel:
    return DraftModel(CFG, DraftWeights(CFG, DictSource({**tensors, **changed})), target, capacity=capacity)


def features(tokens: int, seed: int = 0) -> torch.Tensor:
    """Concatenated hidden states ``[tokens, K*H]`` of the target layers the drafter reads."""
    return torch.randn(tokens, CFG.context_width, generator=torch.Generator().manual_seed(seed))


def as_hidden(feats: torch.Tensor) -> dict[int, torch.Tensor]:
    """Split ``[T, K*H]`` back into the per-layer dict the drafter takes."""
    parts = feats.split(CFG.hidden_size, dim=-1)
    return dict(zip(CFG.target_layer_ids, parts))


def fed(model: DraftModel, feats: torch.Tensor) -> DraftModel:
    model.append_context(as_hidden(feats), range(model.context_length, model.context_length + feats.shape[0]))
    return model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# ========================================================================== math
@pytest.mark.parametrize("context", [5, 20])
def test_draft_logits_match_a_hand_computation_from_the_model_facts(target, tensors, context):
    feats = features(context)
    out = fed(drafter(target, tensors), feats).propose(anchor=42, position=context)
    hand = hand_draft_logits(CFG, tensors, target.dense("model.embed_tokens.weight"), target.lm_head(), feats,
                             anchor=42, position=context)
    assert out.logits.shape == (CFG.block_size, TARGET.vocab_size) and out.logits.dtype == torch.float32
    # fp32 vs float64 differ in the last bits, and a K/V element on a bf16 rounding boundary may
    # then land one bf16 step apart; the measured error is ~1e-5.
    assert relative_error(out.logits, hand) < 1e-3
    assert torch.equal(out.logits.argmax(-1), hand.argmax(-1))
    assert torch.equal(out.proposal_logits, out.logits[1:])


def test_the_block_is_the_anchors_target_embedding_then_the_mask_embedding(target, tensors):
    block = drafter(target, tensors).block_embeddings(anchor=7)
    assert torch.equal(block[0], target.dense("model.embed_tokens.weight")[7].float())
    assert torch.equal(block[1:], tensors["mask_embedding"].float().expand(CFG.block_size - 1, -1))


def test_attention_inside_the_block_is_not_causal(target, tensors):
    """The anchor's slot reads the MASK slots' keys: changing the mask embedding changes its output."""
    feats = features(10)
    base = fed(drafter(target, tensors), feats).propose(3, 10).logits
    other_mask = torch.randn(CFG.hidden_size, generator=torch.Generator().manual_seed(9)).to(torch.bfloat16)
    changed = fed(drafter(target, tensors, mask_embedding=other_mask), feats).propose(3, 10).logits
    assert not torch.allclose(changed[0], base[0], atol=1e-3)
    assert all(not torch.allclose(changed[i], base[i], atol=1e-3) for i in range(CFG.block_size))


def test_the_block_sees_exactly_the_window_of_context_before_the_anchor(target, tensors):
    context = 30
    oldest_visible = context - WINDOW                        # position 14: the anchor sees 14..29
    base = fed(drafter(target, tensors), features(context)).propose(1, context).logits
    for pos, visible in ((oldest_visible - 1, False), (0, False), (oldest_visible, True), (context - 1, True)):
        feats = features(context)
        feats[pos] += 3.0
        logits = fed(drafter(target, tensors), feats).propose(1, context).logits
        assert torch.equal(logits, base) != visible, f"context position {pos} should be {'in' if visible else 'out of'}" \
                                                     " the window"


def test_without_a_window_the_block_sees_the_whole_context(target, tensors):
    cfg = CFG.replace(window=None)
    model = DraftModel(cfg, DraftWeights(cfg, DictSource(tensors)), target, capacity=128)
    base = fed(model, features(30)).propose(1, 30).logits
    feats = features(30)
    feats[0] += 3.0
    model.reset()
    assert not torch.equal(fed(model, feats).propose(1, 30).logits, base)


# ========================================================================= cache
def test_propose_keeps_no_block_keys_or_values(target, tensors):
    model = fed(drafter(target, tensors), features(20))
    before = ([k.clone() for k in model.cache.k], [v.clone() for v in model.cache.v], model.cache.owner.clone())
    first = model.propose(5, 20).logits
    assert model.context_length == 20
    assert all(torch.equal(a, b) for a, b in zip(before[0], model.cache.k))
    assert all(torch.equal(a, b) for a, b in zip(before[1], model.cache.v))
    assert torch.equal(before[2], model.cache.owner)
    assert torch.equal(model.propose(5, 20).logits, first)


def test_context_after_truncate_is_the_context_of_the_kept_tokens(target, tensors):
    """Append 24 tokens, roll back to 18, append 6 others: same as feeding the second sequence fresh."""
    first, second = features(24, seed=1), features(24, seed=2)
    second[:18] = first[:18]
    model = fed(drafter(target, tensors), first)
    model.truncate(18)
    assert model.context_length == 18
    fed(model, second[18:])
    fresh = fed(drafter(target, tensors), second)
    assert relative_error(model.propose(9, 24).logits, fresh.propose(9, 24).logits) < 1e-5


def test_truncate_then_propose_reads_only_the_kept_context(target, tensors):
    model = fed(drafter(target, tensors), features(24))
    model.truncate(20)
    fresh = fed(drafter(target, tensors), features(24)[:20])
    assert relative_error(model.propose(9, 20).logits, fresh.propose(9, 20).logits) < 1e-5


def test_a_rollback_deeper_than_the_ring_keeps_is_refused(target, tensors):
    model = fed(drafter(target, tensors), features(60))        # the 32-slot ring wrapped
    model.truncate(60 - 16)                                   # at most MAX_STEP_TOKENS back is always fine
    with pytest.raises(InputError, match=r"cannot roll the drafter context back to 40: .* position 24 was overwritten"):
        model.truncate(40)


def test_a_long_context_is_appended_in_one_call(target, tensors):
    """append_context takes any number of tokens (a whole prompt); it matches appending them one by one."""
    feats = features(40)
    at_once = fed(drafter(target, tensors), feats)
    one_by_one = drafter(target, tensors)
    for t in range(40):
        fed(one_by_one, feats[t:t + 1])
    assert relative_error(at_once.propose(2, 40).logits, one_by_one.propose(2, 40).logits) < 1e-5


# ======================================================================== errors
def test_hidden_states_must_cover_exactly_the_target_layers_read(target, tensors):
    model = drafter(target, tensors)
    hidden = as_hidden(features(3))
    del hidden[2]
    with pytest.raises(InputError, match=r"hidden: need the outputs of target layers \[0, 2, 3\], got \[0, 3\]"):
        model.append_context(hidden, range(3))


def test_hidden_states_must_have_one_row_per_token_of_the_target_width(target, tensors):
    hidden = as_hidden(features(3))
    hidden[3] = hidden[3][:2]
    with pytest.raises(InputError, match=r"hidden: each layer's states must be \[T, hidden=128\] with one T"):
        drafter(target, tensors).append_context(hidden, range(3))


def test_positions_must_continue_the_context(target, tensors):
    model = fed(drafter(target, tensors), features(4))
    with pytest.raises(InputError, match=r"positions: must continue the context at 4 .. 5, got \[5, 6\]"):
        model.append_context(as_hidden(features(2)), [5, 6])


def test_the_block_must_start_right_after_the_context(target, tensors):
    model = fed(drafter(target, tensors), features(4))
    with pytest.raises(InputError, match=r"position: the block must start right after the context \(4 tokens\)"):
        model.propose(1, 3)
    with pytest.raises(InputError, match=r"anchor: token id 512 is out of range"):
        model.propose(512, 4)


def test_the_context_cannot_outgrow_the_capacity(target, tensors):
    model = drafter(target, tensors, capacity=10)
    with pytest.raises(InputError, match=r"drafter context overflow: 0 cached \+ 11 new tokens > capacity 10"):
        fed(model, features(11))


def test_weights_of_another_drafter_config_are_refused(target, tensors):
    other = CFG.replace(name="other", intermediate_size=128)
    weights = DraftWeights(other, DictSource(dict(random_draft_tensors(other))))
    with pytest.raises(ConfigError, match=r"drafter weights are for config 'other'"):
        DraftModel(CFG, weights, target, capacity=16)


def test_a_drafter_for_another_target_is_refused(tensors):
    small = preset("tiny").replace(name="tiny-3", num_layers=3, layer_kinds=("global", "swa", "global"),
                                   moe_layers=(False, True, True))
    with pytest.raises(ConfigError, match=r"target_layer_ids: \[0, 2, 3\] reach past the target's 3 layers"):
        DraftModel(CFG, DraftWeights(CFG, DictSource(tensors)), random_weights(small), capacity=16)
