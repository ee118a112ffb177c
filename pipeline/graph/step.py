"""Whole-step builders: decode (T = 1, loops on the device), verify (T tokens, DFlash),
the general `build_step` they share, and the pieces the DFlash builders reuse
(`target_pass`, `lm_head`, `export_hidden`; see `dflash_step.py`)."""

from __future__ import annotations

from typing import Literal, Sequence

from ..config import BYTES_PER, ModelConfig
from ..errors import GraphError
from ..gc_pause import without_gc
from ..kv_cache import MAX_STEP_TOKENS
from .blocks import attention_block, dense_ffn_block, moe_ffn_block
from .ir import At, Buffer, Cost, Graph, Ld
from .ops import STATE_WORDS, Op
from .tiling import TilePolicy, default_policy

StepKind = Literal["decode", "verify"]

#: Rows of the output-token history a launch can fill (steps chained per host call).
MAX_STEPS_PER_LAUNCH = 256


@without_gc
def build_step(cfg: ModelConfig, tokens: int, *, kind: StepKind = "decode", capacity: int = 4096,
               policy: TilePolicy | None = None, export_layers: Sequence[int] = ()) -> Graph:
    """The task graph of one step of `tokens` tokens at KV capacity `capacity`.

    decode: the chosen token is fed back into the token buffer and the position advances
    by one, so the same program runs step after step on the device. verify: T tokens come
    from the host (a DFlash block); every row's choice is written out and the position
    advances by T (the host rolls back what it rejects). A row's choice is its argmax, or
    at a temperature the state asks for, a counter-based sample (`counter_rng`). `export_layers`: the outputs of
    these target layers are copied, side by side, into the carried `hidden_out [T, K*H]`
    (what a DFlash drafter's context is made of).
    """
    pol = policy or default_policy(tokens)
    if not 1 <= tokens <= MAX_STEP_TOKENS:
        raise GraphError(f"a step takes 1..{MAX_STEP_TOKENS} tokens, got {tokens}")
    if kind == "decode" and tokens != 1:
        raise GraphError(f"a decode step has 1 token; use kind='verify' for {tokens}")
    check_capacity(cfg, tokens, capacity)
    g = Graph(cfg, tokens, kind, capacity)
    t = tokens
    state = g.buffer("state", 1, STATE_WORDS, "i32", kind="carried")
    tok = g.buffer("tokens", 1, t, "i32", kind="carried")
    out_tok = g.buffer("out_tokens", MAX_STEPS_PER_LAUNCH if kind == "decode" else 1, t, "i32", kind="carried")
    export = None
    if export_layers:
        export = g.buffer("hidden_out", t, len(export_layers) * cfg.hidden_size, kind="carried")
        g.meta["export_layers"] = list(export_layers)
    best, n_tiles = target_pass(g, tok, state, pol, export=export, export_layers=export_layers)
    writes = [out_tok.tile(), state.tile()] + ([tok.tile()] if kind == "decode" else [])
    g.task(Op.SAMPLE, {"best_off": At(best), "n_tiles": n_tiles, "t": t, "out_off": At(out_tok),
                       "state_off": At(state), "tok_off": At(tok) if kind == "decode" else -1},
           reads=[best.tile(), state.tile()], writes=writes, stage="sample", layer=cfg.num_layers,
           cost=Cost(n_tiles * t * 8))
    return g


def check_capacity(cfg: ModelConfig, tokens: int, capacity: int) -> None:
    if not tokens <= capacity <= cfg.max_position:
        raise GraphError(f"capacity {capacity} not in [{tokens}, max_position={cfg.max_position}]")


