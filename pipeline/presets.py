"""Named model shapes: tiny (CPU tests), mimo-mini (single-GPU benchmark), and the
published MiMo-V2 shapes (planning and graph building only; never allocated whole)."""

from __future__ import annotations

from .config import GLOBAL, SWA, AttentionSpec, ModelConfig, QuantSpec
from .errors import ConfigError


def _kinds(n: int, global_layers: set[int]) -> tuple[str, ...]:
    return tuple(GLOBAL if i in global_layers else SWA for i in range(n))


def tiny() -> ModelConfig:
    """Every MiMo-V2 feature at toy size: hybrid layers with different kv-head counts per
    type, a window short enough that tests cross it, sinks, qk != v head dims, a dense
    layer 0, MXFP4 experts with a sigmoid router."""
    n = 4
    return ModelConfig(
        name="tiny", hidden_size=128, num_layers=n, vocab_size=512, max_position=512,
        layer_kinds=_kinds(n, {0, 3}),
        global_attn=AttentionSpec(num_heads=4, num_kv_heads=1, head_dim=32, v_head_dim=16,
                                  rope_theta=5e6, window=None, sink=False),
        swa_attn=AttentionSpec(num_heads=4, num_kv_heads=2, head_dim=32, v_head_dim=16,
                               rope_theta=1e4, window=8, sink=True),
        partial_rotary_factor=0.5, value_scale=0.707,
        dense_intermediate=256, moe_intermediate=64, moe_layers=tuple(i > 0 for i in range(n)),
        num_experts=8, top_k=2, quant=QuantSpec(experts="mxfp4"),
    )


def mimo_mini() -> ModelConfig:
    """The single-GPU benchmark shape (random weights): MiMo-V2-Flash's head layout at
    hidden 2048, 16 layers, one global layer in eight."""
    n = 16
    return ModelConfig(
        name="mimo-mini", hidden_size=2048, num_layers=n, vocab_size=152576, max_position=65536,
        layer_kinds=_kinds(n, {i for i in range(n) if i % 8 == 0}),
        global_attn=AttentionSpec(16, 4, 192, 128, 5e6, None, False),
        swa_attn=AttentionSpec(16, 4, 192, 128, 1e4, 128, True),
        partial_rotary_factor=0.334, value_scale=0.707,
        dense_intermediate=8192, moe_intermediate=768, moe_layers=tuple(i > 0 for i in range(n)),
        num_experts=128, top_k=8, quant=QuantSpec(experts="mxfp4"),
    )


def mimo_v2_flash() -> ModelConfig:
    n = 48
    return ModelConfig(
        name="mimo-v2-flash", hidden_size=4096, num_layers=n, vocab_size=152576, max_position=262144,
        layer_kinds=_kinds(n, {0, 5, 11, 17, 23, 29, 35, 41, 47}),
        global_attn=AttentionSpec(64, 4, 192, 128, 5e6, None, False),
        swa_attn=AttentionSpec(64, 8, 192, 128, 1e4, 128, True),
        partial_rotary_factor=0.334, value_scale=0.707,
        dense_intermediate=16384, moe_intermediate=2048, moe_layers=tuple(i > 0 for i in range(n)),
        num_experts=256, top_k=8, fused_qkv=True,
        quant=QuantSpec(experts="mxfp4", attn_qkv="fp8", dense_mlp="fp8"),
    )


def mimo_v25_pro() -> ModelConfig:
    n = 70
    return ModelConfig(
        name="mimo-v2.5-pro", hidden_size=6144, num_layers=n, vocab_size=152576, max_position=1048576,
        layer_kinds=_kinds(n, {0, 7, 15, 23, 31, 39, 47, 55, 62, 69}),
        global_attn=AttentionSpec(128, 8, 192, 128, 1e7, None, False),
        swa_attn=AttentionSpec(128, 8, 192, 128, 1e4, 128, True),
        partial_rotary_factor=0.334, value_scale=0.612,
        dense_intermediate=16384, moe_intermediate=2048, moe_layers=tuple(i > 0 for i in range(n)),
        num_experts=384, top_k=8, fused_qkv=True,
        quant=QuantSpec(experts="mxfp4", attn_qkv="fp8", dense_mlp="fp8"),
    )


PRESETS = {
    "tiny": tiny,
    "mimo-mini": mimo_mini,
    "mimo-v2-flash": mimo_v2_flash,
    "mimo-v2.5-pro": mimo_v25_pro,
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
