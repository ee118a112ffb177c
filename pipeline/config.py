"""ModelConfig: the MiMo-V2 model shape, read from a published ``config.json``.

One frozen dataclass describes everything the reference model, the graph builders and
the performance model need. ``from_hf_dict`` reads the published MiMo-V2 keys (see
``shared/MODEL_FACTS.md``); every key is either understood, explicitly ignored (and
logged), or an error: nothing is dropped silently. ``to_hf_dict`` writes the same keys
back, so a generated checkpoint is read by the very loader users run on real ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

log = logging.getLogger("tilewarp.config")

GLOBAL, SWA = "global", "swa"
LayerKind = Literal["global", "swa"]

#: Keys a MiMo-V2 config may carry that do not change what tilewarp computes.
IGNORED_KEYS = frozenset({
    "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "attention_dropout",
    "attention_bias", "hidden_act", "use_cache", "num_nextn_predict_layers", "_name_or_path",
    "tilewarp_name", "rope_scaling", "first_k_dense_replace", "max_window_layers",
    "use_sliding_window", "swa_attention_bias",
})


@dataclass(frozen=True)
class AttentionSpec:
    """Shape of one attention type (global or sliding window)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int          # q and k
    v_head_dim: int
    rope_theta: float
    window: int | None     # None: global; else a query sees itself + `window` earlier keys
    sink: bool             # one learned logit per head in the softmax denominator

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class QuantSpec:
    """How each tensor group is stored on disk (the published FP4 release layout)."""

    experts: Literal["mxfp4", "bf16"] = "mxfp4"
    attn_qkv: Literal["fp8", "bf16"] = "bf16"
    dense_mlp: Literal["fp8", "bf16"] = "bf16"
    mxfp4_block: int = 32
    fp8_block: tuple[int, int] = (128, 128)