def target_pass(g: Graph, tok: Buffer, state: Buffer, pol: TilePolicy, *, export: Buffer | None = None,
                export_layers: Sequence[int] = ()) -> tuple[Buffer, int]:
    """The target model over the step's tokens (read from `tok`): embedding, every layer,
    the final norm and lm_head into the carried `logits`. Returns the per-tile (max,
    argmax) buffer and its tile count, for whichever op picks the tokens. With `export`,
    the output of each layer in `export_layers` is copied into its column block of it as
    soon as that layer is done (off the critical path but for the last one)."""
    cfg, t, hid = g.cfg, g.tokens, g.cfg.hidden_size
    if list(export_layers) != sorted(set(export_layers)) or any(not 0 <= k < cfg.num_layers for k in export_layers):
        raise GraphError(f"export_layers {list(export_layers)} must be increasing layers of [0, {cfg.num_layers})")
    x = g.buffer("L0.x", t, hid)
    emb = g.weight("embed", "bf16", rows=cfg.vocab_size, cols=hid)
    for c0, c1 in pol.split(hid, max(1, hid // 1024)):
        g.task(Op.EMBED, {"tok_off": At(tok), "w": emb, "out_off": At(x), "out_ld": Ld(x), "t": t, "c0": c0,
                          "c1": c1},
               reads=[tok.tile()], writes=[x.tile(0, t, c0, c1)], stage="embed", layer=-1,
               cost=Cost(t * (c1 - c0) * BYTES_PER["bf16"]))

    slot = {k: j for j, k in enumerate(export_layers)}
    for layer in range(cfg.num_layers):
        h = attention_block(g, layer, x, state, pol)
        x = moe_ffn_block(g, layer, h, pol) if cfg.is_moe(layer) else dense_ffn_block(g, layer, h, pol)
        if export is not None and layer in slot:
            export_hidden(g, layer, x, export, slot[layer] * hid, pol)

    v = cfg.vocab_size
    logits = g.buffer("logits", t, v, kind="carried")
    return lm_head(g, x, logits, "lm_head", "norm_final", "best", cfg.num_layers, pol, state=state)


def lm_head(g: Graph, x: Buffer, logits: Buffer, w_name: str, norm: str, best_name: str, layer: int,
            pol: TilePolicy, *, state: Buffer | None, stage: str = "lm_head", row0: int = 0) -> tuple[Buffer, int]:
    """logits = norm(x[row0:]) @ W^T in vocab tiles, each writing (max, argmax) per row into
    `best_name [tiles * rows, 2]`; returns (best, tiles). With `state`, the maxima are of
    the sampling scores when the state asks for sampling (the target); without, always of
    the logits (the DFlash drafter, whose proposals are its argmax)."""
    v, hid, t = logits.cols, x.cols, x.rows - row0
    vocab_tiles = pol.split(v, pol.tiles_for(v * hid * BYTES_PER["bf16"], v))
    best = g.buffer(best_name, len(vocab_tiles) * t, 2)   # (max, argmax as an exact float) per tile and row
    w_lm = g.weight(w_name, "bf16", rows=v, cols=hid)
    w_norm = g.weight(norm, "vector", size=hid)
    for i, (n0, n1) in enumerate(vocab_tiles):
        g.task(Op.LM_HEAD, {"x_off": At(x, row0), "x_ld": Ld(x), "k": hid, "t": t, "w_norm": w_norm, "w": w_lm,
                            "n0": n0, "n1": n1, "logits_off": At(logits), "logits_ld": Ld(logits),
                            "best_off": At(best, i * t), "tile": i, "state_off": At(state) if state else -1},
               reads=[x.tile(row0)] + ([state.tile()] if state else []),
               writes=[logits.tile(0, t, n0, n1), best.tile(i * t, (i + 1) * t)],
               stage=stage, layer=layer, cost=Cost((n1 - n0) * hid * BYTES_PER["bf16"], 2 * t * (n1 - n0) * hid))
    return best, len(vocab_tiles)


def export_hidden(g: Graph, layer: int, x: Buffer, export: Buffer, col: int, pol: TilePolicy) -> None:
    """Copy layer `layer`'s output rows `x` into columns col.. of `export`, in column tiles."""
    t, hid = x.rows, x.cols
    for c0, c1 in pol.split(hid, max(1, hid // 1024)):
        g.task(Op.EXPORT_HIDDEN, {"x_off": At(x), "x_ld": Ld(x), "t": t, "c0": c0, "c1": c1,
                                  "out_off": At(export, 0, col), "out_ld": Ld(export)},
               reads=[x.tile(0, t, c0, c1)], writes=[export.tile(0, t, col + c0, col + c1)],
               stage=f"L{layer}.export", layer=layer, cost=Cost(2 * t * (c1 - c0) * 4))


def build_decode_step(cfg: ModelConfig, *, capacity: int = 4096, policy: TilePolicy | None = None) -> Graph:
    return build_step(cfg, 1, kind="decode", capacity=capacity, policy=policy)


def build_verify_step(cfg: ModelConfig, tokens: int = 8, *, capacity: int = 4096,
                      policy: TilePolicy | None = None, export_layers: Sequence[int] = ()) -> Graph:
    return build_step(cfg, tokens, kind="verify", capacity=capacity, policy=policy, export_layers=export_layers)
