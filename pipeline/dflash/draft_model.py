"""The DFlash drafter, written plainly from ``shared/MODEL_FACTS.md`` ("DFlash").

Context: for each committed token the target's hidden states at ``target_layer_ids``
(the output of decoder layer k) are concatenated, projected by ``fc`` (K*H -> H, no bias)
and RMS-normed (``hidden_norm``) into one context vector. In every draft layer the context
vector goes through that layer's own k/v projections, k-norm and RoPE at the token's
position, and is cached (``DraftKVCache``): only context K/V persist between steps.

Block: ``[anchor, MASK x (B-1)]`` at positions ``a .. a+B-1`` where ``a`` = context length
(the anchor is the last committed token, not yet in either cache). The anchor's input is
the target's embedding row, every MASK slot the drafter's learned ``mask_embedding``.
Each draft layer::

    h = rms_norm(x);  q = rope(q_norm(q_proj h));  K/V = [context K/V in window ; rope(k_norm(k_proj h)), v_proj h]
    x = x + o_proj(attention(q, K, V))           # non-causal inside the block, + sinks
    x = x + swiglu(rms_norm(x))                  # dense SwiGLU MLP

then the final ``norm`` and the *target's* lm_head. Row i of the logits is the drafter's
distribution for the token at position a + i (rows 1..B-1 are the proposals; row 0 is
computed, as the block is one unit, and unused).

Choices (documented in ``config.py`` too):
* q_norm / k_norm: RMSNorm per head over head_dim, weight ``[head_dim]``, before RoPE, for
  block and context keys alike (the DFlash reference drafter is Qwen3 attention, which has them).
* RoPE: rotate-half on the first ``head_dim * partial_rotary_factor`` dims, like the target.
* window: every block query sees the same context keys, the ``window`` positions
  ``a-window .. a-1`` (the anchor "sees itself plus ``window`` earlier tokens", the
  target's counting), plus all B block keys. Per-query windows (the HF DFlash mask) would
  differ only in the oldest B context tokens; one key set per block keeps the block a unit.
* sinks: one logit per query head in the softmax denominator (``reference.attention``).
* block K/V are rounded to bf16 before attention, as the context K/V are by the cache, so
  the block's own keys are read at the precision every executor stores them in.
* fp32 activations, bf16 weights upcast to fp32 once at construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError, int_arg
from ..kv_cache import MAX_STEP_TOKENS
from ..reference import apply_rope, attention, rms_norm, rope_cos_sin, swiglu
from ..weights import Weights
from .config import DraftConfig
from .kv_cache import DraftKVCache
from .tensor_specs import draft_layer_prefix
from .weights import DraftWeights


@dataclass
class DraftOutput:
    """One draft pass over a block anchored at ``position``."""

    logits: torch.Tensor     # [B, vocab] fp32; row i: the token at position + i
    hidden: torch.Tensor     # [B, hidden] fp32, after the final norm
    anchor: int
    position: int

    @property
    def proposal_logits(self) -> torch.Tensor:
        """``[B-1, vocab]``: the drafter's distributions for positions position+1 .. position+B-1."""
        return self.logits[1:]


