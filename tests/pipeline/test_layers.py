"""Each decoder layer of the reference equals a second, loop-by-loop computation from the model facts.

The prompt (30 tokens) spans two prefill chunks and wraps the 24-slot sliding-window
ring, so the cache, the window and the chunk boundary are all exercised; the hand
computation sees the whole sequence at once and has no cache.
"""

import dataclasses

import pytest
import torch

from hand_model import hand_layer, hand_rms_norm
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.tensor_specs import tensor_specs
from tilewarp.pipeline.weights import DictSource, Weights

CFG = preset("tiny")
PROMPT = torch.randint(0, CFG.vocab_size, (30,), generator=torch.Generator().manual_seed(5))
# The reference runs fp32 GEMMs, the hand code per-token products: K/V elements sitting on a
# bf16 rounding boundary may round apart (2^-8 relative), hence not 1e-6.
ATOL = RTOL = 2e-4


@pytest.fixture(scope="module")
def weights():
    return random_weights(CFG, seed=1)


@pytest.fixture(scope="module")
def prefilled(weights):
    return ReferenceModel(weights, capacity=64).prefill(PROMPT, return_hidden=range(CFG.num_layers))


def layer_input(weights, prefilled, layer: int) -> torch.Tensor:
    if layer == 0:
        return weights.dense("model.embed_tokens.weight")[PROMPT].float()
    return prefilled.hidden[layer - 1]


@pytest.mark.parametrize("layer", range(CFG.num_layers))
def test_layer_output_matches_the_hand_computation(weights, prefilled, layer):
    # 0: global + dense SwiGLU; 1, 2: sliding window 8 + sinks + MoE; 3: global + MoE
    expected, chosen = hand_layer(weights, layer, layer_input(weights, prefilled, layer))
    torch.testing.assert_close(prefilled.hidden[layer], expected, rtol=RTOL, atol=ATOL)
    if chosen is None:
        assert layer not in prefilled.router
    else:
        assert prefilled.router[layer][0].tolist() == chosen


def test_logits_are_the_final_norm_and_lm_head_of_the_last_layer(weights, prefilled):
    last = prefilled.hidden[CFG.num_layers - 1]
    expected = hand_rms_norm(last, weights.dense("model.norm.weight"), CFG.rms_eps) @ weights.lm_head().float().T
    torch.testing.assert_close(prefilled.logits, expected, rtol=1e-5, atol=1e-4)


MISREAD_FACTS = {
    "window one too wide": dict(swa_attn=dataclasses.replace(CFG.swa_attn, window=CFG.swa_attn.window + 1)),
    "window one too narrow": dict(swa_attn=dataclasses.replace(CFG.swa_attn, window=CFG.swa_attn.window - 1)),
    "no sinks": dict(swa_attn=dataclasses.replace(CFG.swa_attn, sink=False)),
    "value scale 0.7": dict(value_scale=0.7),
    "SWA theta 1.1e4": dict(swa_attn=dataclasses.replace(CFG.swa_attn, rope_theta=1.1e4)),
    "rotary factor 0.25": dict(partial_rotary_factor=0.25),
}


@pytest.mark.parametrize("misread", MISREAD_FACTS)
def test_the_tolerance_tells_apart_a_misread_model_fact(weights, prefilled, misread):
    cfg = CFG.replace(**MISREAD_FACTS[misread])
    wrong = Weights(cfg, DictSource({n: weights.raw(n) for n in tensor_specs_names(cfg)}))
    expected, _ = hand_layer(wrong, 1, layer_input(weights, prefilled, 1))
    assert not torch.allclose(prefilled.hidden[1], expected, rtol=RTOL, atol=ATOL)


def tensor_specs_names(cfg) -> list[str]:
    return [spec.name for spec in tensor_specs(cfg)]
