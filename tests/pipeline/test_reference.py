"""The reference model: prefill, decode and verify agree; rollback is exact; bad input is refused.

The 40-token prompt is longer than the 24-slot sliding-window ring of the tiny model, so
every comparison below also runs across a ring wrap and across prefill chunk boundaries.
"""

import re

import numpy as np
import pytest
import torch

from tilewarp.pipeline.config import QuantSpec
from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.kv_cache import MAX_STEP_TOKENS
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel, StepOutput, rms_norm

CFG = preset("tiny")
RING = CFG.swa_attn.window + MAX_STEP_TOKENS             # 24 slots
PROMPT = torch.randint(0, CFG.vocab_size, (40,), generator=torch.Generator().manual_seed(0)).tolist()
BLOCK = torch.randint(0, CFG.vocab_size, (8,), generator=torch.Generator().manual_seed(1)).tolist()
OTHER_BLOCK = torch.randint(0, CFG.vocab_size, (8,), generator=torch.Generator().manual_seed(2)).tolist()

# Different paths run fp32 GEMMs of different shapes, whose results differ in the last bit;
# a K/V element on a bf16 rounding boundary then lands one bf16 step (2^-8) apart in the
# cache. Max |difference| / max |logit|, 30 seeds x 64 tokens: median 1.7e-5, worst 4.4e-4
# (1e-6 with an fp32 cache); 1.9e-4 for the prompt below. Same shapes are bit-identical.
LOGIT_RTOL = 1e-3


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def weights():
    return random_weights(CFG, seed=0)


@pytest.fixture(scope="module")
def prefill_logits(weights) -> torch.Tensor:
    return ReferenceModel(weights, capacity=128).prefill(PROMPT).logits


def new_model(weights, capacity: int = 128) -> ReferenceModel:
    return ReferenceModel(weights, capacity=capacity)


# ------------------------------------------------------------ the three paths agree
def test_prefill_logits_equal_token_by_token_decode(weights, prefill_logits):
    model = new_model(weights)
    decoded = torch.cat([model.decode(token).logits for token in PROMPT])
    assert decoded.shape == (len(PROMPT), CFG.vocab_size) and decoded.dtype == torch.float32
    assert relative_error(decoded, prefill_logits) < LOGIT_RTOL
    assert torch.equal(decoded.argmax(-1), prefill_logits.argmax(-1))


def test_prefill_logits_equal_verify_blocks_of_8(weights, prefill_logits):
    model = new_model(weights)
    verified = torch.cat([model.verify(PROMPT[i:i + 8]).logits for i in range(0, len(PROMPT), 8)])
    assert relative_error(verified, prefill_logits) < LOGIT_RTOL
    assert torch.equal(verified.argmax(-1), prefill_logits.argmax(-1))


def test_greedy_continuation_is_the_same_by_decode_and_by_one_prefill(weights):
    model = new_model(weights)
    token = int(model.prefill(PROMPT).logits[-1].argmax())
    generated = [token]
    for _ in range(23):
        token = int(model.decode(token).logits[0].argmax())
        generated.append(token)
    replay = new_model(weights).prefill(PROMPT + generated[:-1]).logits[len(PROMPT) - 1:]
    assert replay.argmax(-1).tolist() == generated


def test_published_storage_layout_runs_the_same_way():
    # Fused per-kv-head qkv in FP8, FP8 dense MLP, tied embeddings: only Weights sees the layout.
    cfg = CFG.replace(fused_qkv=True, tie_word_embeddings=True,
                      quant=QuantSpec(experts="mxfp4", attn_qkv="fp8", dense_mlp="fp8"))
    weights = random_weights(cfg, seed=4)
    whole = ReferenceModel(weights, capacity=64).prefill(PROMPT[:20]).logits
    model = ReferenceModel(weights, capacity=64)
    stepped = torch.cat([model.decode(token).logits for token in PROMPT[:20]])
    assert relative_error(stepped, whole) < LOGIT_RTOL


def test_position_counts_committed_tokens(weights):
    model = new_model(weights)
    assert model.position == 0
    model.prefill(PROMPT[:5])
    model.decode(3)
    model.verify(BLOCK)
    assert model.position == 5 + 1 + 8 == model.cache.length


def test_same_inputs_give_bit_identical_outputs(weights, prefill_logits):
    assert torch.equal(new_model(weights).prefill(PROMPT).logits, prefill_logits)


