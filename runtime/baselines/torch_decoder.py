"""A fair gpt-fast-style PyTorch decoder of the MiMo-V2 model: the baseline the megakernel
is measured against.

What a careful PyTorch user would write for low-latency decoding, in the manner of
gpt-fast: bf16 weights (`params.BaselineParams`), a static KV cache preallocated at load
(the shared `KVCache` layout: global layers one slot per position, sliding-window layers a
ring of ``window + 16`` slots), static shapes for a fixed T tokens per step (T = 1 decode,
T = 8 DFlash verify), and no Python branching on data and no host synchronisation inside
`step`, so a whole step can be captured once in a CUDA graph and replayed, or compiled by
torch.compile (`modes`).

How each op is done, and why it stays static:

* positions are ``pos + arange(T)`` from a device tensor; RoPE (partial, rotate-half)
  indexes cos/sin tables built at load from the reference's `rope_cos_sin` (exact angles);
* the step's K/V are written with ``index_copy_`` at ``position % slots``; attention reads
  *every* slot of the layer and masks by the position each slot holds (computed from the
  last position: ``last - ((last - slot) mod slots)``), so causality, the sliding window
  (the window as a mask on positions) and never-written slots are all one mask, as
  gpt-fast masks its whole static cache;
* attention sinks: a per-head logit appended to the scores before the softmax, its
  probability dropped (`reference.attention`);
* router: sigmoid scores, bias added for the choice only, chosen scores renormalised
  (`reference.route`, fp32); experts are gathered by index, ``w13[ids]`` / ``w2[ids]``, then
  one batched matmul each, as gpt-fast's Mixtral does;
* the step ends by writing its argmax into its own token buffer (and, with
  ``advance=True``, moving the position by T), so replaying it chains greedy steps on the
  device with no host round trip, as the megakernel chains them.

Activations: the residual stream and norms in fp32, matmul inputs in bf16 (fp32
accumulation), softmax and the router (logits, sigmoid, top-k) in fp32, as the published
MiMo code routes; logits are bf16 from the lm_head matmul, returned as fp32. Weights
loaded in fp32 (`BaselineParams.load(dtype=float32)`) make every matmul fp32: a test
mode that separates the decoder's structure from bf16 rounding.

What a step reads (`baseline_step_bytes`): every dense weight in bf16 (a checkpoint's FP8
qkv / dense MLP widened), the experts it gathers in **bf16: 16/4.25 = 3.8x (about 4x) the
MXFP4 bytes** the megakernel reads — what a user without FP4 kernels runs — and the whole
static KV cache of every layer (global layers: all `capacity` slots, not only the filled
ones). The gather takes T x top_k expert copies, repeats included; eager mode also writes
and re-reads that copy, torch.compile can fuse it into the matmul.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from tilewarp.pipeline.config import BYTES_PER, ModelConfig, attention_params, expert_params
from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.kv_cache import MAX_STEP_TOKENS, KVCache, layer_slots
from tilewarp.pipeline.reference import apply_rope, rms_norm, rope_cos_sin, route

from .params import BaselineParams, LayerParams


class TorchDecoder:
    """Steps of T tokens over a static KV cache; inputs and outputs are fixed device tensors.

    ``tokens`` (int64 [T]) and ``pos`` (int64 [1], position of the first token) are the
    static inputs: copy new values into them (or let the step's own feedback do it) and
    call `step`. `forward` does the copying for callers on the host.
    """

    def __init__(self, params: BaselineParams, cache: KVCache, *, tokens: int = 1, advance: bool = False):
        cfg = params.cfg
        if not 1 <= tokens <= MAX_STEP_TOKENS:
            raise InputError(f"tokens: a step takes 1..{MAX_STEP_TOKENS} tokens, got {tokens}")
        if cache.cfg != cfg or cache.k[0].device != params.device:
            raise InputError("the KV cache must belong to the same model and live on the weights' device")
        self.cfg, self.p, self.cache, self.T, self.advance = cfg, params, cache, tokens, advance
        self.dtype = params.dtype
        dev = params.device
        self.tokens = torch.zeros(tokens, dtype=torch.int64, device=dev)
        self.pos = torch.zeros(1, dtype=torch.int64, device=dev)
        self._offsets = torch.arange(tokens, dtype=torch.int64, device=dev)
        self._slot_ids = {n: torch.arange(n, dtype=torch.int64, device=dev)
                          for n in {cache.slots(layer) for layer in range(cfg.num_layers)}}
        table_pos = torch.arange(cache.capacity, dtype=torch.int64, device=dev)
        self._rope = {}
        for spec in (cfg.global_attn, cfg.swa_attn):
            key = (cfg.rotary_dim(spec), spec.rope_theta)
            if key not in self._rope:
                self._rope[key] = rope_cos_sin(table_pos, *key)

    # ------------------------------------------------------------------- API
    def forward(self, tokens: Sequence[int] | torch.Tensor, pos: int) -> torch.Tensor:
        """Run one step on host-given inputs (eager use and tests); returns fp32 logits [T, V]."""
        self.load(tokens, pos)
        return self.step()

    def load(self, tokens: Sequence[int] | torch.Tensor, pos: int) -> None:
        """Copy a step's inputs into the static buffers (what a CUDA-graph replay reads)."""
        ids = torch.as_tensor(tokens, dtype=torch.int64).reshape(-1)
        if ids.numel() != self.T:
            raise InputError(f"tokens: this decoder takes {self.T} tokens per step, got {ids.numel()}")
        if not 0 <= pos <= self.cache.capacity - self.T:
            raise InputError(f"pos: {pos} + {self.T} tokens does not fit the cache capacity {self.cache.capacity}")
        self.tokens.copy_(ids)
        self.pos.fill_(pos)

    def step(self) -> torch.Tensor:
        """One step over the static inputs; fp32 logits [T, V]. Static shapes, no host sync."""
        cfg = self.cfg
        positions = self.pos + self._offsets
        x = self.p.embed[self.tokens].float()
        for layer, lp in enumerate(self.p.layers):
            x = x + self._attention(layer, lp, rms_norm(x, lp.ln_attn, cfg.rms_eps), positions)
            h = rms_norm(x, lp.ln_ffn, cfg.rms_eps)
            x = x + (self._moe(lp, h) if lp.w13 is not None else self._dense(lp, h))
        logits = F.linear(rms_norm(x, self.p.norm, cfg.rms_eps).to(self.dtype), self.p.lm_head).float()
        self.tokens.copy_(logits.argmax(dim=-1))
        if self.advance:
            self.pos.add_(self.T)
        return logits

    # ------------------------------------------------------------- the ops
    def _attention(self, layer: int, lp: LayerParams, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        spec = self.cfg.attn(layer)
        t, hkv, group = self.T, spec.num_kv_heads, spec.group
        hb = h.to(self.dtype)
        q = F.linear(hb, lp.wq).view(t, spec.num_heads, spec.head_dim).float()
        k = F.linear(hb, lp.wk).view(t, hkv, spec.head_dim).float()
        v = F.linear(hb, lp.wv).view(t, hkv, spec.v_head_dim).float() * self.cfg.value_scale
        cos_t, sin_t = self._rope[(self.cfg.rotary_dim(spec), spec.rope_theta)]
        cos, sin = cos_t[positions], sin_t[positions]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        keys, values = self.cache.k[layer], self.cache.v[layer]          # [Hkv, S, D]
        n_slots = keys.shape[1]
        keys.index_copy_(1, positions % n_slots, k.transpose(0, 1).to(keys.dtype))
        values.index_copy_(1, positions % n_slots, v.transpose(0, 1).to(values.dtype))

        # The position each slot holds (negative: never written), then one mask for all rules.
        last = positions[-1:]
        k_pos = last - torch.remainder(last - self._slot_ids[n_slots], n_slots)          # [S]
        visible = (k_pos[None, :] <= positions[:, None]) & (k_pos[None, :] >= 0)       # [T, S]
        if spec.window is not None:
            visible &= k_pos[None, :] >= positions[:, None] - spec.window

        # Query head kv * group + g reads kv head kv: rows ordered (g, t) under each kv head.
        qg = q.view(t, hkv, group, spec.head_dim).permute(1, 2, 0, 3).reshape(hkv, group * t, spec.head_dim)
        scores = torch.matmul(qg.to(self.dtype), keys.transpose(1, 2).to(self.dtype)).float() * spec.head_dim ** -0.5
        scores = scores.view(hkv, group, t, n_slots).masked_fill(~visible, float("-inf"))
        if lp.sink is not None:
            sink = lp.sink.view(hkv, group, 1, 1).expand(hkv, group, t, 1)
            probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
        else:
            probs = torch.softmax(scores, dim=-1)
        probs = probs.reshape(hkv, group * t, n_slots).to(self.dtype)
        o = torch.matmul(probs, values.to(self.dtype))                                  # [Hkv, G*T, Dv]
        o = o.view(hkv, group, t, spec.v_head_dim).permute(2, 0, 1, 3).reshape(t, -1)
        return F.linear(o.to(self.dtype), lp.wo).float()

    def _dense(self, lp: LayerParams, h: torch.Tensor) -> torch.Tensor:
        gate, up, down = lp.dense
        hb = h.to(self.dtype)
        a = F.silu(F.linear(hb, gate).float()) * F.linear(hb, up).float()
        return F.linear(a.to(self.dtype), down).float()

    def _moe(self, lp: LayerParams, h: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        t, k, inter = self.T, cfg.top_k, cfg.moe_intermediate
        hb = h.to(self.dtype)
        ids, weights = route(F.linear(h, lp.router), lp.router_bias, top_k=k, n_group=cfg.n_group,
                             topk_group=cfg.topk_group, norm_topk_prob=cfg.norm_topk_prob,
                             routed_scaling=cfg.routed_scaling)
        flat = ids.reshape(-1)                                                        # [T*k]
        xk = hb[:, None, :].expand(t, k, cfg.hidden_size).reshape(t * k, cfg.hidden_size, 1)
        gu = torch.bmm(lp.w13[flat], xk).view(t * k, 2 * inter).float()              # gather, then one bmm
        a = F.silu(gu[:, :inter]) * gu[:, inter:]
        y = torch.bmm(lp.w2[flat], a.to(self.dtype).view(t * k, inter, 1)).view(t, k, cfg.hidden_size).float()
        return (y * weights[..., None]).sum(dim=1)


def baseline_step_bytes(cfg: ModelConfig, tokens: int, capacity: int) -> dict[str, float]:
    """Bytes one `TorchDecoder` step reads from device memory, by group.

    Weights as `BaselineParams` holds them (bf16; router and norms fp32), experts as
    gathered: T x top_k copies (repeats included; an L2 hit can save some), and the whole
    static KV cache (global layers: `capacity` slots; SWA layers: the whole ring). Eager
    mode's extra write and re-read of the gathered experts is not counted (torch.compile
    can fuse it away).
    """
    bf16 = BYTES_PER["bf16"]
    h = cfg.hidden_size
    groups = {"attention": 0.0, "dense_mlp": 0.0, "router": 0.0, "experts": 0.0, "kv_cache": 0.0,
              "lm_head": cfg.vocab_size * h * bf16, "embed": tokens * h * bf16, "norms": h * 4.0}
    for layer in range(cfg.num_layers):
        s = cfg.attn(layer)
        groups["attention"] += attention_params(cfg, layer) * bf16
        groups["kv_cache"] += layer_slots(cfg, layer, capacity) * s.num_kv_heads * (s.head_dim + s.v_head_dim) * bf16
        groups["norms"] += 2 * h * 4.0
        if cfg.is_moe(layer):
            groups["router"] += (cfg.num_experts * h + cfg.num_experts) * 4.0   # fp32
            groups["experts"] += tokens * cfg.top_k * expert_params(cfg) * bf16
        else:
            groups["dense_mlp"] += 3 * h * cfg.dense_intermediate * bf16
    return groups
