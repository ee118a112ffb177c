"""`tilewarp inspect`: a model's shape, parameter counts, bytes per step and storage."""

from __future__ import annotations

import argparse
from collections import defaultdict

from tilewarp.pipeline.checkpoint import load_checkpoint
from tilewarp.pipeline.config import ModelConfig, human, kv_bytes_per_token, param_counts, step_bytes
from tilewarp.pipeline.presets import PRESETS, preset
from tilewarp.pipeline.tensor_specs import tensor_specs


def add_parser(sub: argparse._SubParsersAction) -> str:
    p = sub.add_parser("inspect", help="summarise a checkpoint or preset: shape, parameters, bytes per step")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("path", nargs="?", help="checkpoint directory")
    src.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--context", type=int, default=4096, help="context length for the per-step byte count")
    p.add_argument("--check", action="store_true", help="read every tensor and check its values")
    return "inspect"


def describe(cfg: ModelConfig, context: int) -> list[str]:
    g, s = cfg.global_attn, cfg.swa_attn
    pc = param_counts(cfg)
    lines = [
        f"model {cfg.name}: hidden {cfg.hidden_size}, {cfg.num_layers} layers "
        f"({len(cfg.global_layers)} global: {list(cfg.global_layers)}), vocab {cfg.vocab_size}, "
        f"context {cfg.max_position}",
        f"  global attention: {g.num_heads} q / {g.num_kv_heads} kv heads, qk {g.head_dim} / v {g.v_head_dim}, "
        f"theta {g.rope_theta:g}, sinks {g.sink}",
        f"  SWA attention:    {s.num_heads} q / {s.num_kv_heads} kv heads, window {s.window}, theta {s.rope_theta:g}, "
        f"sinks {s.sink}; rotary dims {cfg.rotary_dim(g)}; value scale {cfg.value_scale}",
        f"  FFN: {cfg.num_layers - sum(cfg.moe_layers)} dense (inter {cfg.dense_intermediate}), {sum(cfg.moe_layers)} MoE "
        f"({cfg.num_experts} experts, top-{cfg.top_k}, inter {cfg.moe_intermediate}, sigmoid router)",
        f"  storage: experts {cfg.quant.experts}, qkv {cfg.quant.attn_qkv}, dense MLP {cfg.quant.dense_mlp}, "
        f"{'fused' if cfg.fused_qkv else 'split'} qkv",
        "",
        f"parameters: {human(pc.total)} total, {human(pc.active)} active per token",
        "  (active = embeddings + lm_head + attention + dense MLP + routers + norms + top-k experts of each MoE layer)",
    ]
    for k in ("embed", "lm_head", "attention", "dense_mlp", "router", "experts_total", "experts_active", "norms"):
        lines.append(f"  {k:15s} {human(getattr(pc, k)):>10s}")
    lines.append("")
    lines.append(f"bytes one step must read at context {context} (the floor):")
    for t in (1, 8):
        sb = step_bytes(cfg, t, context)
        parts = ", ".join(f"{k} {human(v, 'B')}" for k, v in sb.by_group.items() if v)
        lines.append(f"  T={t}: {human(sb.total, 'B')} ({parts})")
    lines.append(f"  KV cache per token of context: {human(kv_bytes_per_token(cfg), 'B')}")
    return lines


def storage(cfg: ModelConfig) -> list[str]:
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for sp in tensor_specs(cfg):
        n = 1
        for d in sp.shape:
            n *= d
        g = groups[(sp.group, sp.codec)]
        g[0] += 1
        g[1] += n * sp.dtype.itemsize
    lines = ["", "stored tensors (group, codec: count, bytes):"]
    for (grp, codec), (count, nbytes) in sorted(groups.items()):
        lines.append(f"  {grp:10s} {codec:12s} {count:8d} {human(nbytes, 'B'):>10s}")
    return lines


def run(args: argparse.Namespace) -> int:
    if args.preset:
        cfg = preset(args.preset)
    else:
        w = load_checkpoint(args.path)
        cfg = w.cfg
        if args.check:
            w.check_all()
            print("all tensor values checked")
    print("\n".join(describe(cfg, args.context) + storage(cfg)))
    return 0