@dataclass(frozen=True)
class ModelConfig:
    """A MiMo-V2-shaped MoE model. Build it from a preset or a ``config.json``."""

    name: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    max_position: int
    layer_kinds: tuple[LayerKind, ...]
    global_attn: AttentionSpec
    swa_attn: AttentionSpec
    partial_rotary_factor: float
    value_scale: float
    dense_intermediate: int
    moe_intermediate: int
    moe_layers: tuple[bool, ...]
    num_experts: int
    top_k: int
    routed_scaling: float = 1.0
    norm_topk_prob: bool = True
    n_group: int = 1
    topk_group: int = 1
    rms_eps: float = 1e-5
    tie_word_embeddings: bool = False
    fused_qkv: bool = False
    quant: QuantSpec = field(default_factory=QuantSpec)

    # ----------------------------------------------------------------- derived
    def __post_init__(self) -> None:
        self.validate()

    def attn(self, layer: int) -> AttentionSpec:
        return self.global_attn if self.layer_kinds[layer] == GLOBAL else self.swa_attn

    def is_moe(self, layer: int) -> bool:
        return self.moe_layers[layer]

    def rotary_dim(self, spec: AttentionSpec) -> int:
        """First `rotary_dim` dims of q/k are rotated (rotate-half); the rest pass through."""
        return int(spec.head_dim * self.partial_rotary_factor)

    @property
    def global_layers(self) -> tuple[int, ...]:
        return tuple(i for i, k in enumerate(self.layer_kinds) if k == GLOBAL)

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"config {self.name!r}: {key}: {msg}")

        need(self.hidden_size > 0, "hidden_size", f"must be positive, got {self.hidden_size}")
        need(self.num_layers > 0, "num_hidden_layers", f"must be positive, got {self.num_layers}")
        need(len(self.layer_kinds) == self.num_layers, "hybrid_layer_pattern",
             f"has {len(self.layer_kinds)} entries for {self.num_layers} layers")
        need(len(self.moe_layers) == self.num_layers, "moe_layer_freq",
             f"has {len(self.moe_layers)} entries for {self.num_layers} layers")
        need(self.vocab_size > 0, "vocab_size", "must be positive")
        for kind, s in ((GLOBAL, self.global_attn), (SWA, self.swa_attn)):
            pre = "" if kind == GLOBAL else "swa_"
            need(s.num_heads > 0 and s.num_kv_heads > 0, f"{pre}num_key_value_heads", "must be positive")
            need(s.num_heads % s.num_kv_heads == 0, f"{pre}num_attention_heads",
                 f"{s.num_heads} q heads is not a multiple of {s.num_kv_heads} kv heads")
            rd = int(s.head_dim * self.partial_rotary_factor)
            need(rd % 2 == 0 and 0 < rd <= s.head_dim, "partial_rotary_factor",
                 f"gives {rd} rotary dims of {s.head_dim}; need an even count in (0, head_dim]")
            need(s.rope_theta > 0, f"{pre}rope_theta", "must be positive")
        need(self.swa_attn.window is not None and self.swa_attn.window > 0, "sliding_window_size",
             "must be a positive int for SWA layers")
        need(self.global_attn.window is None, "sliding_window", "global layers take no window")
        need(1 <= self.top_k <= self.num_experts, "num_experts_per_tok",
             f"{self.top_k} not in [1, n_routed_experts={self.num_experts}]")
        need(self.num_experts % self.n_group == 0, "n_group",
             f"{self.num_experts} experts do not split into {self.n_group} groups")
        need(1 <= self.topk_group <= self.n_group, "topk_group", f"{self.topk_group} not in [1, n_group]")
        need(self.routed_scaling > 0, "routed_scaling_factor", "must be positive")
        need(self.rms_eps > 0, "layernorm_epsilon", "must be positive")
        need(self.max_position > 0, "max_position_embeddings", "must be positive")
        blk = self.quant.mxfp4_block
        if self.quant.experts == "mxfp4" and any(self.moe_layers):
            need(self.hidden_size % blk == 0, "hidden_size", f"must be a multiple of the MXFP4 block {blk}")
            need(self.moe_intermediate % blk == 0, "moe_intermediate_size",
                 f"must be a multiple of the MXFP4 block {blk}")
        need(blk == 32, "quantization_config.mxfp4_block_size", f"OCP MX uses 32, got {blk}")

    # ------------------------------------------------------------ HF config IO
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], *, name: str | None = None, strict: bool = True) -> "ModelConfig":
        """Read a published MiMo-V2 ``config.json`` dict.

        Unknown keys raise ``ConfigError`` when ``strict`` (the default); otherwise they are
        logged as ignored. Keys in ``IGNORED_KEYS`` are always logged at INFO level.
        """
        d = dict(d)
        used: set[str] = set()
        nm = name or d.get("tilewarp_name") or d.get("_name_or_path") or "checkpoint"

        def get(key: str, default: Any = ConfigError) -> Any:
            used.add(key)
            if key in d and d[key] is not None:
                return d[key]
            if default is ConfigError:
                raise ConfigError(f"config {nm!r}: missing required key {key!r}")
            return default

        mt = d.get("model_type")
        if mt is not None and mt != "mimo_v2":
            raise ConfigError(f"config {nm!r}: model_type {mt!r} is not 'mimo_v2'")

        hidden = int(get("hidden_size"))
        n_layers = int(get("num_hidden_layers"))

        pattern = get("hybrid_layer_pattern", [0] * n_layers)
        if not isinstance(pattern, list) or any(p not in (0, 1) for p in pattern):
            raise ConfigError(f"config {nm!r}: hybrid_layer_pattern must be a list of 0 (global) / 1 (SWA)")
        kinds = tuple(GLOBAL if p == 0 else SWA for p in pattern)

        window = _agree(d, nm, used, ("sliding_window_size", "sliding_window"))
        rope = d.get("rope_parameters") or {}
        used.add("rope_parameters")
        if not isinstance(rope, dict):
            raise ConfigError(f"config {nm!r}: rope_parameters must be a dict")
        if rope.get("rope_type", "default") != "default":
            raise ConfigError(f"config {nm!r}: rope_parameters.rope_type {rope['rope_type']!r} is not supported "
                              "(tilewarp implements the default RoPE only)")
        theta = _agree(d, nm, used, ("rope_theta",), extra=rope.get("rope_theta"), extra_name="rope_parameters.rope_theta")
        prf = _agree(d, nm, used, ("partial_rotary_factor",), extra=rope.get("partial_rotary_factor"),
                     extra_name="rope_parameters.partial_rotary_factor")
        if theta is None:
            raise ConfigError(f"config {nm!r}: missing required key 'rope_theta'")

        g_heads = int(get("num_attention_heads"))
        g_kv = int(get("num_key_value_heads"))
        g_hd = int(get("head_dim"))
        g_vd = int(get("v_head_dim", g_hd))
        s_heads = int(get("swa_num_attention_heads", g_heads))
        s_kv = int(get("swa_num_key_value_heads", g_kv))
        s_hd = int(get("swa_head_dim", g_hd))
        s_vd = int(get("swa_v_head_dim", g_vd))
        s_theta = float(get("swa_rope_theta", theta))
        has_swa = SWA in kinds
        if has_swa and window is None:
            raise ConfigError(f"config {nm!r}: SWA layers need 'sliding_window_size'")
        g_sink = bool(get("add_full_attention_sink_bias", False))
        s_sink = bool(get("add_swa_attention_sink_bias", False))

        n_exp = int(get("n_routed_experts", 0))
        moe_freq = get("moe_layer_freq", None)
        if moe_freq is None:
            moe = tuple(False for _ in range(n_layers)) if n_exp == 0 else tuple(i > 0 for i in range(n_layers))
        elif isinstance(moe_freq, list):
            if len(moe_freq) != n_layers or any(m not in (0, 1) for m in moe_freq):
                raise ConfigError(f"config {nm!r}: moe_layer_freq must list 0 (dense) / 1 (MoE) for each of "
                                  f"{n_layers} layers")
            moe = tuple(bool(m) for m in moe_freq)
        else:
            raise ConfigError(f"config {nm!r}: moe_layer_freq must be a per-layer list, got {moe_freq!r}")
        if any(moe) and n_exp == 0:
            raise ConfigError(f"config {nm!r}: moe_layer_freq marks MoE layers but n_routed_experts is 0")

        scoring = get("scoring_func", "sigmoid")
        if scoring != "sigmoid":
            raise ConfigError(f"config {nm!r}: scoring_func {scoring!r} unsupported; MiMo-V2 routes with 'sigmoid'")
        topk_method = get("topk_method", "noaux_tc")
        if topk_method != "noaux_tc":
            raise ConfigError(f"config {nm!r}: topk_method {topk_method!r} unsupported; expected 'noaux_tc'")
        n_shared = get("n_shared_experts", 0)
        if n_shared:
            raise ConfigError(f"config {nm!r}: n_shared_experts={n_shared}; MiMo-V2 has none and tilewarp "
                              "does not implement shared experts")
        layout = get("attention_projection_layout", "split")
        if layout not in ("split", "fused_qkv"):
            raise ConfigError(f"config {nm!r}: attention_projection_layout {layout!r} not in ('split', 'fused_qkv')")

        quant = _quant_from_hf(get("quantization_config", {}), nm)

        cfg = cls(
            name=nm,
            hidden_size=hidden,
            num_layers=n_layers,
            vocab_size=int(get("vocab_size")),
            max_position=int(get("max_position_embeddings")),
            layer_kinds=kinds,
            global_attn=AttentionSpec(g_heads, g_kv, g_hd, g_vd, float(theta), None, g_sink),
            swa_attn=AttentionSpec(s_heads, s_kv, s_hd, s_vd, s_theta, int(window) if window else 128, s_sink),
            partial_rotary_factor=float(prf if prf is not None else 1.0),
            value_scale=float(get("attention_value_scale", 1.0)),
            dense_intermediate=int(get("intermediate_size")),
            moe_intermediate=int(get("moe_intermediate_size", 0)),
            moe_layers=moe,
            num_experts=max(n_exp, 1),
            top_k=int(get("num_experts_per_tok", 1)),
            routed_scaling=float(get("routed_scaling_factor", 1.0)),
            norm_topk_prob=bool(get("norm_topk_prob", True)),
            n_group=int(get("n_group", 1)),
            topk_group=int(get("topk_group", 1)),
            rms_eps=float(_agree(d, nm, used, ("layernorm_epsilon", "rms_norm_eps")) or 1e-5),
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            fused_qkv=layout == "fused_qkv",
            quant=quant,
        )
        for key in sorted(set(d) - used):
            if key in IGNORED_KEYS:
                log.info("config %r: ignoring key %r (does not affect decoding)", nm, key)
            elif strict:
                raise ConfigError(f"config {nm!r}: unknown key {key!r}; pass strict=False to ignore it")
            else:
                log.warning("config %r: ignoring unknown key %r", nm, key)
        return cfg

    @classmethod
    def from_json(cls, path: str | Path, *, strict: bool = True) -> "ModelConfig":
        return cls.from_hf_dict(read_config_json(path), strict=strict)

    def to_hf_dict(self) -> dict[str, Any]:
        g, s = self.global_attn, self.swa_attn
        q = self.quant
        return {
            "model_type": "mimo_v2",
            "architectures": ["MiMoV2ForCausalLM"],
            "tilewarp_name": self.name,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position,
            "hybrid_layer_pattern": [0 if k == GLOBAL else 1 for k in self.layer_kinds],
            "sliding_window": s.window,
            "sliding_window_size": s.window,
            "num_attention_heads": g.num_heads,
            "num_key_value_heads": g.num_kv_heads,
            "head_dim": g.head_dim,
            "v_head_dim": g.v_head_dim,
            "swa_num_attention_heads": s.num_heads,
            "swa_num_key_value_heads": s.num_kv_heads,
            "swa_head_dim": s.head_dim,
            "swa_v_head_dim": s.v_head_dim,
            "add_full_attention_sink_bias": g.sink,
            "add_swa_attention_sink_bias": s.sink,
            "rope_theta": g.rope_theta,
            "swa_rope_theta": s.rope_theta,
            "partial_rotary_factor": self.partial_rotary_factor,
            "attention_value_scale": self.value_scale,
            "intermediate_size": self.dense_intermediate,
            "moe_intermediate_size": self.moe_intermediate,
            "moe_layer_freq": [int(m) for m in self.moe_layers],
            "n_routed_experts": self.num_experts,
            "num_experts_per_tok": self.top_k,
            "scoring_func": "sigmoid",
            "topk_method": "noaux_tc",
            "n_group": self.n_group,
            "topk_group": self.topk_group,
            "norm_topk_prob": self.norm_topk_prob,
            "routed_scaling_factor": self.routed_scaling,
            "n_shared_experts": 0,
            "layernorm_epsilon": self.rms_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_projection_layout": "fused_qkv" if self.fused_qkv else "split",
            "quantization_config": {
                "quant_method": "mimo_v2_fp4",
                "store_dtype": q.experts,
                "mxfp4_block_size": q.mxfp4_block,
                "fmt": "e4m3",
                "weight_block_size": list(q.fp8_block),
                "fp8_modules": [m for m, v in (("attn_qkv", q.attn_qkv), ("dense_mlp", q.dense_mlp)) if v == "fp8"],
            },
            "torch_dtype": "bfloat16",
        }

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def read_config_json(path: str | Path, what: str = "config.json") -> dict[str, Any]:
    """A config file's top-level JSON object, or a ConfigError naming the file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: top level must be a JSON object")
    return d


def _agree(d: dict, nm: str, used: set[str], keys: tuple[str, ...], extra: Any = None,
           extra_name: str = "") -> Any:
    """Value of the first present key; all present spellings must agree, else ConfigError."""
    seen = [(k, d[k]) for k in keys if d.get(k) is not None]
    used.update(keys)
    if extra is not None:
        seen.append((extra_name, extra))
    for k, v in seen[1:]:
        if v != seen[0][1]:
            raise ConfigError(f"config {nm!r}: {seen[0][0]}={seen[0][1]!r} contradicts {k}={v!r}")
    return seen[0][1] if seen else None


def _quant_from_hf(qc: Any, nm: str) -> QuantSpec:
    if not qc:
        return QuantSpec(experts="bf16")
    if not isinstance(qc, dict):
        raise ConfigError(f"config {nm!r}: quantization_config must be a dict")
    known = {"quant_method", "store_dtype", "mxfp4_block_size", "fmt", "weight_block_size", "fp8_modules",
             "activation_scheme"}
    for k in qc:
        if k not in known:
            raise ConfigError(f"config {nm!r}: unknown key quantization_config.{k}")
    store = qc.get("store_dtype", "mxfp4")
    if store not in ("mxfp4", "bf16"):
        raise ConfigError(f"config {nm!r}: quantization_config.store_dtype {store!r} not in ('mxfp4', 'bf16')")
    fmt = qc.get("fmt", "e4m3")
    if fmt != "e4m3":
        raise ConfigError(f"config {nm!r}: quantization_config.fmt {fmt!r}; only FP8 e4m3 is supported")
    wb = qc.get("weight_block_size", [128, 128])
    if not (isinstance(wb, list) and len(wb) == 2 and all(isinstance(x, int) and x > 0 for x in wb)):
        raise ConfigError(f"config {nm!r}: quantization_config.weight_block_size must be [rows, cols], got {wb!r}")
    mods = qc.get("fp8_modules", ["attn_qkv", "dense_mlp"])
    bad = set(mods) - {"attn_qkv", "dense_mlp"}
    if bad:
        raise ConfigError(f"config {nm!r}: quantization_config.fp8_modules has unknown {sorted(bad)}")
    return QuantSpec(
        experts=store,
        attn_qkv="fp8" if "attn_qkv" in mods else "bf16",
        dense_mlp="fp8" if "dense_mlp" in mods else "bf16",
        mxfp4_block=int(qc.get("mxfp4_block_size", 32)),
        fp8_block=(int(wb[0]), int(wb[1])),
    )


# ====================================================================== sizes
BYTES_PER = {"bf16": 2.0, "fp8": 1.0, "mxfp4": 4.25 / 8, "fp32": 4.0}


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts by group. `active` counts what one token touches in one step."""

    embed: int
    lm_head: int
    attention: int
    dense_mlp: int
    router: int
    experts_total: int
    experts_active: int
    norms: int

    @property
    def total(self) -> int:
        return (self.embed + self.lm_head + self.attention + self.dense_mlp + self.router
                + self.experts_total + self.norms)

    @property
    def active(self) -> int:
        """Per token: embedding row excluded as a lookup, counted once as in model cards."""
        return (self.embed + self.lm_head + self.attention + self.dense_mlp + self.router
                + self.experts_active + self.norms)


