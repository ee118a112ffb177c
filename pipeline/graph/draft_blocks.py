"""Builders for the DFlash drafter's tasks: the block pass (embedding, draft layers, the
target's lm_head, proposals) and the context append (fc + norm over the target's
exported hidden states, then every draft layer's K/V of them into the draft cache).

Draft layers are ids `num_layers + i` of the layer table (`graph.ops`), so the ops that
read attention shapes (ATTN_MERGE, DRAFT_*) get the drafter's. Names: buffers and stages
`D{i}.*` (draft layer i), `D.*` (the rest of the block pass), `C*.*` (context append);
weights `D{i}.qkv|o|gate|up|down|norm_in|norm_post|q_norm|k_norm|sink`, `D.fc`,
`D.hidden_norm`, `D.mask`, `D.norm`, `rope.draft` (see `weight_table.py`).

The same math as `dflash.draft_model.DraftModel`, restated as tasks:

* the block's K/V go into the draft cache at positions pos..pos+B-1 (where the context
  append of the same DFlash step later puts the verified tokens' context K/V), so one
  attention op reads context and block keys from one place, chunked like the target's
  global attention and merged by ATTN_MERGE with the sinks;
* the context K/V projection reuses each layer's fused qkv weight (its k/v rows only),
  with `hidden_norm` fused into it as the input norm, so no weight is stored twice;
* lm_head runs over rows 1..B-1 only: row 0 (the anchor's slot) proposes nothing.
"""

from __future__ import annotations

from ..config import BYTES_PER, ceil_div
from ..dflash.config import DraftConfig
from ..errors import GraphError
from .blocks import linear, merge_heads, swiglu_ffn
from .ir import KV, At, Buffer, Cost, Graph, Ld
from .ops import Op, partial_row_words
from .step import lm_head
from .tiling import TilePolicy, attention_chunk

BF16 = BYTES_PER["bf16"]


def draft_kv_id(g: Graph, layer: int) -> int:
    """Layer-table id of draft layer `layer`."""
    return g.cfg.num_layers + layer


def check_drafter(g: Graph, dcfg: DraftConfig) -> None:
    """The drafter must fit the target and the program: ops take the target's rms eps."""
    dcfg.check_target(g.cfg)
    if dcfg.rms_eps != g.cfg.rms_eps:
        raise GraphError(f"drafter {dcfg.name!r}: rms_norm_eps {dcfg.rms_eps} != target's {g.cfg.rms_eps}; the "
                         "device ops take one eps per program")
    if g.tokens != dcfg.block_size:
        raise GraphError(f"a DFlash step has block_size={dcfg.block_size} tokens, got {g.tokens}")
    g.meta.update({"drafter": dcfg.name, "draft_layers": dcfg.num_layers, "draft_kv_base": g.cfg.num_layers,
                   "block_size": dcfg.block_size, "export_layers": list(dcfg.target_layer_ids)})


