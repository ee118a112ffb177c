"""A trainable MiMo-V2 target that computes what ``pipeline/reference.py`` computes.

Same math, batched and differentiable; where it can, it calls the reference's own functions
(``rms_norm``, ``swiglu``, ``route``, ``attention_mask``, RoPE), so the two cannot drift:

* hybrid layers: global (causal) and sliding-window (a query sees itself + ``window``
  earlier keys) attention, each with its own head counts, head dims and RoPE theta;
* sinks (one logit per head, denominator only) on the layers whose spec has them;
* partial RoPE, rotate-half on the first ``rotary_dim`` dims; V times ``value_scale``
  right after ``v_proj``; attention scale ``qk_head_dim ** -0.5``;
* dense SwiGLU on non-MoE layers (layer 0); sigmoid router on the others: top-k of
  ``sigmoid + e_score_correction_bias``, weights the chosen *unbiased* scores renormalised,
  router math in fp32 (``reference.route``).

Training-only choices (none of them changes what the exported model computes):

* MoE is computed densely: every expert on every token, the non-chosen ones weighted by
  zero. For 16 experts of width 256 that is three large GEMMs per layer instead of 16
  gathers/scatters, far faster on a GPU, and exactly the sparse sum in value (a zero
  weight contributes zero; a non-chosen expert gets no gradient).
* The correction bias is a buffer moved aux-loss-free (DeepSeek-V3): after each step,
  ``bias += rate * sign(mean_load - load)``, raising the bias of under-used experts. No
  gradient reaches it; it only steers the choice, as in inference.
* ``expert_quant = "mxfp4"`` runs the experts through MXFP4 fake quantisation
  (straight-through), for quantisation-aware training and for comparing with the export.
* In eval mode K (after RoPE) and V (after the value scale) are rounded to bf16, as the
  reference's KV cache stores them; ``export_numerics`` also rounds every non-expert
  weight to bf16, so eval-mode outputs are the exported checkpoint's.
* Optional dropout on the attention and FFN outputs (the published model has none).
* An optional ``KVCache`` for generation (``generate.py``): new tokens run at the positions
  after the cached ones, against the cached K/V, with the masks of the full sequence, so a
  cached run computes what the uncached one computes (up to float summation order).

Parameter names mirror the checkpoint (``model.layers.L.self_attn.q_proj.weight``, ...);
experts are stacked per layer (``mlp.experts_gate`` ``[E, I, H]``) and split per expert on
export (``export.py``). Split q/k/v and bf16 attention / dense weights only (the presets'
layout); fused or FP8 layouts are refused at construction.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tilewarp.pipeline.config import ModelConfig
from tilewarp.pipeline.reference import attention_mask, rms_norm, route, swiglu

from .attention import attend, attend_one, rope, rope_tables
from .quant import fake_mxfp4

ExpertQuant = Literal["none", "mxfp4"]


@dataclass
class TargetOutput:
    logits: torch.Tensor | None                          # [B, T or 1, V] (None when not asked for)
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)   # layer -> [B, T, H], residual after it


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def round_bf16(x: torch.Tensor) -> torch.Tensor:
    """The value a bf16 store keeps, in x's dtype (differentiable: the cast's gradient is identity)."""
    return x.to(torch.bfloat16).to(x.dtype)


@dataclass
class KVCache:
    """K and V ``[B, kv_heads, capacity, dim]`` per layer, of which the first ``length`` positions are filled.

    Why: generation without a cache reruns the whole sequence for every new token, about
    ``(prompt + generated) / 2`` times the work; the drafter's self-distillation data is
    limited by exactly that generation time. Buffers of the final length are allocated once
    (no copy of the whole cache per token).
    """

    capacity: int
    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    length: int = 0

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one layer's new K/V after the ``length`` cached positions; return that layer's K/V
        of every position so far (views of the buffers)."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions cannot take {end}")
        if layer not in self.keys:
            self.keys[layer] = k.new_empty(*k.shape[:2], self.capacity, k.shape[3])
            self.values[layer] = v.new_empty(*v.shape[:2], self.capacity, v.shape[3])
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        s = cfg.attn(layer)
        h = cfg.hidden_size
        self.layer = layer
        self.spec, self.value_scale = s, cfg.value_scale
        self.rotary_dim = cfg.rotary_dim(s)
        self.q_proj = nn.Linear(h, s.num_heads * s.head_dim, bias=False)
        self.k_proj = nn.Linear(h, s.num_kv_heads * s.head_dim, bias=False)
        self.v_proj = nn.Linear(h, s.num_kv_heads * s.v_head_dim, bias=False)
        self.o_proj = nn.Linear(s.num_heads * s.v_head_dim, h, bias=False)
        if s.sink:
            self.attention_sink_bias = nn.Parameter(torch.zeros(s.num_heads))

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        s = self.spec
        b, t, _ = x.shape
        cos, sin = rope_tables(positions[None], self.rotary_dim, s.rope_theta)
        q = rope(self.q_proj(x).view(b, t, s.num_heads, s.head_dim), cos, sin)
        k = rope(self.k_proj(x).view(b, t, s.num_kv_heads, s.head_dim), cos, sin)
        v = self.v_proj(x).view(b, t, s.num_kv_heads, s.v_head_dim) * self.value_scale
        if not self.training:                       # the reference reads K/V back from a bf16 cache
            k, v = round_bf16(k), round_bf16(v)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        sink = self.attention_sink_bias if s.sink else None
        key_positions = positions
        if cache is not None:
            k, v = cache.extend(self.layer, k, v)
            key_positions = torch.arange(k.shape[2], device=x.device)
        if cache is not None and t == 1:            # a generation step: the last window + 1 keys (or all)
            keep = k.shape[2] if s.window is None else s.window + 1
            o = attend_one(q, k[:, :, -keep:], v[:, :, -keep:], sink=sink)
        elif s.window is None and key_positions.numel() == t:       # no cache before: plain causal
            o = attend(q, k, v, causal=True, sink=sink)
        else:
            o = attend(q, k, v, mask=attention_mask(positions, key_positions, s.window)[None, None], sink=sink)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, s.num_heads * s.v_head_dim))


class DenseMLP(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)


class Router(nn.Module):
    """``weight [E, H]`` (trained) and ``e_score_correction_bias [E]`` (a buffer, moved by load)."""

    def __init__(self, hidden: int, experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, hidden))
        self.register_buffer("e_score_correction_bias", torch.zeros(experts))


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        e, i, h = cfg.num_experts, cfg.moe_intermediate, cfg.hidden_size
        self.cfg = cfg
        self.gate = Router(h, e)
        self.experts_gate = nn.Parameter(torch.empty(e, i, h))
        self.experts_up = nn.Parameter(torch.empty(e, i, h))
        self.experts_down = nn.Parameter(torch.empty(e, h, i))
        self.register_buffer("load", torch.zeros(e), persistent=False)   # tokens per expert since last update
        self.expert_quant: ExpertQuant = "none"

    def expert_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ws = (self.experts_gate, self.experts_up, self.experts_down)
        if self.expert_quant == "mxfp4":
            return tuple(fake_mxfp4(w) for w in ws)   # type: ignore[return-value]
        return ws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        with torch.autocast(x.device.type, enabled=False):        # router math in fp32, as the reference
            logits = F.linear(x.float(), self.gate.weight.float())
            ids, weights = route(logits, self.gate.e_score_correction_bias, top_k=cfg.top_k, n_group=cfg.n_group,
                                 topk_group=cfg.topk_group, norm_topk_prob=cfg.norm_topk_prob,
                                 routed_scaling=cfg.routed_scaling)
        if self.training:
            self.load += torch.bincount(ids.reshape(-1), minlength=cfg.num_experts).to(self.load.dtype)
        combine = torch.zeros(x.shape[0], cfg.num_experts, dtype=weights.dtype, device=x.device)
        combine = combine.scatter(1, ids, weights)
        wg, wu, wd = self.expert_weights()
        e, i, h = wg.shape
        g = F.linear(x, wg.reshape(e * i, h)).view(-1, e, i)
        u = F.linear(x, wu.reshape(e * i, h)).view(-1, e, i)
        act = F.silu(g) * u * combine.to(g.dtype)[:, :, None]
        out = F.linear(act.reshape(-1, e * i), wd.permute(1, 0, 2).reshape(h, e * i))
        return out.view(shape)

    @torch.no_grad()
    def update_bias(self, rate: float) -> float:
        """Aux-loss-free balancing step; returns max/mean load since the last call (1 = balanced)."""
        total = float(self.load.sum())
        if total == 0:
            return 1.0
        mean = self.load.mean()
        self.gate.e_score_correction_bias += rate * torch.sign(mean - self.load)
        imbalance = float(self.load.max() / mean)
        self.load.zero_()
        return imbalance


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, dropout: float):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.mlp: nn.Module = MoE(cfg) if cfg.is_moe(layer) else DenseMLP(cfg.hidden_size, cfg.dense_intermediate)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.input_layernorm(x), positions, cache))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig, dropout: float):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, dropout) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_eps)


class TargetLM(nn.Module):
    """The MiMo-V2 target, trainable. ``forward(ids [B, T])`` runs positions ``0 .. T-1``."""

    def __init__(self, cfg: ModelConfig, *, dropout: float = 0.0):
        super().__init__()
        if cfg.fused_qkv or cfg.quant.attn_qkv != "bf16" or cfg.quant.dense_mlp != "bf16":
            raise ValueError(f"{cfg.name}: the trainer exports split bf16 attention and dense weights only")
        if any(cfg.moe_layers) and cfg.quant.experts != "mxfp4":
            raise ValueError(f"{cfg.name}: the trainer exports MXFP4 experts only")
        self.cfg = cfg
        self.model = Backbone(cfg, dropout)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.reset_parameters()

    # ---------------------------------------------------------------- setup
    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """GPT-2 style: N(0, std) everywhere, outputs into the residual scaled by 1/sqrt(2 L);
        norms 1, sinks and router bias 0 (sigmoid scores start at 0.5: balanced routing)."""
        out_std = std / math.sqrt(2 * self.cfg.num_layers)
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.fill_(1.0)
            elif name.endswith("attention_sink_bias"):
                p.zero_()
            elif name.endswith(("o_proj.weight", "down_proj.weight", "experts_down")):
                p.normal_(0.0, out_std)
            else:
                p.normal_(0.0, std)
        for m in self.moe_layers():
            m.gate.e_score_correction_bias.zero_()

    def moe_layers(self) -> list[MoE]:
        return [layer.mlp for layer in self.model.layers if isinstance(layer.mlp, MoE)]

    def set_expert_quant(self, mode: ExpertQuant) -> None:
        for m in self.moe_layers():
            m.expert_quant = mode

    def update_router_bias(self, rate: float) -> float:
        """One aux-loss-free bias step in every MoE layer; returns the worst max/mean load."""
        return max((m.update_bias(rate) for m in self.moe_layers()), default=1.0)

    def lm_head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.cfg.tie_word_embeddings else self.lm_head.weight

    # -------------------------------------------------------------- forward
    def forward(self, ids: torch.Tensor, *, return_hidden: Sequence[int] = (),
                logits: Literal["all", "last", "none"] = "all", cache: KVCache | None = None) -> TargetOutput:
        """With a ``cache``, ``ids`` run at positions ``cache.length ..`` and their K/V are appended
        (every layer runs, so the cache stays whole even when ``logits`` is ``"none"``)."""
        start = 0 if cache is None else cache.length
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.model.embed_tokens(ids).float()
        hidden: dict[int, torch.Tensor] = {}
        want = set(return_hidden)
        last = max(want) if logits == "none" and want and cache is None else len(self.model.layers) - 1
        for i, layer in enumerate(self.model.layers[:last + 1]):
            x = layer(x, positions, cache)
            if i in want:
                hidden[i] = x
        if cache is not None:
            cache.length += ids.shape[1]
        if logits == "none":
            return TargetOutput(None, hidden)
        h = self.model.norm(x[:, -1:] if logits == "last" else x)
        return TargetOutput(F.linear(h, self.lm_head_weight()), hidden)


@contextlib.contextmanager
def export_numerics(model: TargetLM) -> Iterator[TargetLM]:
    """Run ``model`` as its export computes: eval mode, every non-expert weight and the router
    bias rounded to bf16, experts MXFP4 fake-quantised. Everything is restored on exit."""
    saved = {n: t.detach().clone() for n, t in model.state_dict().items()}
    was_training = model.training
    modes = [m.expert_quant for m in model.moe_layers()]
    try:
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if ".experts_" not in name and t.is_floating_point():
                    t.copy_(round_bf16(t))
        model.set_expert_quant("mxfp4")
        model.eval()
        yield model
    finally:
        model.load_state_dict(saved)
        for m, mode in zip(model.moe_layers(), modes):
            m.expert_quant = mode
        model.train(was_training)
