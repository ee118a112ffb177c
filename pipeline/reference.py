"""The PyTorch reference model: MiMo-V2 decoding written plainly from the model's math.

This is the oracle every executor (the CPU interpreter of the lowered program, the
megakernel) is tested against, so it favours clarity over speed: one small function per
operation, fp32 activations, bf16 weights upcast to fp32, experts dequantised from MXFP4
to fp32. It is vectorised over heads and tokens only.

One decoder layer (``shared/MODEL_FACTS.md``)::

    x = x + o_proj(attention(rope(q), rope(k), v * value_scale))   # on rms_norm(x)
    x = x + ffn(rms_norm(x))    # dense SwiGLU (layer 0) or sigmoid-routed MXFP4 experts

K (after RoPE) and V (after the value scale) are written to the shared ``KVCache`` in bf16
and attention reads them back from there, for the step's own tokens too, so every
executor attends over bit-identical keys and values. A step processes at most
``MAX_STEP_TOKENS`` tokens (what the sliding-window ring is sized for); prefill runs a
prompt of any length through that same path in chunks.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from . import mxfp4
from .config import ModelConfig
from .errors import ConfigError, InputError, int_arg
from .kv_cache import MAX_STEP_TOKENS, KVCache
from .tensor_specs import layer_prefix
from .weights import Weights

#: Added to the sum of the chosen experts' scores before renormalising (as the published code does).
ROUTER_NORM_EPS = 1e-20

TokenIds = Sequence[int] | torch.Tensor
ExpertWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # gate [I, H], up [I, H], down [H, I]


@dataclass
class StepOutput:
    """What one forward pass over T tokens produces."""

    logits: torch.Tensor                                    # [T, vocab] fp32
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)   # layer -> [T, hidden], layers asked for
    router: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # MoE layer -> (expert ids [T, k] int64, weights [T, k] fp32), ids ordered by biased score


# ============================================================== the math, one op each
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in fp32, the weight multiplied after normalising (as the published code does)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.float()


def rope_cos_sin(positions: torch.Tensor, rotary_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, fp32 ``[T, rotary_dim / 2]``, of the RoPE angles at absolute positions.

    inv_freq = theta ** (-(0, 2, 4, ...) / rotary_dim). Angles are formed in float64 and
    rounded once, so the table is exact at any context length; other executors should take
    their tables from here rather than form fp32 angles (which drift by ~1e-3 rad at 1e5).
    """
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float64, device=positions.device) / rotary_dim
    inv_freq = torch.pow(torch.tensor(float(theta), dtype=torch.float64, device=positions.device), -exponents)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` dims of ``x [T, heads, dim]`` in rotate-half layout.

    Dim i pairs with dim i + rotary_dim/2 (not with its neighbour); dims past rotary_dim
    pass through unchanged (MiMo-V2 rotates 64 of 192).
    """
    half = cos.shape[-1]
    x1, x2, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s, rest], dim=-1)


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """bool ``[Tq, Tk]``: causal; with a window, a query at p sees keys p - window .. p only."""
    visible = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        visible &= k_pos[None, :] >= q_pos[:, None] - window
    return visible


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, *,
              sink: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Grouped-query softmax attention.

    q ``[T, Hq, Dqk]``, k ``[Hkv, N, Dqk]``, v ``[Hkv, N, Dv]``, mask ``[T, N]`` -> ``[T, Hq, Dv]``.
    Query head h reads kv head ``h // (Hq / Hkv)``. The scale defaults to Dqk ** -0.5 (the
    qk head dim, also when Dv differs). A sink (one logit per query head) joins the
    scores before the softmax and its probability is dropped: it only enlarges the
    denominator, letting a head put weight on "nothing".
    """
    group = q.shape[1] // k.shape[0]
    k = k.float().repeat_interleave(group, dim=0)
    v = v.float().repeat_interleave(group, dim=0)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("thd,hnd->htn", q.float(), k) * scale
    scores = scores.masked_fill(~mask[None, :, :], float("-inf"))
    if sink is not None:
        sink_col = sink.float().view(-1, 1, 1).expand(-1, q.shape[0], 1)
        probs = torch.softmax(torch.cat([scores, sink_col], dim=-1), dim=-1)[..., :-1]
    else:
        probs = torch.softmax(scores, dim=-1)
    return torch.einsum("htn,hnd->thd", probs, v)


def swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``down(silu(gate x) * up x)``: the dense FFN and every expert."""
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


def limit_to_top_groups(choice_scores: torch.Tensor, n_group: int, topk_group: int) -> torch.Tensor:
    """DeepSeek-V3 ``noaux_tc`` group limit: keep the experts of the best ``topk_group`` groups.

    A group's score is the sum of its two highest (biased) scores. Experts of the other
    groups are set to -inf, so they can never be chosen (the HF DeepSeek-V3 port fills 0.0
    instead, which lets a masked expert win when kept scores are negative; vLLM and SGLang
    use -inf, as here).
    """
    tokens, n_exp = choice_scores.shape
    grouped = choice_scores.view(tokens, n_group, n_exp // n_group)
    group_score = grouped.topk(min(2, n_exp // n_group), dim=-1).values.sum(dim=-1)       # [T, G]
    kept = torch.zeros_like(group_score, dtype=torch.bool)
    kept.scatter_(1, group_score.topk(topk_group, dim=-1).indices, True)
    return grouped.masked_fill(~kept[..., None], float("-inf")).view(tokens, n_exp)


def route(router_logits: torch.Tensor, correction_bias: torch.Tensor, *, top_k: int, n_group: int = 1,
          topk_group: int = 1, norm_topk_prob: bool = True,
          routed_scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid router with an aux-loss-free correction bias, in fp32.

    The bias only steers *which* experts are chosen (top-k of sigmoid + bias, optionally
    group-limited); the weights are the chosen experts' unbiased sigmoid scores,
    renormalised to sum 1 when ``norm_topk_prob``, times ``routed_scaling``.
    Returns (ids [T, k] int64 ordered by biased score, weights [T, k] fp32).
    """
    n_exp = router_logits.shape[-1]
    if n_exp % n_group or not 1 <= topk_group <= n_group:
        raise ConfigError(f"n_group={n_group}, topk_group={topk_group} do not split {n_exp} experts")
    if top_k > topk_group * (n_exp // n_group):
        raise ConfigError(f"num_experts_per_tok={top_k} exceeds the {topk_group * (n_exp // n_group)} experts "
                          f"of topk_group={topk_group} groups")
    scores = torch.sigmoid(router_logits.float())
    choice = scores + correction_bias.float()
    if n_group > 1:
        choice = limit_to_top_groups(choice, n_group, topk_group)
    ids = choice.topk(top_k, dim=-1).indices
    weights = scores.gather(-1, ids)
    if norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + ROUTER_NORM_EPS)
    return ids, weights * routed_scaling


def moe(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor,
        expert: Callable[[int], ExpertWeights]) -> torch.Tensor:
    """Weighted sum of each token's chosen experts: ``sum_j weights[t, j] * swiglu_{ids[t, j]}(x[t])``.

    Loops over the experts chosen by any token and runs each on its tokens at once.
    """
    out = torch.zeros_like(x)
    for e in ids.unique().tolist():
        rows, col = (ids == e).nonzero(as_tuple=True)
        y = swiglu(x[rows], *expert(e))
        out.index_add_(0, rows, y * weights[rows, col, None])
    return out


# ================================================================= input checking
def _token_ids(ids: TokenIds, *, name: str, vocab_size: int) -> torch.Tensor:
    """Token ids as a non-empty CPU int64 vector, or an InputError naming the argument and the bad id."""
    values = _tensor_ids(ids, name) if isinstance(ids, torch.Tensor) else _list_ids(ids, name)
    if values.numel() == 0:
        raise InputError(f"{name}: empty; need at least one token")
    bad = (values < 0) | (values >= vocab_size)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise InputError(f"{name}: token id {int(values[i])} at index {i} is out of range "
                         f"[0, vocab_size={vocab_size})")
    return values


def _tensor_ids(ids: torch.Tensor, name: str) -> torch.Tensor:
    """A 1-D integer tensor of ids, moved to the CPU (ids index the CPU-resident embedding)."""
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise InputError(f"{name}: token ids must be integers, got a {ids.dtype} tensor")
    if ids.ndim != 1:
        raise InputError(f"{name}: need a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
    return ids.detach().to("cpu", torch.int64)


def _list_ids(ids: Iterable[int], name: str) -> torch.Tensor:
    """Python / numpy integers (bools refused: True is not a token) as an int64 tensor."""
    try:
        items = list(ids)
        if any(isinstance(v, bool) for v in items):
            raise TypeError
        values = [operator.index(v) for v in items]
    except TypeError:
        raise InputError(f"{name}: need a sequence of integer token ids, got {ids!r:.80}") from None
    # Saturate ids beyond int64 so they reach the range check instead of an OverflowError.
    return torch.tensor([min(max(v, -2 ** 63), 2 ** 63 - 1) for v in values], dtype=torch.int64)


def _single_token(token: int | torch.Tensor) -> list[int] | torch.Tensor:
    """decode()'s one token as a length-1 sequence (an int or a one-element tensor)."""
    if isinstance(token, torch.Tensor):
        if token.numel() != 1:
            raise InputError(f"token: decode takes one token id, got a tensor of shape {tuple(token.shape)}")
        return token.reshape(1)
    return [token]


def _layer_set(layers: Iterable[int], num_layers: int) -> frozenset[int]:
    """Validated ``return_hidden`` layer ids."""
    out = set()
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
            raise InputError(f"return_hidden: layer {layer!r} is not in [0, num_layers={num_layers})")
        out.add(layer)
    return frozenset(out)


# ====================================================================== the model
class _ExpertStore:
    """Experts dequantised to fp32 on the model's device, most recently used kept.

    Decoding MXFP4 on every use is the slow part of a reference step; the budget bounds
    memory for models whose experts do not all fit once widened to fp32.
    """

    def __init__(self, weights: Weights, device: torch.device, budget_bytes: int):
        self._weights = weights
        self._device = device
        self._budget = budget_bytes
        self._bytes = 0
        self._store: OrderedDict[tuple[int, int], ExpertWeights] = OrderedDict()

    def get(self, layer: int, expert: int) -> ExpertWeights:
        key = (layer, expert)
        hit = self._store.get(key)
        if hit is not None:
            self._store.move_to_end(key)
            return hit
        mats = tuple(self._dequantize(layer, expert, proj) for proj in ("gate", "up", "down"))
        self._store[key] = mats
        self._bytes += sum(m.numel() * m.element_size() for m in mats)
        while self._bytes > self._budget and len(self._store) > 1:
            _, old = self._store.popitem(last=False)
            self._bytes -= sum(m.numel() * m.element_size() for m in old)
        return mats

    def _dequantize(self, layer: int, expert: int, proj: str) -> torch.Tensor:
        if self._weights.cfg.quant.experts != "mxfp4":
            return self._weights.expert_dense(layer, expert, proj).to(self._device, torch.float32)
        codes, scales = self._weights.expert(layer, expert, proj)   # decoded on the device: fewer bytes moved
        return mxfp4.dequantize(codes.to(self._device), scales.to(self._device), torch.float32)


class ReferenceModel:
    """MiMo-V2 forward passes over a KV cache: prefill, decode, verify, and rollback.

    ``capacity`` (default: the config's max_position) sizes the cache; ``expert_cache_bytes``
    bounds the fp32 copies of dequantised experts kept between steps.
    """

    def __init__(self, weights: Weights, *, capacity: int | None = None, device: str | torch.device = "cpu",
                 expert_cache_bytes: int = 2 << 30):
        self.weights = weights
        self.cfg: ModelConfig = weights.cfg
        self.device = torch.device(device)
        self.cache = KVCache(self.cfg, self.cfg.max_position if capacity is None else capacity, self.device)
        self._params: dict[str, torch.Tensor] = {}
        self._qkv_params: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._experts = _ExpertStore(weights, self.device, expert_cache_bytes)
        # Which position each sliding-window ring slot holds, so a rollback deeper than the
        # ring can undo is refused rather than silently attending over overwritten keys.
        self._ring_owner = {layer: torch.full((self.cache.slots(layer),), -1, dtype=torch.int64)
                            for layer in range(self.cfg.num_layers) if self.cfg.attn(layer).window is not None}

    # ------------------------------------------------------------------ API
    @property
    def position(self) -> int:
        """Committed tokens in the cache = the position of the next token."""
        return self.cache.length

    def prefill(self, ids: TokenIds, *, return_hidden: Sequence[int] = ()) -> StepOutput:
        """Append a prompt of any length; returns logits for every prompt token.

        Runs in chunks of MAX_STEP_TOKENS through the verify path, so each chunk attends
        over its own fresh keys plus the cached ones and the sliding-window ring is never
        overrun.
        """
        tokens = _token_ids(ids, name="ids", vocab_size=self.cfg.vocab_size)
        layers = _layer_set(return_hidden, self.cfg.num_layers)
        self._check_room("ids", tokens.numel())
        chunks = [self._forward(chunk, layers) for chunk in tokens.split(MAX_STEP_TOKENS)]
        return _concat(chunks)

    def decode(self, token: int | torch.Tensor, *, return_hidden: Sequence[int] = ()) -> StepOutput:
        """Append one token (T = 1)."""
        tokens = _token_ids(_single_token(token), name="token", vocab_size=self.cfg.vocab_size)
        layers = _layer_set(return_hidden, self.cfg.num_layers)
        self._check_room("token", 1)
        return self._forward(tokens, layers)

    def verify(self, tokens: TokenIds, *, return_hidden: Sequence[int] = ()) -> StepOutput:
        """Append T <= MAX_STEP_TOKENS tokens in one causal pass (a DFlash verify block)."""
        ids = _token_ids(tokens, name="tokens", vocab_size=self.cfg.vocab_size)
        if ids.numel() > MAX_STEP_TOKENS:
            raise InputError(f"tokens: verify takes at most {MAX_STEP_TOKENS} tokens in one pass, got {ids.numel()}")
        layers = _layer_set(return_hidden, self.cfg.num_layers)
        self._check_room("tokens", ids.numel())
        return self._forward(ids, layers)

    def truncate(self, length: int) -> None:
        """Roll back to ``length`` committed tokens (drop rejected speculation).

        Refused when a sliding-window ring has already overwritten a key that the next
        query at ``length`` needs (rolling back more than ``MAX_STEP_TOKENS`` past the
        furthest position written).
        """
        length = int_arg("length", length)
        if not 0 <= length <= self.cache.length:
            raise InputError(f"length: cannot truncate to {length}; the cache holds {self.cache.length} tokens")
        self._check_ring_holds(length)
        self.cache.truncate(length)

    def reset(self) -> None:
        """Forget every token (the cache memory is reused, not cleared)."""
        self.cache.truncate(0)
        for owner in self._ring_owner.values():
            owner.fill_(-1)

    # ------------------------------------------------------------- checks
    def _check_room(self, name: str, tokens: int) -> None:
        try:
            self.cache.check_room(tokens)
        except InputError as e:
            raise InputError(f"{name}: {e}") from None

    def _check_ring_holds(self, length: int) -> None:
        """Every key the next query at ``length`` reads must still be in its ring slot."""
        for layer, owner in self._ring_owner.items():
            window = self.cfg.attn(layer).window
            needed = torch.arange(max(0, length - window), length)
            stale = owner[needed % owner.numel()] != needed
            if bool(stale.any()):
                pos = int(needed[stale][0])
                raise InputError(
                    f"length: cannot roll back to {length}: sliding-window layer {layer} keeps the last "
                    f"{owner.numel()} positions written and position {pos} was overwritten; a rollback may undo "
                    f"at most {owner.numel() - window} tokens past the furthest position written")

    # ------------------------------------------------------------ weights
    def _param(self, name: str) -> torch.Tensor:
        """A dense weight as fp32 on the device, converted once."""
        p = self._params.get(name)
        if p is None:
            p = self._params[name] = self.weights.dense(name).to(self.device, torch.float32)
        return p

    def _qkv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Wq, Wk, Wv) as fp32 on the device, split from whatever layout the checkpoint stores."""
        hit = self._qkv_params.get(layer)
        if hit is None:
            hit = self._qkv_params[layer] = tuple(w.to(self.device, torch.float32) for w in self.weights.qkv(layer))
        return hit

    # ------------------------------------------------------------ forward
    def _forward(self, ids: torch.Tensor, layers_out: frozenset[int]) -> StepOutput:
        """One causal pass over T <= MAX_STEP_TOKENS new tokens at the next positions."""
        cfg = self.cfg
        start = self.cache.length
        positions = torch.arange(start, start + ids.numel(), device=self.device)
        x = self.weights.dense("model.embed_tokens.weight")[ids].to(self.device, torch.float32)
        hidden: dict[int, torch.Tensor] = {}
        router: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer in range(cfg.num_layers):
            p = layer_prefix(layer)
            x = x + self._attention_block(layer, rms_norm(x, self._param(f"{p}.input_layernorm.weight"),
                                                          cfg.rms_eps), positions)
            y, routing = self._ffn_block(layer, rms_norm(x, self._param(f"{p}.post_attention_layernorm.weight"),
                                                         cfg.rms_eps))
            x = x + y
            if routing is not None:
                router[layer] = routing
            if layer in layers_out:
                hidden[layer] = x
        logits = F.linear(rms_norm(x, self._param("model.norm.weight"), cfg.rms_eps), self._lm_head())
        self.cache.length = start + ids.numel()
        for owner in self._ring_owner.values():
            owner[(positions % owner.numel()).cpu()] = positions.cpu()
        return StepOutput(logits=logits, hidden=hidden, router=router)

    def _lm_head(self) -> torch.Tensor:
        name = "model.embed_tokens.weight" if self.cfg.tie_word_embeddings else "lm_head.weight"
        return self._param(name)

    def _attention_block(self, layer: int, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Self-attention of the new tokens over the cache; K/V of the new tokens are cached first."""
        spec = self.cfg.attn(layer)
        tokens = x.shape[0]
        wq, wk, wv = self._qkv(layer)
        q = F.linear(x, wq).view(tokens, spec.num_heads, spec.head_dim)
        k = F.linear(x, wk).view(tokens, spec.num_kv_heads, spec.head_dim)
        v = F.linear(x, wv).view(tokens, spec.num_kv_heads, spec.v_head_dim) * self.cfg.value_scale
        cos, sin = rope_cos_sin(positions, self.cfg.rotary_dim(spec), spec.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        self._write_kv(layer, positions, k, v)
        k_pos = self._visible_positions(layer, positions)
        keys, values = self._read_kv(layer, k_pos)
        sink = self._param(f"{layer_prefix(layer)}.self_attn.attention_sink_bias") if spec.sink else None
        o = attention(q, keys, values, attention_mask(positions, k_pos, spec.window), sink=sink)
        return F.linear(o.reshape(tokens, -1), self._param(f"{layer_prefix(layer)}.self_attn.o_proj.weight"))

    def _write_kv(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store K/V ``[T, kv_heads, dim]`` in bf16 at their slots (the shared cache layout)."""
        slots = self.cache.slot_of(layer, positions)
        self.cache.k[layer][:, slots] = k.transpose(0, 1).to(torch.bfloat16)
        self.cache.v[layer][:, slots] = v.transpose(0, 1).to(torch.bfloat16)

    def _visible_positions(self, layer: int, positions: torch.Tensor) -> torch.Tensor:
        """Key positions any of the step's queries may see: all so far, or the window's reach."""
        window = self.cfg.attn(layer).window
        end = int(positions[-1]) + 1
        first = 0 if window is None else max(0, int(positions[0]) - window)
        assert end - first <= self.cache.slots(layer), "a step of <= MAX_STEP_TOKENS always fits the ring"
        return torch.arange(first, end, device=self.device)

    def _read_kv(self, layer: int, k_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V of the given positions from the cache, bf16 widened to fp32."""
        slots = self.cache.slot_of(layer, k_pos)
        return self.cache.k[layer][:, slots].float(), self.cache.v[layer][:, slots].float()

    def _ffn_block(self, layer: int, x: torch.Tensor
                   ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Dense SwiGLU, or routed experts; returns (output, (ids, weights) or None)."""
        p = f"{layer_prefix(layer)}.mlp"
        if not self.cfg.is_moe(layer):
            return swiglu(x, self._param(f"{p}.gate_proj.weight"), self._param(f"{p}.up_proj.weight"),
                          self._param(f"{p}.down_proj.weight")), None
        cfg = self.cfg
        ids, weights = route(F.linear(x, self._param(f"{p}.gate.weight")),
                             self._param(f"{p}.gate.e_score_correction_bias"),
                             top_k=cfg.top_k, n_group=cfg.n_group, topk_group=cfg.topk_group,
                             norm_topk_prob=cfg.norm_topk_prob, routed_scaling=cfg.routed_scaling)
        return moe(x, ids, weights, lambda e: self._experts.get(layer, e)), (ids, weights)


def _concat(parts: list[StepOutput]) -> StepOutput:
    """Join the outputs of consecutive chunks along the token axis."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return StepOutput(
        logits=torch.cat([p.logits for p in parts]),
        hidden={layer: torch.cat([p.hidden[layer] for p in parts]) for layer in first.hidden},
        router={layer: (torch.cat([p.router[layer][0] for p in parts]), torch.cat([p.router[layer][1] for p in parts]))
                for layer in first.router},
    )
