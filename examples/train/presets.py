"""Model shapes and training defaults for the trained pair, and their byte budget.

``stdlib-256`` is the pair ``make demo`` ships: every MiMo-V2 feature (hybrid global / SWA
layers with sinks, more kv heads on SWA layers than global ones as in MiMo-V2-Flash,
partial RoPE, value scale, dense layer 0, sigmoid-routed top-k experts stored in MXFP4)
at a size whose checkpoints fit 25 MB together::

    target   hidden 256, 6 layers, global layers 0 and 5 (1 in 3, first and last as in MiMo),
             SWA window 64 + sinks, 8 q heads, kv 2 global / 4 SWA, qk 64 / v 32,
             partial RoPE 0.5 (32 of 64 dims; MiMo's 1/3 gives an odd count at 64),
             dense layer 0 (inter 768), 5 MoE layers x 16 experts top-2 (inter 256)
    drafter  hidden 256 (= target), 6 layers, 8 heads / 2 kv, head_dim 32, inter 512,
             reads target layers (0, 2, 3, 5), window 256 + sinks, B = 8
    vocab    4096 (byte-level BPE; see tokenizer.py for why)

``stored_bytes`` sums the exact tensor table (``tensor_specs`` / ``draft_tensor_specs``),
so the budget is checked without training: target ~17.1 MB + drafter ~7.2 MB +
tokenizer.json ~0.27 MB = ~24.6 MB. The fifth and sixth drafter layers (1.1 MB each) are
where the spare budget went: the drafter, not the target, limits acceptance; a seventh
would not fit. ``toy`` is the same
architecture at CPU-test size.

Training defaults are per preset; every script flag overrides them. The stdlib-256 target
defaults are for ~2.5 minutes on an H100: 2 M training tokens overfit 20 M parameters within
the first minute or two, so dropout 0.2, a valid evaluation every 10 s (the export keeps the
best), and QAT over the second half, before the best valid point rather than after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from tilewarp.pipeline.config import GLOBAL, SWA, AttentionSpec, ModelConfig, QuantSpec
from tilewarp.pipeline.dflash.config import DraftConfig
from tilewarp.pipeline.dflash.tensor_specs import draft_tensor_specs
from tilewarp.pipeline.tensor_specs import tensor_specs

#: The committed pair (target + drafter + tokenizer) must fit this.
BUDGET_BYTES = 25_000_000
#: Room kept for tokenizer.json and the held-out prompt file (measured: ~0.27 MB + ~0.1 MB).
TOKENIZER_ALLOWANCE = 400_000


@dataclass(frozen=True)
class Preset:
    name: str
    vocab_size: int
    target: Callable[[int], ModelConfig]                  # vocab -> target config
    drafter: Callable[[ModelConfig, int], DraftConfig]    # (target, mask id) -> drafter config
    target_train: dict[str, Any] = field(default_factory=dict)
    drafter_train: dict[str, Any] = field(default_factory=dict)
    max_files: int | None = None                          # stdlib subset (toy runs)


def _kinds(n: int, global_layers: set[int]) -> tuple[str, ...]:
    return tuple(GLOBAL if i in global_layers else SWA for i in range(n))


def stdlib_256_target(vocab: int) -> ModelConfig:
    n = 6
    return ModelConfig(
        name="stdlib-256", hidden_size=256, num_layers=n, vocab_size=vocab, max_position=4096,
        layer_kinds=_kinds(n, {0, 5}),
        global_attn=AttentionSpec(num_heads=8, num_kv_heads=2, head_dim=64, v_head_dim=32, rope_theta=5e6,
                                  window=None, sink=False),
        swa_attn=AttentionSpec(num_heads=8, num_kv_heads=4, head_dim=64, v_head_dim=32, rope_theta=1e4,
                               window=64, sink=True),
        partial_rotary_factor=0.5, value_scale=0.707,
        dense_intermediate=768, moe_intermediate=256, moe_layers=tuple(i > 0 for i in range(n)),
        num_experts=16, top_k=2, quant=QuantSpec(experts="mxfp4"),
    )


def stdlib_256_drafter(target: ModelConfig, mask_id: int) -> DraftConfig:
    return DraftConfig(
        name=f"{target.name}-dflash", hidden_size=target.hidden_size, num_layers=6, num_heads=8, num_kv_heads=2,
        head_dim=32, partial_rotary_factor=0.5, rope_theta=1e4, block_size=8, target_layer_ids=(0, 2, 3, 5),
        mask_token_id=mask_id, window=256, value_scale=0.612, sink=True, intermediate_size=512,
        rms_eps=target.rms_eps, vocab_size=target.vocab_size, num_target_layers=target.num_layers,
    )


def toy_target(vocab: int) -> ModelConfig:
    n = 3
    return ModelConfig(
        name="stdlib-toy", hidden_size=64, num_layers=n, vocab_size=vocab, max_position=1024,
        layer_kinds=_kinds(n, {0, 2}),
        global_attn=AttentionSpec(4, 1, 32, 16, 5e6, None, False),
        swa_attn=AttentionSpec(4, 2, 32, 16, 1e4, 16, True),
        partial_rotary_factor=0.5, value_scale=0.707,
        dense_intermediate=128, moe_intermediate=64, moe_layers=tuple(i > 0 for i in range(n)),
        num_experts=4, top_k=2, quant=QuantSpec(experts="mxfp4"),
    )


def toy_drafter(target: ModelConfig, mask_id: int) -> DraftConfig:
    return DraftConfig(
        name=f"{target.name}-dflash", hidden_size=target.hidden_size, num_layers=1, num_heads=4, num_kv_heads=2,
        head_dim=16, partial_rotary_factor=0.5, rope_theta=1e4, block_size=8, target_layer_ids=(0, 2),
        mask_token_id=mask_id, window=32, value_scale=0.612, sink=True, intermediate_size=128,
        rms_eps=target.rms_eps, vocab_size=target.vocab_size, num_target_layers=target.num_layers,
    )


PRESETS: dict[str, Preset] = {
    "stdlib-256": Preset(
        "stdlib-256", 4096, stdlib_256_target, stdlib_256_drafter,
        target_train=dict(seq_len=384, batch=64, lr=2e-3, dropout=0.2, weight_decay=0.1, warmup=200,
                          qat_frac=0.5, router_bias_rate=1e-3, eval_every=10.0, log_every=20.0),
        drafter_train=dict(gen_frac=0.2, gen_batch=512, gen_len=160, greedy_frac=0.5, sample_prefix=24,
                           temperature=0.8, windows=30_000, batch=64, anchors=32, lr=2e-3, weight_decay=0.01,
                           warmup=200, gamma=4.0, kd=0.5, log_every=20.0),
    ),
    "toy": Preset(
        "toy", 512, toy_target, toy_drafter, max_files=60,
        target_train=dict(seq_len=128, batch=16, lr=3e-3, dropout=0.0, weight_decay=0.1, warmup=20,
                          qat_frac=0.2, router_bias_rate=1e-3, eval_every=20.0, log_every=10.0),
        drafter_train=dict(gen_frac=0.3, gen_batch=32, gen_len=64, greedy_frac=0.5, sample_prefix=8,
                           temperature=0.8, windows=240, batch=16, anchors=8, lr=3e-3, weight_decay=0.01,
                           warmup=20, gamma=4.0, kd=0.0, log_every=10.0),
    ),
}


def get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise SystemExit(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def stored_bytes(cfg: ModelConfig | DraftConfig) -> int:
    """Bytes of every stored tensor of a target or drafter (the safetensors payload)."""
    specs = tensor_specs(cfg) if isinstance(cfg, ModelConfig) else draft_tensor_specs(cfg)
    return sum(math.prod(s.shape) * s.dtype.itemsize for s in specs)


def budget_lines(preset: Preset) -> list[str]:
    """The byte budget of a preset's pair, one line per part and the total vs BUDGET_BYTES."""
    target = preset.target(preset.vocab_size)
    drafter = preset.drafter(target, 1)
    t, d = stored_bytes(target), stored_bytes(drafter)
    total = t + d + TOKENIZER_ALLOWANCE
    return [f"target  {target.name}: {t / 1e6:6.2f} MB", f"drafter {drafter.name}: {d / 1e6:6.2f} MB",
            f"tokenizer + prompts (allowance): {TOKENIZER_ALLOWANCE / 1e6:.2f} MB",
            f"total {total / 1e6:.2f} MB of {BUDGET_BYTES / 1e6:.0f} MB"]