class DraftModel:
    """DFlash draft passes over a context-only KV cache: append_context, propose, truncate."""

    def __init__(self, dcfg: DraftConfig, weights: DraftWeights, target: Weights, *, capacity: int,
                 device: str | torch.device = "cpu"):
        dcfg.check_target(target.cfg)
        if weights.cfg != dcfg:
            raise ConfigError(f"drafter weights are for config {weights.cfg.name!r}, which differs from the "
                              f"DraftConfig {dcfg.name!r} given")
        self.cfg = dcfg
        self.weights = weights
        self.target = target
        self.device = torch.device(device)
        self.cache = DraftKVCache(dcfg, capacity, self.device)
        # Every tensor is read (and value-checked) here: a bad drafter fails at load, not mid-request.
        self._p = {name: weights.get(name).to(self.device, torch.float32) for name in weights.specs}
        self._embed = target.dense("model.embed_tokens.weight")     # bf16; only anchor rows are widened
        self._lm_head = target.lm_head().to(self.device, torch.float32)

    # ------------------------------------------------------------------- API
    @property
    def context_length(self) -> int:
        """Context tokens cached = the position of the next anchor."""
        return self.cache.length

    @property
    def capacity(self) -> int:
        return self.cache.capacity

    @property
    def block_size(self) -> int:
        return self.cfg.block_size

    def append_context(self, hidden: Mapping[int, torch.Tensor], positions: Sequence[int] | torch.Tensor) -> None:
        """Turn committed tokens' target hidden states into context K/V in every draft layer.

        ``hidden[k]`` is ``[T, hidden]``, the output of target layer k for each token, for every
        k in ``target_layer_ids``; ``positions`` are the tokens' positions, which must continue
        the context (``context_length .. context_length + T - 1``).
        """
        feats = self._features(hidden)
        pos = self._positions(positions, feats.shape[0])
        self.cache.check_room(pos.numel())
        for rows in torch.arange(pos.numel()).split(MAX_STEP_TOKENS):
            chunk = pos[rows]
            ctx = self.context_vectors(feats[rows])
            cos, sin = self._rope(chunk)
            for layer in range(self.cfg.num_layers):
                k, v = self._kv(layer, ctx, cos, sin)
                self.cache.write(layer, chunk, k, v)
            self.cache.commit(chunk)

    def propose(self, anchor: int, position: int) -> DraftOutput:
        """One draft pass over ``[anchor, MASK x (B-1)]`` at ``position ..``; the cache is unchanged."""
        anchor = int_arg("anchor", anchor)
        position = int_arg("position", position)
        if not 0 <= anchor < self.cfg.vocab_size:
            raise InputError(f"anchor: token id {anchor} is out of range [0, vocab_size={self.cfg.vocab_size})")
        if position != self.context_length:
            raise InputError(f"position: the block must start right after the context ({self.context_length} "
                             f"tokens), got position {position}")
        cfg, b = self.cfg, self.cfg.block_size
        block_pos = torch.arange(position, position + b, device=self.device)
        ctx_pos = self.cache.visible(position)
        cos, sin = self._rope(block_pos)
        x = self.block_embeddings(anchor)
        for layer in range(cfg.num_layers):
            p = draft_layer_prefix(layer)
            x = x + self._attention(layer, rms_norm(x, self._p[f"{p}.input_layernorm.weight"], cfg.rms_eps),
                                    ctx_pos, cos, sin)
            x = x + swiglu(rms_norm(x, self._p[f"{p}.post_attention_layernorm.weight"], cfg.rms_eps),
                           self._p[f"{p}.mlp.gate_proj.weight"], self._p[f"{p}.mlp.up_proj.weight"],
                           self._p[f"{p}.mlp.down_proj.weight"])
        hidden = rms_norm(x, self._p["norm.weight"], cfg.rms_eps)
        return DraftOutput(logits=F.linear(hidden, self._lm_head), hidden=hidden, anchor=anchor, position=position)

    def truncate(self, length: int) -> None:
        """Roll the context back to ``length`` tokens (drop rejected tokens' context)."""
        self.cache.truncate(length)

    def reset(self) -> None:
        self.cache.reset()

    # ------------------------------------------------------------ pieces
    def context_vectors(self, features: torch.Tensor) -> torch.Tensor:
        """``[T, K*H]`` concatenated target hidden states -> ``[T, H]`` context vectors."""
        return rms_norm(F.linear(features, self._p["fc.weight"]), self._p["hidden_norm.weight"], self.cfg.rms_eps)

    def block_embeddings(self, anchor: int) -> torch.Tensor:
        """``[B, H]`` block input: the target's embedding of the anchor, then the MASK embedding."""
        x = self._p["mask_embedding"].expand(self.cfg.block_size, -1).clone()
        x[0] = self._embed[anchor].to(self.device, torch.float32)
        return x

    def _attention(self, layer: int, h: torch.Tensor, ctx_pos: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor) -> torch.Tensor:
        cfg, p = self.cfg, draft_layer_prefix(layer) + ".self_attn"
        b = h.shape[0]
        q = F.linear(h, self._p[f"{p}.q_proj.weight"]).view(b, cfg.num_heads, cfg.head_dim)
        q = apply_rope(rms_norm(q, self._p[f"{p}.q_norm.weight"], cfg.rms_eps), cos, sin)
        k_blk, v_blk = self._kv(layer, h, cos, sin)
        k_ctx, v_ctx = self.cache.read(layer, ctx_pos)
        keys = torch.cat([k_ctx, k_blk.transpose(0, 1).to(torch.bfloat16).float()], dim=1)
        values = torch.cat([v_ctx, v_blk.transpose(0, 1).to(torch.bfloat16).float()], dim=1)
        visible = torch.ones(b, keys.shape[1], dtype=torch.bool, device=self.device)   # non-causal, window in ctx_pos
        sink = self._p[f"{p}.attention_sink_bias"] if cfg.sink else None
        o = attention(q, keys, values, visible, sink=sink)
        return F.linear(o.reshape(b, -1), self._p[f"{p}.o_proj.weight"])

    def _kv(self, layer: int, x: torch.Tensor, cos: torch.Tensor,
            sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K (k-norm, RoPE) and V (value-scaled), ``[T, kv_heads, head_dim]``, of inputs ``x [T, H]``."""
        cfg, p = self.cfg, draft_layer_prefix(layer) + ".self_attn"
        t = x.shape[0]
        k = F.linear(x, self._p[f"{p}.k_proj.weight"]).view(t, cfg.num_kv_heads, cfg.head_dim)
        k = apply_rope(rms_norm(k, self._p[f"{p}.k_norm.weight"], cfg.rms_eps), cos, sin)
        v = F.linear(x, self._p[f"{p}.v_proj.weight"]).view(t, cfg.num_kv_heads, cfg.head_dim) * cfg.value_scale
        return k, v

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_cos_sin(positions.to(self.device), self.cfg.rotary_dim, self.cfg.rope_theta)

    # ------------------------------------------------------------ checks
    def _features(self, hidden: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """The K target layers' hidden states, checked and concatenated: ``[T, K*H]`` fp32."""
        ids = self.cfg.target_layer_ids
        if not isinstance(hidden, Mapping) or set(hidden) != set(ids):
            got = sorted(hidden) if isinstance(hidden, Mapping) else type(hidden).__name__
            raise InputError(f"hidden: need the outputs of target layers {list(ids)}, got {got}")
        rows = {tuple(hidden[k].shape) for k in ids}
        if len(rows) != 1 or any(len(r) != 2 or r[1] != self.cfg.hidden_size for r in rows):
            raise InputError(f"hidden: each layer's states must be [T, hidden={self.cfg.hidden_size}] with one T, "
                             f"got shapes {sorted(rows)}")
        return torch.cat([hidden[k].to(self.device, torch.float32) for k in ids], dim=-1)

    def _positions(self, positions: Sequence[int] | torch.Tensor, tokens: int) -> torch.Tensor:
        pos = torch.as_tensor(positions, dtype=torch.int64).reshape(-1).cpu()
        start = self.context_length
        if pos.numel() != tokens or tokens == 0:
            raise InputError(f"positions: {pos.numel()} positions for {tokens} tokens of hidden states (need >= 1)")
        if not torch.equal(pos, torch.arange(start, start + tokens)):
            raise InputError(f"positions: must continue the context at {start} .. {start + tokens - 1}, "
                             f"got {pos.tolist()[:4]}{' ...' if tokens > 4 else ''}")
        return pos