def test_evicting_dequantised_experts_changes_nothing(weights, prefill_logits):
    starved = ReferenceModel(weights, capacity=128, expert_cache_bytes=1)   # keeps one expert at a time
    assert torch.equal(starved.prefill(PROMPT).logits, prefill_logits)


# --------------------------------------------------------------------- rollback
def test_truncate_then_reverify_reproduces_the_logits_across_a_ring_wrap(weights):
    model = new_model(weights)
    model.prefill(PROMPT[:30])                      # ring of 24 has wrapped; the block writes slots 6..13
    first = model.verify(BLOCK)
    model.truncate(30)
    model.verify(OTHER_BLOCK)                       # rejected speculation overwrites the same slots
    model.truncate(30)
    again = model.verify(BLOCK)
    assert torch.equal(again.logits, first.logits)
    assert model.position == 38


def test_partial_acceptance_continues_as_if_only_the_accepted_tokens_were_seen(weights):
    speculative = new_model(weights)
    speculative.prefill(PROMPT)
    speculative.verify(BLOCK)
    speculative.truncate(len(PROMPT) + 3)           # 3 accepted, 5 rejected
    after_rollback = speculative.verify(OTHER_BLOCK).logits

    exact = new_model(weights)
    exact.prefill(PROMPT)
    exact.verify(BLOCK[:3])
    assert relative_error(after_rollback, exact.verify(OTHER_BLOCK).logits) < LOGIT_RTOL


def test_rollback_of_a_full_step_is_allowed_but_deeper_is_refused(weights):
    model = new_model(weights)
    model.prefill(PROMPT)                           # furthest position written: 39
    model.truncate(len(PROMPT) - MAX_STEP_TOKENS)   # the ring still holds every key position 24 needs
    with pytest.raises(InputError, match="length.*overwritten"):
        model.truncate(len(PROMPT) - MAX_STEP_TOKENS - 1)
    assert model.position == len(PROMPT) - MAX_STEP_TOKENS


def test_rollback_within_the_ring_is_always_allowed(weights):
    model = new_model(weights)
    model.prefill(PROMPT[:RING])                    # nothing overwritten yet
    model.truncate(0)
    assert torch.equal(model.prefill(PROMPT).logits, new_model(weights).prefill(PROMPT).logits)


def test_truncate_beyond_the_length_is_refused(weights):
    model = new_model(weights)
    model.prefill(PROMPT[:5])
    for bad in (6, -1):
        with pytest.raises(InputError, match="length"):
            model.truncate(bad)
    assert model.position == 5


@pytest.mark.parametrize("bad", [True, 2.0, "2", None])
def test_truncate_to_a_length_that_is_not_an_int_is_refused(weights, bad):
    """Any integer type is a length (numpy's too); a bool, float or string is not."""
    model = new_model(weights)
    model.prefill(PROMPT[:5])
    with pytest.raises(InputError, match=rf"length: must be an int, got {re.escape(repr(bad))}"):
        model.truncate(bad)
    model.truncate(np.int64(3))
    assert model.position == 3


def test_reset_forgets_everything(weights, prefill_logits):
    model = new_model(weights)
    model.prefill(OTHER_BLOCK * 6)
    model.reset()
    assert model.position == 0
    assert torch.equal(model.prefill(PROMPT).logits, prefill_logits)


# ------------------------------------------------------------ hidden states, router
def test_return_hidden_gives_exactly_the_requested_layers(weights):
    out = new_model(weights).prefill(PROMPT, return_hidden=[0, 2])
    assert set(out.hidden) == {0, 2}
    assert all(h.shape == (len(PROMPT), CFG.hidden_size) and h.dtype == torch.float32 for h in out.hidden.values())
    assert new_model(weights).decode(5).hidden == {}


def test_last_hidden_through_final_norm_and_lm_head_is_the_logits(weights):
    last = CFG.num_layers - 1
    out = new_model(weights).verify(BLOCK, return_hidden=[last])
    expected = rms_norm(out.hidden[last], weights.dense("model.norm.weight"), CFG.rms_eps) @ weights.lm_head().float().T
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)


def test_hidden_states_agree_between_prefill_and_decode(weights):
    whole = new_model(weights).prefill(PROMPT, return_hidden=[0, 3]).hidden
    model = new_model(weights)
    steps = [model.decode(token, return_hidden=[0, 3]).hidden for token in PROMPT]
    for layer in (0, 3):
        assert relative_error(torch.cat([s[layer] for s in steps]), whole[layer]) < LOGIT_RTOL


