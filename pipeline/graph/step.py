"""Whole-step builders: decode (T = 1, loops on the device), verify (T tokens, DFlash),
and the general `build_step` they share."""

from __future__ import annotations

from typing import Literal

from ..config import BYTES_PER, ModelConfig
from ..errors import GraphError
from ..gc_pause import without_gc
from ..kv_cache import MAX_STEP_TOKENS
from .blocks import attention_block, dense_ffn_block, moe_ffn_block
from .ir import At, Cost, Graph, Ld
from .ops import STATE_WORDS, Op
from .tiling import TilePolicy

StepKind = Literal["decode", "verify"]

#: Rows of the output-token history a launch can fill (steps chained per host call).
MAX_STEPS_PER_LAUNCH = 256


@without_gc
def build_step(cfg: ModelConfig, tokens: int, *, kind: StepKind = "decode", capacity: int = 4096,
               policy: TilePolicy | None = None) -> Graph:
    """The task graph of one step of `tokens` tokens at KV capacity `capacity`.

    decode: the sampled token is fed back into the token buffer and the position advances
    by one, so the same program runs step after step on the device. verify: T tokens come
    from the host (a DFlash block); every row's argmax is written out and the position
    advances by T (the host rolls back what it rejects).
    """
    pol = policy or TilePolicy()
    if not 1 <= tokens <= MAX_STEP_TOKENS:
        raise GraphError(f"a step takes 1..{MAX_STEP_TOKENS} tokens, got {tokens}")
    if kind == "decode" and tokens != 1:
        raise GraphError(f"a decode step has 1 token; use kind='verify' for {tokens}")
    if not tokens <= capacity <= cfg.max_position:
        raise GraphError(f"capacity {capacity} not in [{tokens}, max_position={cfg.max_position}]")
    g = Graph(cfg, tokens, kind, capacity)
    t, hid = tokens, cfg.hidden_size

    state = g.buffer("state", 1, STATE_WORDS, "i32", kind="carried")
    tok = g.buffer("tokens", 1, t, "i32", kind="carried")
    out_tok = g.buffer("out_tokens", MAX_STEPS_PER_LAUNCH if kind == "decode" else 1, t, "i32", kind="carried")
    x = g.buffer("L0.x", t, hid)
    emb = g.weight("embed", "bf16", rows=cfg.vocab_size, cols=hid)
    for c0, c1 in pol.split(hid, max(1, hid // 1024)):
        g.task(Op.EMBED, {"tok_off": At(tok), "w": emb, "out_off": At(x), "out_ld": Ld(x), "t": t, "c0": c0,
                          "c1": c1},
               reads=[tok.tile()], writes=[x.tile(0, t, c0, c1)], stage="embed", layer=-1,
               cost=Cost(t * (c1 - c0) * BYTES_PER["bf16"]))

    for layer in range(cfg.num_layers):
        h = attention_block(g, layer, x, state, pol)
        x = moe_ffn_block(g, layer, h, pol) if cfg.is_moe(layer) else dense_ffn_block(g, layer, h, pol)

    v = cfg.vocab_size
    logits = g.buffer("logits", t, v, kind="carried")
    vocab_tiles = pol.split(v, pol.tiles_for(v * hid * BYTES_PER["bf16"], v))
    best = g.buffer("best", len(vocab_tiles) * t, 2)   # (max, argmax as an exact float) per tile and row
    w_lm = g.weight("lm_head", "bf16", rows=v, cols=hid)
    w_norm = g.weight("norm_final", "vector", size=hid)
    for i, (n0, n1) in enumerate(vocab_tiles):
        g.task(Op.LM_HEAD, {"x_off": At(x), "x_ld": Ld(x), "k": hid, "t": t, "w_norm": w_norm, "w": w_lm, "n0": n0,
                            "n1": n1, "logits_off": At(logits), "logits_ld": Ld(logits), "best_off": At(best, i * t),
                            "tile": i},
               reads=[x.tile()], writes=[logits.tile(0, t, n0, n1), best.tile(i * t, (i + 1) * t)],
               stage="lm_head", layer=cfg.num_layers, cost=Cost((n1 - n0) * hid * BYTES_PER["bf16"],
                                                                2 * t * (n1 - n0) * hid))
    writes = [out_tok.tile(), state.tile()] + ([tok.tile()] if kind == "decode" else [])
    g.task(Op.SAMPLE, {"best_off": At(best), "n_tiles": len(vocab_tiles), "t": t, "out_off": At(out_tok),
                       "state_off": At(state), "tok_off": At(tok) if kind == "decode" else -1},
           reads=[best.tile(), state.tile()], writes=writes, stage="sample", layer=cfg.num_layers,
           cost=Cost(len(vocab_tiles) * t * 8))
    return g


def build_decode_step(cfg: ModelConfig, *, capacity: int = 4096, policy: TilePolicy | None = None) -> Graph:
    return build_step(cfg, 1, kind="decode", capacity=capacity, policy=policy)


def build_verify_step(cfg: ModelConfig, tokens: int = 8, *, capacity: int = 4096,
                      policy: TilePolicy | None = None) -> Graph:
    return build_step(cfg, tokens, kind="verify", capacity=capacity, policy=policy)