def attention_params(cfg: ModelConfig, layer: int) -> int:
    s = cfg.attn(layer)
    h = cfg.hidden_size
    q = s.num_heads * s.head_dim
    kv = s.num_kv_heads * (s.head_dim + s.v_head_dim)
    o = s.num_heads * s.v_head_dim
    return h * (q + kv) + o * h + (s.num_heads if s.sink else 0)


def expert_params(cfg: ModelConfig) -> int:
    return 3 * cfg.hidden_size * cfg.moe_intermediate


def param_counts(cfg: ModelConfig) -> ParamCounts:
    h = cfg.hidden_size
    n_moe = sum(cfg.moe_layers)
    n_dense = cfg.num_layers - n_moe
    return ParamCounts(
        embed=cfg.vocab_size * h,
        lm_head=0 if cfg.tie_word_embeddings else cfg.vocab_size * h,
        attention=sum(attention_params(cfg, i) for i in range(cfg.num_layers)),
        dense_mlp=n_dense * 3 * h * cfg.dense_intermediate,
        router=n_moe * (cfg.num_experts * h + cfg.num_experts),
        experts_total=n_moe * cfg.num_experts * expert_params(cfg),
        experts_active=n_moe * cfg.top_k * expert_params(cfg),
        norms=cfg.num_layers * 2 * h + h,
    )


