"""Experts: MXFP4 weights decode to exactly the values the FFN uses; the MoE sum is routing-weighted."""

import torch

from hand_model import hand_dequantize
from tilewarp.pipeline.config import QuantSpec
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel, moe, swiglu
from tilewarp.pipeline.weights import DictSource, Weights

CFG = preset("tiny")
PROMPT = torch.randint(0, CFG.vocab_size, (20,), generator=torch.Generator().manual_seed(11))


def test_hand_decoder_reads_the_low_nibble_as_the_even_input_index():
    codes = torch.zeros(1, 16, dtype=torch.uint8)
    codes[0, 0], codes[0, 1] = 0x21, 0xF9        # (0.5, 1.0), (-0.5, -6)
    scales = torch.tensor([[128]], dtype=torch.uint8)   # x 2
    assert hand_dequantize(codes, scales)[0, :5].tolist() == [1.0, 2.0, -1.0, -12.0, 0.0]


def with_dequantised_experts(weights: Weights) -> Weights:
    """The same model with every expert stored as bf16 holding its decoded MXFP4 values."""
    cfg = weights.cfg.replace(quant=QuantSpec(experts="bf16"))
    tensors = {}
    for name, spec in weights.specs.items():
        if spec.codec == "mxfp4":
            w = hand_dequantize(weights.raw(name), weights.raw(name.removesuffix(".weight") + ".weight_scale"))
            assert torch.equal(w.to(torch.bfloat16).float(), w), "E2M1 x 2^k must be exact in bf16"
            tensors[name] = w.to(torch.bfloat16)
        elif spec.codec != "mxfp4_scale":
            tensors[name] = weights.raw(name)
    return Weights(cfg, DictSource(tensors), where="dequantised tiny")


def test_mxfp4_experts_compute_exactly_what_dequantised_experts_compute():
    weights = random_weights(CFG, seed=3)
    quantised = ReferenceModel(weights, capacity=64).prefill(PROMPT)
    plain = ReferenceModel(with_dequantised_experts(weights), capacity=64).prefill(PROMPT)
    assert torch.equal(quantised.logits, plain.logits)
    for layer in (1, 2, 3):
        assert torch.equal(quantised.router[layer][0], plain.router[layer][0])


def test_corrupting_one_expert_code_changes_the_tokens_routed_to_it():
    weights = random_weights(CFG, seed=3)
    out = ReferenceModel(weights, capacity=64).prefill(PROMPT)
    layer, expert = 2, int(out.router[2][0][0, 0])
    name = f"model.layers.{layer}.mlp.experts.{expert}.down_proj.weight"
    tensors = {n: weights.raw(n).clone() for n in weights.specs}
    tensors[name][:, 0] ^= 0x07                    # flip the low nibble (even input index) of column 0
    corrupted = ReferenceModel(Weights(CFG, DictSource(tensors)), capacity=64).prefill(PROMPT)
    assert not torch.equal(out.logits[0], corrupted.logits[0])


def test_moe_is_the_router_weighted_sum_of_each_tokens_experts():
    g = torch.Generator().manual_seed(0)
    hidden, inter, n_exp = 16, 8, 5
    experts = [(torch.randn(inter, hidden, generator=g), torch.randn(inter, hidden, generator=g),
                torch.randn(hidden, inter, generator=g)) for _ in range(n_exp)]
    x = torch.randn(4, hidden, generator=g)
    ids = torch.tensor([[0, 3], [3, 1], [4, 0], [2, 3]])
    weights = torch.rand(4, 2, generator=g)
    expected = torch.stack([sum(weights[t, j] * swiglu(x[t:t + 1], *experts[int(ids[t, j])])[0] for j in range(2))
                            for t in range(4)])
    torch.testing.assert_close(moe(x, ids, weights, lambda e: experts[e]), expected, rtol=1e-5, atol=1e-5)


def test_swiglu_is_down_of_silu_gate_times_up():
    g = torch.Generator().manual_seed(1)
    x, gate, up, down = (torch.randn(*s, generator=g) for s in ((3, 6), (4, 6), (4, 6), (6, 4)))
    a = x @ gate.T
    torch.testing.assert_close(swiglu(x, gate, up, down), (a * torch.sigmoid(a) * (x @ up.T)) @ down.T)
