"""DraftConfig: the shape of a DFlash drafter, read from its ``config.json``.

A drafter directory holds a ``config.json`` in the layout the public DFlash drafters use
(a Qwen3-style decoder config; ``block_size``, ``mask_token_id`` and ``target_layer_ids``
either at the top level or inside a ``dflash_config`` object, both accepted, and they must
agree where both are given). Every key is understood, ignored with a log line because it
cannot change what the drafter computes (``IGNORED_KEYS``), or an error: nothing is
dropped silently. ``to_hf_dict`` writes the same layout back, so generated drafters are
read by the loader users run on published ones.

Choices this file fixes (see ``shared/MODEL_FACTS.md``, "DFlash"):

* ``sliding_window``: how many context tokens before the anchor the block sees; ``None``
  means all of them. Same counting as the target's sliding window (a query sees itself
  plus ``window`` earlier tokens), measured from the anchor; see ``draft_model``.
* ``add_attention_sink_bias``: one learned logit per query head in every draft layer
  (``layers.i.self_attn.attention_sink_bias``), entering only the softmax denominator,
  as the target's sinks do. The name is ours: the MiMo release's key is unconfirmed.
* ``attention_value_scale``: V (context and block) is multiplied by it after ``v_proj``.
* q/k RMSNorm per head (``q_norm``, ``k_norm`` over ``head_dim``) before RoPE, as the
  DFlash reference drafter (Qwen3 attention) does; it is part of the architecture, not a key.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ModelConfig, read_config_json
from ..errors import ConfigError
from ..kv_cache import MAX_STEP_TOKENS

log = logging.getLogger("tilewarp.dflash.config")

#: Keys a drafter config may carry that do not change what the drafter computes.
IGNORED_KEYS = frozenset({
    "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "attention_dropout",
    "use_cache", "_name_or_path", "max_window_layers", "tie_word_embeddings", "max_position_embeddings",
})

#: Keys that may sit inside ``dflash_config`` instead of the top level.
DFLASH_KEYS = ("block_size", "mask_token_id", "target_layer_ids")


@dataclass(frozen=True)
class DraftConfig:
    """A DFlash drafter: dense Qwen3-style layers reading the target's hidden states."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int                     # q, k and v (the drafter has one head dim)
    partial_rotary_factor: float
    rope_theta: float
    block_size: int                   # B: the anchor plus B - 1 MASK slots
    target_layer_ids: tuple[int, ...] # outputs of these target decoder layers form the context
    mask_token_id: int
    window: int | None                # context tokens before the anchor the block sees; None = all
    value_scale: float
    sink: bool
    intermediate_size: int
    rms_eps: float
    vocab_size: int
    num_target_layers: int | None = None   # if given, must match the target's layer count

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_layer_ids", tuple(self.target_layer_ids))
        self.validate()

    # ------------------------------------------------------------- derived
    @property
    def rotary_dim(self) -> int:
        """First ``rotary_dim`` dims of q/k are rotated (rotate-half); the rest pass through."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def context_width(self) -> int:
        """Width of the concatenated target hidden states fed to ``fc``."""
        return len(self.target_layer_ids) * self.hidden_size

    # ----------------------------------------------------------- validation
    def validate(self) -> None:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"drafter config {self.name!r}: {key}: {msg}")

        for key, value in (("hidden_size", self.hidden_size), ("num_hidden_layers", self.num_layers),
                           ("num_attention_heads", self.num_heads), ("num_key_value_heads", self.num_kv_heads),
                           ("head_dim", self.head_dim), ("intermediate_size", self.intermediate_size),
                           ("vocab_size", self.vocab_size), ("block_size", self.block_size)):
            need(isinstance(value, int) and value > 0, key, f"must be a positive int, got {value!r}")
        need(self.num_heads % self.num_kv_heads == 0, "num_attention_heads",
             f"{self.num_heads} q heads is not a multiple of {self.num_kv_heads} kv heads")
        rd = self.rotary_dim
        need(rd % 2 == 0 and 0 < rd <= self.head_dim, "partial_rotary_factor",
             f"gives {rd} rotary dims of {self.head_dim}; need an even count in (0, head_dim]")
        need(self.rope_theta > 0, "rope_theta", f"must be positive, got {self.rope_theta}")
        need(2 <= self.block_size <= MAX_STEP_TOKENS, "block_size",
             f"{self.block_size} not in [2, {MAX_STEP_TOKENS}] (a verify step holds at most {MAX_STEP_TOKENS} tokens)")
        ids = self.target_layer_ids
        need(len(ids) > 0, "target_layer_ids", "must name at least one target layer")
        need(all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids), "target_layer_ids",
             f"must be non-negative ints, got {list(ids)}")
        need(len(set(ids)) == len(ids), "target_layer_ids", f"has duplicates: {list(ids)}")
        need(list(ids) == sorted(ids), "target_layer_ids", f"must be increasing, got {list(ids)}")
        need(isinstance(self.mask_token_id, int) and 0 <= self.mask_token_id < self.vocab_size, "mask_token_id",
             f"{self.mask_token_id} not in [0, vocab_size={self.vocab_size})")
        need(self.window is None or (isinstance(self.window, int) and self.window > 0), "sliding_window",
             f"must be null or a positive int, got {self.window!r}")
        need(self.value_scale > 0, "attention_value_scale", f"must be positive, got {self.value_scale}")
        need(self.rms_eps > 0, "rms_norm_eps", f"must be positive, got {self.rms_eps}")
        if self.num_target_layers is not None:
            need(self.num_target_layers > max(ids), "num_target_layers",
                 f"{self.num_target_layers} target layers cannot hold target_layer_ids {list(ids)}")

    def check_target(self, target: ModelConfig) -> None:
        """The drafter reads this target's hidden states and shares its embedding and lm_head."""
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"drafter config {self.name!r} vs target {target.name!r}: {key}: {msg}")

        need(self.hidden_size == target.hidden_size, "hidden_size",
             f"{self.hidden_size} != target hidden_size {target.hidden_size} (the drafter uses the target's "
             "embedding and lm_head)")
        need(self.vocab_size == target.vocab_size, "vocab_size",
             f"{self.vocab_size} != target vocab_size {target.vocab_size}")
        need(max(self.target_layer_ids) < target.num_layers, "target_layer_ids",
             f"{list(self.target_layer_ids)} reach past the target's {target.num_layers} layers")
        need(self.num_target_layers in (None, target.num_layers), "num_target_layers",
             f"{self.num_target_layers} != target num_hidden_layers {target.num_layers}")

    # ------------------------------------------------------------ HF config IO
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], *, name: str | None = None) -> "DraftConfig":
        """Read a drafter ``config.json`` dict; unknown or contradictory keys raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"drafter config: top level must be a JSON object, got {type(d).__name__}")
        nm = name or d.get("tilewarp_name") or d.get("_name_or_path") or "drafter"
        reader = _Reader(d, nm)
        cfg = cls(
            name=nm,
            hidden_size=reader.get_int("hidden_size"),
            num_layers=reader.get_int("num_hidden_layers"),
            num_heads=reader.get_int("num_attention_heads"),
            num_kv_heads=reader.get_int("num_key_value_heads"),
            head_dim=reader.get_int("head_dim"),
            partial_rotary_factor=reader.rope("partial_rotary_factor", 1.0),
            rope_theta=reader.rope("rope_theta", None),
            block_size=reader.get_int("block_size"),
            target_layer_ids=reader.layer_ids(),
            mask_token_id=reader.get_int("mask_token_id"),
            window=reader.window(),
            value_scale=reader.get_float("attention_value_scale", 1.0),
            sink=reader.get_bool("add_attention_sink_bias", False),
            intermediate_size=reader.get_int("intermediate_size"),
            rms_eps=reader.eps(),
            vocab_size=reader.get_int("vocab_size"),
            num_target_layers=reader.get_int("num_target_layers", None),
        )
        reader.check_architecture(cfg)
        reader.finish()
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> "DraftConfig":
        path = Path(path)
        d = read_config_json(path, "drafter config.json")
        try:
            return cls.from_hf_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        return {
            "architectures": ["DFlashDraftModel"],
            "tilewarp_name": self.name,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "partial_rotary_factor": self.partial_rotary_factor,
            "rope_theta": self.rope_theta,
            "sliding_window": self.window,
            "attention_value_scale": self.value_scale,
            "add_attention_sink_bias": self.sink,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "silu",
            "attention_bias": False,
            "rms_norm_eps": self.rms_eps,
            "vocab_size": self.vocab_size,
            "num_target_layers": self.num_target_layers,
            "dflash_config": {
                "block_size": self.block_size,
                "mask_token_id": self.mask_token_id,
                "target_layer_ids": list(self.target_layer_ids),
            },
            "torch_dtype": "bfloat16",
        }

    def replace(self, **changes: Any) -> "DraftConfig":
        return dataclasses.replace(self, **changes)


class _Reader:
    """Reads keys of one config dict, remembering which were used, so leftovers are found."""

    def __init__(self, d: dict[str, Any], name: str):
        self.d = d
        self.name = name
        self.used: set[str] = {"tilewarp_name"}
        nested = d.get("dflash_config", {})
        if not isinstance(nested, dict):
            raise self.error("dflash_config", f"must be an object, got {nested!r}")
        unknown = sorted(set(nested) - set(DFLASH_KEYS))
        if unknown:
            raise self.error(f"dflash_config.{unknown[0]}", "unknown key")
        self.nested = nested
        self.used.add("dflash_config")
        rope = d.get("rope_parameters") or {}
        if not isinstance(rope, dict):
            raise self.error("rope_parameters", f"must be an object, got {rope!r}")
        bad = sorted(set(rope) - {"rope_type", "rope_theta", "partial_rotary_factor"})
        if bad:
            raise self.error(f"rope_parameters.{bad[0]}", "unknown key")
        if rope.get("rope_type", "default") != "default":
            raise self.error("rope_parameters.rope_type", f"{rope['rope_type']!r} unsupported; only 'default' RoPE")
        self.rope_params = rope
        self.used.add("rope_parameters")

    def error(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"drafter config {self.name!r}: {key}: {msg}")

    def raw(self, key: str, default: Any = ConfigError) -> Any:
        """The value of ``key`` (top level or ``dflash_config``; both must agree), or the default."""
        self.used.add(key)
        seen = [(k, src[key]) for k, src in ((key, self.d), (f"dflash_config.{key}", self.nested))
                if src.get(key) is not None]
        if len(seen) == 2 and seen[0][1] != seen[1][1]:
            raise self.error(key, f"{seen[0][0]}={seen[0][1]!r} contradicts {seen[1][0]}={seen[1][1]!r}")
        if seen:
            return seen[0][1]
        if default is ConfigError:
            raise self.error(key, "missing required key")
        return default

    def get_int(self, key: str, default: Any = ConfigError) -> Any:
        v = self.raw(key, default)
        if v is None and default is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"must be an int, got {v!r}")
        return v

    def get_float(self, key: str, default: Any = ConfigError) -> float:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(key, f"must be a number, got {v!r}")
        return float(v)

    def get_bool(self, key: str, default: bool) -> bool:
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise self.error(key, f"must be true or false, got {v!r}")
        return v

    def rope(self, key: str, default: float | None) -> float:
        """A RoPE key, which may also sit in ``rope_parameters``; both must agree."""
        top = self.raw(key, None)
        inner = self.rope_params.get(key)
        if top is not None and inner is not None and top != inner:
            raise self.error(key, f"{key}={top!r} contradicts rope_parameters.{key}={inner!r}")
        v = top if top is not None else inner if inner is not None else default
        if v is None:
            raise self.error(key, "missing required key")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(key, f"must be a number, got {v!r}")
        return float(v)

    def layer_ids(self) -> tuple[int, ...]:
        v = self.raw("target_layer_ids")
        if not isinstance(v, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in v):
            raise self.error("target_layer_ids", f"must be a list of ints, got {v!r}")
        return tuple(v)

    def window(self) -> int | None:
        v = self.raw("sliding_window", None)
        use = self.raw("use_sliding_window", None)
        if use is not None and bool(use) != (v is not None):
            raise self.error("use_sliding_window", f"{use!r} contradicts sliding_window={v!r}")
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise self.error("sliding_window", f"must be null or an int, got {v!r}")
        return v

    def eps(self) -> float:
        a, b = self.raw("rms_norm_eps", None), self.raw("layernorm_epsilon", None)
        if a is not None and b is not None and a != b:
            raise self.error("rms_norm_eps", f"{a!r} contradicts layernorm_epsilon={b!r}")
        v = a if a is not None else b
        if v is None:
            raise self.error("rms_norm_eps", "missing required key")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error("rms_norm_eps", f"must be a number, got {v!r}")
        return float(v)

    def check_architecture(self, cfg: DraftConfig) -> None:
        """Keys that must hold one value, because tilewarp implements only that architecture."""
        if self.raw("hidden_act", "silu") != "silu":
            raise self.error("hidden_act", f"{self.d['hidden_act']!r} unsupported; the draft MLP is SwiGLU ('silu')")
        if self.raw("attention_bias", False) is not False:
            raise self.error("attention_bias", "projection biases are not supported")
        if self.raw("is_causal", False) is not False:
            raise self.error("is_causal", "DFlash draft attention is non-causal inside the block")
        if self.raw("rope_scaling", None) is not None:
            raise self.error("rope_scaling", "only the default RoPE is supported")
        kinds = self.raw("layer_types", None)
        if kinds is not None:
            want = "sliding_attention" if cfg.window is not None else "full_attention"
            if not isinstance(kinds, list) or len(kinds) != cfg.num_layers or any(k != want for k in kinds):
                raise self.error("layer_types", f"must list {want!r} for each of {cfg.num_layers} layers "
                                 f"(sliding_window={cfg.window!r}), got {kinds!r}")

    def finish(self) -> None:
        for key in sorted(set(self.d) - self.used):
            if key not in IGNORED_KEYS:
                raise self.error(key, "unknown key")
            log.info("drafter config %r: ignoring key %r (does not affect drafting)", self.name, key)


# ====================================================================== presets
def tiny_drafter(target: ModelConfig) -> DraftConfig:
    """Two draft layers over the tiny target, with a window short enough that tests cross it."""
    return DraftConfig(
        name=f"{target.name}-drafter", hidden_size=target.hidden_size, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=32, partial_rotary_factor=0.5, rope_theta=1e4, block_size=8,
        target_layer_ids=(0, 2, 3),
        mask_token_id=target.vocab_size - 1, window=16, value_scale=0.612, sink=True,
        intermediate_size=256, rms_eps=target.rms_eps, vocab_size=target.vocab_size,
        num_target_layers=target.num_layers,
    )


def mimo_drafter() -> DraftConfig:
    """The published MiMo-V2.5-Pro drafter shape (``shared/MODEL_FACTS.md``).

    ``intermediate_size`` is unconfirmed: 16384, the target's dense FFN width, as the public
    DFlash drafters copy their target's ``intermediate_size``.
    """
    return DraftConfig(
        name="mimo-v2.5-pro-dflash", hidden_size=6144, num_layers=5, num_heads=128, num_kv_heads=8,
        head_dim=128, partial_rotary_factor=0.5, rope_theta=1e4, block_size=8,
        target_layer_ids=(0, 15, 31, 47, 69), mask_token_id=151669, window=1024, value_scale=0.612,
        sink=True, intermediate_size=16384, rms_eps=1e-5, vocab_size=152576, num_target_layers=70,
    )
