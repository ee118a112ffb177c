"""Weights of the PyTorch baseline decoder, converted once at load.

A user without FP4 kernels cannot read MXFP4 experts directly, so the baseline widens
every expert to bf16 once, here, and stacks each layer's experts as ``[E, out, in]``
(gate and up fused into ``w13 [E, 2 * moe_inter, hidden]``, down as ``w2 [E, hidden,
moe_inter]``) so a step gathers its chosen experts by index, as gpt-fast's Mixtral does.
MXFP4 values are exact in bf16, so these are the reference model's expert weights
bit for bit. Dense weights come from `Weights.dense` / `Weights.qkv` (FP8 already
widened to bf16 there); norm weights and sink logits are kept in fp32, as the reference
applies them.

``dtype=torch.float32`` loads the same values widened to fp32 (the decoder then computes
in fp32): not a mode anyone would run, but it lets a test check the decoder's structure
against the reference to fp32 rounding, separately from bf16 activation error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tilewarp.pipeline import mxfp4
from tilewarp.pipeline.config import ModelConfig
from tilewarp.pipeline.tensor_specs import expert_name, layer_prefix
from tilewarp.pipeline.weights import Weights

BF16 = torch.bfloat16


@dataclass
class LayerParams:
    """One decoder layer. `dense` is set on dense-FFN layers; router and experts on MoE layers."""

    ln_attn: torch.Tensor                 # fp32 [H]
    ln_ffn: torch.Tensor                  # fp32 [H]
    wq: torch.Tensor                      # bf16 [Hq * Dqk, H]
    wk: torch.Tensor                      # bf16 [Hkv * Dqk, H]
    wv: torch.Tensor                      # bf16 [Hkv * Dv, H]
    wo: torch.Tensor                      # bf16 [H, Hq * Dv]
    sink: torch.Tensor | None             # fp32 [Hq], SWA layers with sinks
    dense: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None   # bf16 gate, up, down
    router: torch.Tensor | None = None    # fp32 [E, H]: router math is fp32 (a bf16 flip changes experts)
    router_bias: torch.Tensor | None = None   # fp32 [E], steers the choice only
    w13: torch.Tensor | None = None       # bf16 [E, 2I, H]: gate rows then up rows
    w2: torch.Tensor | None = None        # bf16 [E, H, I]


@dataclass
class BaselineParams:
    cfg: ModelConfig
    embed: torch.Tensor                   # bf16 [V, H]
    norm: torch.Tensor                    # fp32 [H]
    lm_head: torch.Tensor                 # bf16 [V, H] (the embedding itself when tied)
    layers: list[LayerParams]

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights, and so of every matmul input."""
        return self.embed.dtype

    def nbytes(self) -> int:
        """Device bytes held (a tied lm_head counted once)."""
        seen: dict[int, int] = {}
        for t in _tensors(self):
            seen[t.data_ptr()] = t.numel() * t.element_size()
        return sum(seen.values())

    @classmethod
    def load(cls, weights: Weights, device: str | torch.device = "cpu", *, dtype: torch.dtype = BF16,
             expert_chunk: int = 16) -> "BaselineParams":
        """Convert `weights` for the baseline on `device`; experts are decoded there in chunks
        of `expert_chunk` (decoding on the GPU is fast; the chunk bounds its scratch memory)."""
        if dtype not in (BF16, torch.float32):
            raise ValueError(f"dtype must be bfloat16 (the baseline) or float32 (exactness tests), got {dtype}")
        cfg, dev = weights.cfg, torch.device(device)
        to_dev = lambda t, dt=dtype: t.to(dev, dt).contiguous()
        layers = []
        for layer in range(cfg.num_layers):
            p = layer_prefix(layer)
            spec = cfg.attn(layer)
            wq, wk, wv = (to_dev(w) for w in weights.qkv(layer))
            lp = LayerParams(
                ln_attn=to_dev(weights.dense(f"{p}.input_layernorm.weight"), torch.float32),
                ln_ffn=to_dev(weights.dense(f"{p}.post_attention_layernorm.weight"), torch.float32),
                wq=wq, wk=wk, wv=wv, wo=to_dev(weights.dense(f"{p}.self_attn.o_proj.weight")),
                sink=to_dev(weights.dense(f"{p}.self_attn.attention_sink_bias"), torch.float32) if spec.sink else None)
            if cfg.is_moe(layer):
                lp.router = to_dev(weights.dense(f"{p}.mlp.gate.weight"), torch.float32)
                lp.router_bias = to_dev(weights.dense(f"{p}.mlp.gate.e_score_correction_bias"), torch.float32)
                lp.w13, lp.w2 = _stacked_experts(weights, layer, dev, dtype, expert_chunk)
            else:
                lp.dense = tuple(to_dev(weights.dense(f"{p}.mlp.{proj}_proj.weight"))
                                 for proj in ("gate", "up", "down"))
            layers.append(lp)
        embed = to_dev(weights.dense("model.embed_tokens.weight"))
        lm_head = embed if cfg.tie_word_embeddings else to_dev(weights.lm_head())
        return cls(cfg, embed, to_dev(weights.dense("model.norm.weight"), torch.float32), lm_head, layers)


def _stacked_experts(weights: Weights, layer: int, dev: torch.device, dtype: torch.dtype, chunk: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(w13 [E, 2I, H], w2 [E, H, I]) in `dtype`, decoded from MXFP4 on `dev`."""
    cfg = weights.cfg
    e, h, i = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate
    w13 = torch.empty(e, 2 * i, h, dtype=dtype, device=dev)
    w2 = torch.empty(e, h, i, dtype=dtype, device=dev)
    for e0 in range(0, e, chunk):
        ids = range(e0, min(e, e0 + chunk))
        w13[e0:e0 + len(ids), :i] = _decode(weights, layer, ids, "gate", dev)
        w13[e0:e0 + len(ids), i:] = _decode(weights, layer, ids, "up", dev)
        w2[e0:e0 + len(ids)] = _decode(weights, layer, ids, "down", dev)
    return w13, w2


def _decode(weights: Weights, layer: int, experts: range, proj: str, dev: torch.device) -> torch.Tensor:
    """Experts `experts` of one projection as bf16 ``[n, out, in]`` (exact: MXFP4 values fit bf16)."""
    if weights.cfg.quant.experts != "mxfp4":
        return torch.stack([weights.raw(expert_name(layer, e, proj)) for e in experts]).to(dev, BF16)
    parts = [weights.expert(layer, e, proj) for e in experts]
    codes = torch.stack([p.codes for p in parts]).to(dev)
    scales = torch.stack([p.scales for p in parts]).to(dev)
    return mxfp4.dequantize(codes, scales, BF16, name=expert_name(layer, experts[0], proj))


def _tensors(p: BaselineParams):
    yield from (p.embed, p.norm, p.lm_head)
    for lp in p.layers:
        for t in (lp.ln_attn, lp.ln_ffn, lp.wq, lp.wk, lp.wv, lp.wo, lp.sink, lp.router, lp.router_bias, lp.w13,
                  lp.w2, *(lp.dense or ())):
            if t is not None:
                yield t