def draft_pass(g: Graph, dcfg: DraftConfig, tok: Buffer, state: Buffer, pol: TilePolicy,
               layer0: int) -> tuple[list[Buffer], Buffer]:
    """Block `[tokens[0], MASK x (B-1)]` through the drafter; proposals into tokens[1:B],
    their logits into the carried `draft_logits [B-1, V]`. Task layers layer0 ..
    layer0 + num_layers + 1. Returns each draft layer's cache buffer, and `draft_logits`."""
    t, hid = g.tokens, dcfg.hidden_size
    x = g.buffer("D0.x", t, hid)
    emb = g.weight("embed", "bf16", rows=g.cfg.vocab_size, cols=hid)
    mask = g.weight("D.mask", "vector", size=hid)
    for c0, c1 in pol.split(hid, max(1, hid // 1024)):
        g.task(Op.DRAFT_EMBED, {"tok_off": At(tok), "w": emb, "w_mask": mask, "out_off": At(x), "out_ld": Ld(x),
                                "t": t, "c0": c0, "c1": c1},
               reads=[tok.tile(0, 1, 0, 1)], writes=[x.tile(0, t, c0, c1)], stage="D.embed", layer=layer0,
               cost=Cost(2 * (c1 - c0) * BF16))
    caches = []
    for i in range(dcfg.num_layers):
        x, cache = draft_layer(g, dcfg, i, x, state, pol, layer0 + 1 + i)
        caches.append(cache)

    head = layer0 + dcfg.num_layers + 1
    logits = g.buffer("draft_logits", t - 1, g.cfg.vocab_size, kind="carried")
    best, n_tiles = lm_head(g, x, logits, "lm_head", "D.norm", "D.best", head, pol, state=None, stage="D.lm_head",
                            row0=1)
    g.task(Op.ARGMAX_ROWS, {"best_off": At(best), "n_tiles": n_tiles, "t": t - 1, "out_off": At(tok, 0, 1)},
           reads=[best.tile()], writes=[tok.tile(0, 1, 1, t)], stage="D.propose", layer=head,
           cost=Cost(n_tiles * (t - 1) * 8))
    return caches, logits


def draft_layer(g: Graph, dcfg: DraftConfig, i: int, x: Buffer, state: Buffer, pol: TilePolicy,
                layer: int) -> tuple[Buffer, Buffer]:
    """One draft layer over the block rows `x`; returns (its output, its cache buffer)."""
    t, hd, heads, kvh = g.tokens, dcfg.head_dim, dcfg.num_heads, dcfg.num_kv_heads
    grp, nq, nk = dcfg.group, dcfg.num_heads * dcfg.head_dim, dcfg.num_kv_heads * dcfg.head_dim
    p, kv = f"D{i}", draft_kv_id(g, i)
    qkv = g.buffer(f"{p}.qkv", t, nq + 2 * nk)
    linear(g, f"{p}.qkv", layer, x, f"{p}.qkv", qkv, pol, norm=f"{p}.norm_in")
    q = g.buffer(f"{p}.q", t, nq)
    cache = g.buffer(f"{p}.kvcache", kvh, 1, kind="external")
    draft_rope_kv(g, dcfg, i, qkv, q, cache, state, f"{p}.rope", layer)

    keys = min(g.capacity, g.capacity if dcfg.window is None else dcfg.window + t)
    chunk = attention_chunk(keys, kvh, pol.workers)
    n_chunks = ceil_div(keys, chunk)
    rows = t * grp
    part = g.buffer(f"{p}.part", kvh * n_chunks * rows, partial_row_words(hd))
    for h in range(kvh):
        for c in range(n_chunks):
            r0 = (h * n_chunks + c) * rows
            g.task(Op.DRAFT_ATTN, {"q_off": At(q), "q_ld": Ld(q), "t": t, "kv": KV(kv), "kvh": h, "chunk": c,
                                   "chunk_len": chunk, "part_off": At(part, r0), "state_off": At(state)},
                   reads=[q.tile(0, t, h * grp * hd, (h + 1) * grp * hd), cache.tile(h, h + 1), state.tile()],
                   writes=[part.tile(r0, r0 + rows)], stage=f"{p}.attn", group=f"{p}.attn.h{h}", layer=layer,
                   cost=Cost(chunk * 2 * hd * BF16, 4 * rows * chunk * hd))

    out = g.buffer(f"{p}.attn_out", t, nq)
    sink = g.weight(f"{p}.sink", "vector", size=heads) if dcfg.sink else -1
    merge_heads(g, p, layer, kv, part, out, sink, n_chunks, kvh, grp, hd)

    h_out = g.buffer(f"{p}.h", t, dcfg.hidden_size)
    linear(g, f"{p}.o", layer, out, f"{p}.o", h_out, pol, resid=x)
    return swiglu_ffn(g, p, layer, h_out, dcfg.intermediate_size, f"D{i + 1}.x", pol), cache


def draft_rope_kv(g: Graph, dcfg: DraftConfig, i: int, qkv: Buffer, q: Buffer | None, cache: Buffer,
                  state: Buffer, stage: str, layer: int, group: str | None = None) -> None:
    """DRAFT_ROPE_KV per kv head of draft layer i: K/V of `qkv`'s rows into the cache at
    positions pos.., and the rotated q rows into `q` (None: context rows, K/V only)."""
    t, hd, grp, kvh = qkv.rows, dcfg.head_dim, dcfg.group, dcfg.num_kv_heads
    nq, nk = dcfg.num_heads * hd, kvh * hd
    p = f"D{i}"
    rope = g.weight("rope.draft", "rope", rows=g.capacity, cols=dcfg.rotary_dim // 2, theta=dcfg.rope_theta)
    w_q = g.weight(f"{p}.q_norm", "vector", size=hd) if q is not None else -1
    w_k = g.weight(f"{p}.k_norm", "vector", size=hd)
    for h in range(kvh):
        q_cols = (h * grp * hd, (h + 1) * grp * hd)
        reads = [qkv.tile(0, t, nq + h * hd, nq + (h + 1) * hd),
                 qkv.tile(0, t, nq + nk + h * hd, nq + nk + (h + 1) * hd), state.tile()]
        writes = [cache.tile(h, h + 1)]
        if q is not None:
            reads.insert(0, qkv.tile(0, t, *q_cols))
            writes.insert(0, q.tile(0, t, *q_cols))
        g.task(Op.DRAFT_ROPE_KV, {"qkv_off": At(qkv), "qkv_ld": Ld(qkv), "t": t, "kv": KV(draft_kv_id(g, i)), "kvh": h,
                                  "q_off": At(q) if q is not None else -1, "q_ld": Ld(q) if q is not None else 0,
                                  "state_off": At(state), "w_rope": rope, "w_qnorm": w_q, "w_knorm": w_k},
               reads=reads, writes=writes, stage=stage, group=group, layer=layer,
               cost=Cost(t * (grp + 2) * hd * 4, 10 * t * (grp + 1) * hd))


def context_append(g: Graph, dcfg: DraftConfig, feats: Buffer, caches: list[Buffer], state: Buffer,
                   pol: TilePolicy, layer: int) -> None:
    """Context K/V of the step's B verified tokens into every draft layer's cache at
    positions pos..pos+B-1: ctx = hidden_norm(fc(feats)), then per layer its k/v rows of
    the qkv weight, k-norm and RoPE. Rows past what ACCEPT commits are written too and
    never read: the context length is the position, and the next step overwrites them."""
    t, hd, kvh = g.tokens, dcfg.head_dim, dcfg.num_kv_heads
    nq, nk = dcfg.num_heads * hd, kvh * hd
    ctx = g.buffer("C.x", t, dcfg.hidden_size)
    linear(g, "C.fc", layer, feats, "D.fc", ctx, pol)
    for i, cache in enumerate(caches):
        kv = g.buffer(f"C{i}.qkv", t, nq + 2 * nk)
        linear(g, f"C{i}.kv", layer, ctx, f"D{i}.qkv", kv, pol, norm="D.hidden_norm", cols=(nq, nq + 2 * nk))
        # one sync group for every layer's context K/V: ACCEPT then waits on one event for all
        draft_rope_kv(g, dcfg, i, kv, None, cache, state, f"C{i}.rope", layer, group="C.rope")