@dataclass(frozen=True)
class StepBytes:
    """Bytes one step of T tokens must read from device memory, by group (the floor)."""

    tokens: int
    context: int
    by_group: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.by_group.values())


def distinct_experts_expected(cfg: ModelConfig, tokens: int) -> float:
    """Expected distinct experts touched by `tokens` tokens choosing top-k uniformly at random."""
    e, k = cfg.num_experts, cfg.top_k
    if tokens <= 1:
        return float(k)
    return e * (1.0 - (1.0 - k / e) ** tokens)


def step_bytes(cfg: ModelConfig, tokens: int = 1, context: int = 4096) -> StepBytes:
    """The fewest bytes one decode/verify step of `tokens` tokens at `context` must read.

    Weights: every non-expert weight once; experts: the expected number of distinct experts
    (uniform routing) per MoE layer; everything in its stored precision (the floor of what a
    kernel could read; a runtime that widens FP8 to bf16 reads more). KV cache: every cached
    key/value the attention reads (SWA layers read at most the window). The embedding rows
    read are negligible and counted exactly.
    """
    h = cfg.hidden_size
    q = cfg.quant
    ex_b = BYTES_PER["mxfp4" if q.experts == "mxfp4" else "bf16"]
    groups: dict[str, float] = {"attention": 0.0, "dense_mlp": 0.0, "router": 0.0, "experts": 0.0,
                                "kv_cache": 0.0, "lm_head": 0.0, "embed": 0.0, "norms": 0.0}
    n_exp = min(distinct_experts_expected(cfg, tokens), float(cfg.num_experts))
    for layer in range(cfg.num_layers):
        s = cfg.attn(layer)
        qkv = h * (s.num_heads * s.head_dim + s.num_kv_heads * (s.head_dim + s.v_head_dim))
        groups["attention"] += (qkv * BYTES_PER[q.attn_qkv]
                                + (attention_params(cfg, layer) - qkv) * BYTES_PER["bf16"])
        keys = context + tokens if s.window is None else min(context + tokens, s.window + tokens)
        groups["kv_cache"] += keys * s.num_kv_heads * (s.head_dim + s.v_head_dim) * BYTES_PER["bf16"]
        if cfg.is_moe(layer):
            groups["router"] += (cfg.num_experts * h + cfg.num_experts) * BYTES_PER["bf16"]
            groups["experts"] += n_exp * expert_params(cfg) * ex_b
        else:
            groups["dense_mlp"] += 3 * h * cfg.dense_intermediate * BYTES_PER[q.dense_mlp]
        groups["norms"] += 2 * h * BYTES_PER["bf16"]
    groups["lm_head"] = cfg.vocab_size * h * BYTES_PER["bf16"]
    groups["embed"] = tokens * h * BYTES_PER["bf16"]
    groups["norms"] += h * BYTES_PER["bf16"]
    return StepBytes(tokens=tokens, context=context, by_group=groups)


def kv_bytes_per_token(cfg: ModelConfig) -> float:
    """KV-cache bytes one more token of context costs (global layers; SWA is bounded)."""
    return sum(s.num_kv_heads * (s.head_dim + s.v_head_dim) * 2
               for s in (cfg.attn(i) for i in range(cfg.num_layers)) if s.window is None)


def human(n: float, unit: str = "") -> str:
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)

