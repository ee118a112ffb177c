"""Attention as MiMo-V2 defines it: sliding window, sinks, value scale, partial RoPE, qk-dim scale."""

import math

import pytest
import torch

from hand_model import hand_rope
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import (ReferenceModel, apply_rope, attention, attention_mask, rms_norm,
                                         rope_cos_sin)

CFG = preset("tiny")          # layers 0, 3 global; 1, 2 SWA window 8 with sinks; qk 32 / v 16; rotary 16
WINDOW = CFG.swa_attn.window
PROMPT = torch.randint(0, CFG.vocab_size, (31,), generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def weights():
    return random_weights(CFG, seed=0)


def logits_after_perturbing(weights, layer: int, position: int) -> torch.Tensor:
    """Prefill PROMPT[:-1], add 1 to layer's cached K and V at `position`, decode the last token."""
    model = ReferenceModel(weights, capacity=64)
    model.prefill(PROMPT[:-1])
    if position >= 0:
        slot = model.cache.slot_of(layer, torch.tensor(position))
        model.cache.k[layer][:, slot] += 1.0
        model.cache.v[layer][:, slot] += 1.0
    return model.decode(int(PROMPT[-1])).logits


# ------------------------------------------------------------- which keys a query sees
@pytest.mark.parametrize("layer", [1, 2])
def test_sliding_window_query_sees_p_minus_window_but_not_one_earlier(weights, layer):
    p = len(PROMPT) - 1                        # 30: the ring (24 slots) has wrapped
    untouched = logits_after_perturbing(weights, layer, -1)
    assert not torch.equal(logits_after_perturbing(weights, layer, p - WINDOW), untouched)
    assert torch.equal(logits_after_perturbing(weights, layer, p - WINDOW - 1), untouched)


@pytest.mark.parametrize("layer", [0, 3])
def test_global_layer_sees_every_earlier_position(weights, layer):
    untouched = logits_after_perturbing(weights, layer, -1)
    for position in (0, 1, 15):
        assert not torch.equal(logits_after_perturbing(weights, layer, position), untouched)


def test_attention_mask_is_causal_and_windowed():
    q_pos, k_pos = torch.tensor([10, 11]), torch.arange(0, 12)
    mask = attention_mask(q_pos, k_pos, window=3)
    assert mask[0].nonzero().flatten().tolist() == [7, 8, 9, 10]
    assert mask[1].nonzero().flatten().tolist() == [8, 9, 10, 11]
    assert attention_mask(q_pos, k_pos, window=None)[0].nonzero().flatten().tolist() == list(range(11))


# ------------------------------------------------------------------ the softmax
def random_qkv(seed: int, tokens=3, heads=4, kv_heads=2, keys=6, dqk=32, dv=16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(tokens, heads, dqk, generator=g), torch.randn(kv_heads, keys, dqk, generator=g),
            torch.randn(kv_heads, keys, dv, generator=g))


def hand_attention(q, k, v, mask, scale, sink=None):
    """Per query and head with explicit loops: head h reads kv head h // group."""
    tokens, heads, _ = q.shape
    group = heads // k.shape[0]
    out = torch.zeros(tokens, heads, v.shape[-1], dtype=torch.float64)
    for t in range(tokens):
        for h in range(heads):
            kh, vh = k[h // group].double(), v[h // group].double()
            visible = mask[t].nonzero().flatten()
            s = (kh[visible] @ q[t, h].double()) * scale
            e = torch.exp(s)
            denom = e.sum() + (math.exp(float(sink[h])) if sink is not None else 0.0)
            out[t, h] = (e[:, None] * vh[visible]).sum(0) / denom
    return out.float()


def test_attention_scale_uses_the_qk_head_dim_not_the_v_dim():
    q, k, v = random_qkv(0)                     # qk 32, v 16
    mask = attention_mask(torch.tensor([3, 4, 5]), torch.arange(6), None)
    expected = hand_attention(q, k, v, mask, scale=32 ** -0.5)
    torch.testing.assert_close(attention(q, k, v, mask), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(attention(q, k, v, mask), hand_attention(q, k, v, mask, scale=16 ** -0.5),
                              atol=1e-3)


def test_sink_only_enlarges_the_softmax_denominator():
    q, k, v = random_qkv(1)
    mask = attention_mask(torch.tensor([3, 4, 5]), torch.arange(6), window=2)
    sink = torch.tensor([0.5, -1.0, 2.0, 0.0])
    without = attention(q, k, v, mask)
    with_sink = attention(q, k, v, mask, sink=sink)
    # output_with = output_without * Z / (Z + exp(sink)), Z = sum of exp(scores) over visible keys
    scores = torch.einsum("thd,hnd->thn", q, k.repeat_interleave(2, dim=0)) * 32 ** -0.5
    z = (scores.exp() * mask[:, None, :]).sum(-1, keepdim=True)
    expected = without * z / (z + sink.exp()[None, :, None])
    torch.testing.assert_close(with_sink, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(with_sink, hand_attention(q, k, v, mask, 32 ** -0.5, sink), rtol=1e-5, atol=1e-6)


def test_sink_at_minus_infinity_is_no_sink():
    q, k, v = random_qkv(2)
    mask = attention_mask(torch.tensor([5, 6, 7]), torch.arange(2, 8), window=3)
    torch.testing.assert_close(attention(q, k, v, mask, sink=torch.full((4,), float("-inf"))),
                               attention(q, k, v, mask), rtol=1e-6, atol=0)


def test_grouped_query_heads_share_their_kv_head():
    q, k, v = random_qkv(3, heads=4, kv_heads=2)
    q[:, 1] = q[:, 0]                            # heads 0, 1 share kv head 0; head 2 reads kv head 1
    q[:, 2] = q[:, 0]
    mask = attention_mask(torch.tensor([3, 4, 5]), torch.arange(6), None)
    out = attention(q, k, v, mask)
    assert torch.equal(out[:, 0], out[:, 1])
    assert not torch.allclose(out[:, 0], out[:, 2])


# ------------------------------------------------------------------ partial RoPE
@pytest.mark.parametrize("theta", [1e4, 5e6])
def test_partial_rope_rotates_rotate_half_pairs_of_the_first_rotary_dims(theta):
    positions = torch.tensor([0, 1, 7, 300])
    x = torch.randn(4, 3, 32, generator=torch.Generator().manual_seed(4))
    cos, sin = rope_cos_sin(positions, rotary_dim=16, theta=theta)
    rotated = apply_rope(x, cos, sin)
    for t, pos in enumerate(positions.tolist()):
        torch.testing.assert_close(rotated[t], hand_rope(x[t], pos, 16, theta), rtol=1e-6, atol=1e-6)
    assert torch.equal(rotated[:, :, 16:], x[:, :, 16:])      # the pass-through dims are untouched
    assert torch.equal(rotated[0], x[0])                      # position 0 is the identity


def test_rope_scores_depend_only_on_the_position_difference():
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(1, 1, 32, generator=g), torch.randn(1, 1, 32, generator=g)

    def score(qp: int, kp: int) -> float:
        rq = apply_rope(q, *rope_cos_sin(torch.tensor([qp]), 16, 1e4))
        rk = apply_rope(k, *rope_cos_sin(torch.tensor([kp]), 16, 1e4))
        return float((rq * rk).sum())

    assert math.isclose(score(10, 3), score(107, 100), rel_tol=1e-5)
    assert not math.isclose(score(10, 3), score(10, 4), rel_tol=1e-3)


def test_mimo_rotary_dim_is_the_first_64_of_192():
    cfg = preset("mimo-v2-flash")
    assert cfg.rotary_dim(cfg.swa_attn) == cfg.rotary_dim(cfg.global_attn) == 64


# ----------------------------------------------------------------- what the cache holds
def layer0_projections(weights, token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K, V of layer 0 for one token, before RoPE / value scale (layer 0 input = its embedding)."""
    x = rms_norm(weights.dense("model.embed_tokens.weight")[token].float(),
                 weights.dense("model.layers.0.input_layernorm.weight"), CFG.rms_eps)
    _, wk, wv = weights.qkv(0)
    return x @ wk.float().T, x @ wv.float().T


def test_cache_holds_v_times_the_value_scale_in_bf16(weights):
    model = ReferenceModel(weights, capacity=32)
    model.prefill(PROMPT[:6])
    for pos in (0, 5):
        _, v = layer0_projections(weights, int(PROMPT[pos]))
        expected = (v * CFG.value_scale).view(CFG.global_attn.num_kv_heads, -1).to(torch.bfloat16)
        assert torch.equal(model.cache.v[0][:, pos], expected)
    unscaled = layer0_projections(weights, int(PROMPT[0]))[1].view(1, -1).to(torch.bfloat16)
    assert not torch.equal(model.cache.v[0][:, 0], unscaled)


def test_cache_holds_k_after_partial_rope_in_bf16(weights):
    model = ReferenceModel(weights, capacity=32)
    model.prefill(PROMPT[:6])
    for pos in (0, 5):
        k, _ = layer0_projections(weights, int(PROMPT[pos]))
        k = k.view(CFG.global_attn.num_kv_heads, CFG.global_attn.head_dim)
        expected = hand_rope(k, pos, CFG.rotary_dim(CFG.global_attn), CFG.global_attn.rope_theta)
        torch.testing.assert_close(model.cache.k[0][:, pos].float(), expected.to(torch.bfloat16).float(),
                                   rtol=2 ** -7, atol=1e-6)


def test_swa_layers_store_position_p_in_ring_slot_p_mod_slots(weights):
    model = ReferenceModel(weights, capacity=64)
    hidden0 = model.prefill(PROMPT[:30], return_hidden=[0]).hidden[0]
    slots = WINDOW + 16
    assert model.cache.slots(1) == slots and model.cache.slots(0) == 64
    spec = CFG.swa_attn
    _, wk, _ = weights.qkv(1)
    x = rms_norm(hidden0, weights.dense("model.layers.1.input_layernorm.weight"), CFG.rms_eps)
    for pos in (10, 29):                         # 29 wrapped into slot 5, over position 5
        k = (x[pos] @ wk.float().T).view(spec.num_kv_heads, spec.head_dim)
        expected = hand_rope(k, pos, CFG.rotary_dim(spec), spec.rope_theta).to(torch.bfloat16).float()
        torch.testing.assert_close(model.cache.k[1][:, pos % slots].float(), expected, rtol=2 ** -7, atol=1e-6)