def test_router_reports_every_moe_layer_and_no_dense_one(weights):
    out = new_model(weights).prefill(PROMPT)
    assert set(out.router) == {layer for layer in range(CFG.num_layers) if CFG.is_moe(layer)} == {1, 2, 3}
    for ids, w in out.router.values():
        assert ids.shape == w.shape == (len(PROMPT), CFG.top_k)
        assert all(len(set(row)) == CFG.top_k for row in ids.tolist())
        assert ((0 <= ids) & (ids < CFG.num_experts)).all()
        torch.testing.assert_close(w.sum(-1), torch.full((len(PROMPT),), CFG.routed_scaling))


def test_step_output_is_the_documented_dataclass(weights):
    out = new_model(weights).decode(1)
    assert isinstance(out, StepOutput) and out.logits.shape == (1, CFG.vocab_size)


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad_id, index", [(CFG.vocab_size, 2), (-1, 0)])
def test_prefill_refuses_out_of_range_ids_naming_the_id_and_index(weights, bad_id, index):
    ids = [1, 2, 3, 4]
    ids[index] = bad_id
    with pytest.raises(InputError, match=rf"ids: token id {bad_id} at index {index} is out of range"):
        new_model(weights).prefill(ids)
    with pytest.raises(InputError, match=rf"ids: token id {bad_id} at index {index}"):
        new_model(weights).prefill(torch.tensor(ids))


def test_decode_and_verify_refuse_out_of_range_ids(weights):
    model = new_model(weights)
    with pytest.raises(InputError, match=rf"token: token id {CFG.vocab_size}"):
        model.decode(CFG.vocab_size)
    with pytest.raises(InputError, match=r"tokens: token id -5 at index 1"):
        model.verify([1, -5])
    assert model.position == 0


@pytest.mark.parametrize("ids", [[], torch.tensor([], dtype=torch.int64)])
def test_empty_input_is_refused(weights, ids):
    with pytest.raises(InputError, match="ids: empty"):
        new_model(weights).prefill(ids)
    with pytest.raises(InputError, match="tokens: empty"):
        new_model(weights).verify(ids)


@pytest.mark.parametrize("ids", [[1, 2.5], torch.tensor([1.0, 2.0]), [True, 1], "abc",
                                 torch.zeros(2, 2, dtype=torch.int64)])
def test_non_integer_ids_are_refused(weights, ids):
    with pytest.raises(InputError, match="ids"):
        new_model(weights).prefill(ids)


def test_verify_takes_at_most_16_tokens(weights):
    model = new_model(weights)
    model.verify(PROMPT[:MAX_STEP_TOKENS])
    with pytest.raises(InputError, match=rf"tokens: verify takes at most {MAX_STEP_TOKENS} tokens.*got 17"):
        model.verify(PROMPT[:17])


def test_context_overflow_is_refused_naming_the_lengths(weights):
    model = new_model(weights, capacity=16)
    with pytest.raises(InputError, match=r"ids: context overflow: 0 cached \+ 17 new tokens > capacity 16"):
        model.prefill(PROMPT[:17])
    assert model.position == 0                      # nothing was half-written
    model.prefill(PROMPT[:12])
    with pytest.raises(InputError, match=r"tokens: context overflow: 12 cached \+ 5 new"):
        model.verify(PROMPT[:5])
    model.verify(PROMPT[:4])
    with pytest.raises(InputError, match=r"token: context overflow: 16 cached \+ 1 new"):
        model.decode(1)


def test_return_hidden_outside_the_layers_is_refused(weights):
    with pytest.raises(InputError, match="return_hidden: layer 4"):
        new_model(weights).prefill(PROMPT[:3], return_hidden=[0, CFG.num_layers])


def test_capacity_beyond_max_position_is_refused(weights):
    with pytest.raises(InputError, match="capacity"):
        ReferenceModel(weights, capacity=CFG.max_position + 1)


# ------------------------------------------------------------------------ devices
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_reference_matches_the_cpu_reference(weights, prefill_logits):
    on_gpu = ReferenceModel(weights, capacity=128, device="cuda").prefill(PROMPT).logits
    assert on_gpu.device.type == "cuda"
    assert relative_error(on_gpu.cpu(), prefill_logits) < LOGIT_RTOL
