"""Per-layer builders: the tasks of one attention block and one FFN (dense or MoE) block.

Each function reads the layer's input buffer, declares what it writes, and returns the
layer's output buffer. Tiles are sized by the `TilePolicy` cost model; sync groups are
hints that let a consumer wait for only the producers it needs (e.g. an expert's down
projection waits for its own slot's gate/up tiles, not the whole MoE layer).

Arguments and tiles that do not change inside a loop are made once before it and shared
by the loop's tasks (they are immutable): a 70-layer verify step has ~50k tasks.
"""

from __future__ import annotations

from ..config import BYTES_PER, ceil_div
from ..kv_cache import layer_slots
from .ir import KV, At, Buffer, Cost, Graph, Ld
from .ops import Op, partial_row_words, slot_table_fields, slot_table_words
from .tiling import TilePolicy, attention_chunk, swa_chunks

BF16 = BYTES_PER["bf16"]
FP4 = BYTES_PER["mxfp4"]
#: MOE_COMBINE tasks per MoE layer (at least one per down tile): the 16 of mimo-mini at
#: T = 1, ~2 us each on an H100.
COMBINE_TASKS = 16
COMBINE_MIN_COLS = 32


def _x_args(x: Buffer, norm: object) -> dict:
    return {"x_off": At(x), "x_ld": Ld(x), "k": x.cols, "t": x.rows, "w_norm": norm}


def linear(g: Graph, stage: str, layer: int, x: Buffer, w_name: str, out: Buffer, pol: TilePolicy, *,
           norm: str | None = None, resid: Buffer | None = None, cols: tuple[int, int] | None = None) -> None:
    """out = norm?(x) @ W^T (+ resid), cut over output rows (= out columns). `cols`: compute
    only out columns [c0, c1) (weight rows c0:c1), e.g. the k/v rows of a fused qkv weight."""
    n, k, t = out.cols, x.cols, x.rows
    c0, c1 = cols or (0, n)
    w = g.weight(w_name, "bf16", rows=n, cols=k)
    wn = g.weight(norm, "vector", size=k) if norm else -1
    xa, x_all = _x_args(x, wn), x.tile()
    out_a = {"out_off": At(out), "out_ld": Ld(out), "resid_off": At(resid) if resid else -1,
             "resid_ld": Ld(resid) if resid else 0}
    for n0, n1 in ((c0 + a, c0 + b) for a, b in pol.split(c1 - c0, pol.tiles_for((c1 - c0) * k * BF16, c1 - c0))):
        reads = [x_all] + ([resid.tile(0, t, n0, n1)] if resid else [])
        g.task(Op.LINEAR, {**xa, "w": w, "n0": n0, "n1": n1, **out_a},
               reads=reads, writes=[out.tile(0, t, n0, n1)], stage=stage, layer=layer,
               cost=Cost((n1 - n0) * k * BF16, 2 * t * (n1 - n0) * k))


def attention_block(g: Graph, layer: int, x: Buffer, state: Buffer, pol: TilePolicy) -> Buffer:
    cfg, t = g.cfg, g.tokens
    s = cfg.attn(layer)
    grp, hd, vd = s.group, s.head_dim, s.v_head_dim
    nq, nk = s.num_heads * hd, s.num_kv_heads * hd
    p = f"L{layer}"
    qkv = g.buffer(f"{p}.qkv", t, nq + nk + s.num_kv_heads * vd)
    linear(g, f"{p}.qkv", layer, x, f"{p}.qkv", qkv, pol, norm=f"{p}.norm_in")

    q = g.buffer(f"{p}.q", t, nq)
    cache = g.buffer(f"{p}.kvcache", s.num_kv_heads, 1, kind="external")
    kind = "global" if s.window is None else "swa"
    rope = g.weight(f"rope.{kind}", "rope", rows=g.capacity, cols=cfg.rotary_dim(s) // 2, theta=s.rope_theta)
    for h in range(s.num_kv_heads):
        g.task(Op.ROPE_KV, {"qkv_off": At(qkv), "qkv_ld": Ld(qkv), "t": t, "kv": KV(layer), "kvh": h,
                            "q_off": At(q), "q_ld": Ld(q), "state_off": At(state), "w_rope": rope,
                            "layer": layer},
               reads=[qkv.tile(0, t, h * grp * hd, (h + 1) * grp * hd),
                      qkv.tile(0, t, nq + h * hd, nq + (h + 1) * hd),
                      qkv.tile(0, t, nq + nk + h * vd, nq + nk + (h + 1) * vd), state.tile()],
               writes=[q.tile(0, t, h * grp * hd, (h + 1) * grp * hd), cache.tile(h, h + 1)],
               stage=f"{p}.rope", layer=layer, cost=Cost(t * (hd + vd) * BF16, 8 * t * (grp + 1) * hd))

    if s.window is None:
        chunk = attention_chunk(g.capacity, s.num_kv_heads, pol.workers)
        n_chunks = ceil_div(g.capacity, chunk)
    else:
        # The window plus the step (at most window + MAX_STEP_TOKENS keys), cut so that a
        # layer's attention spreads over more SMs than its few kv heads.
        keys = layer_slots(cfg, layer, g.capacity)
        n_chunks = swa_chunks(keys, s.num_kv_heads, pol)
        chunk = ceil_div(keys, n_chunks)
    rows = t * grp
    part = g.buffer(f"{p}.part", s.num_kv_heads * n_chunks * rows, partial_row_words(vd))
    for h in range(s.num_kv_heads):
        for c in range(n_chunks):
            r0 = (h * n_chunks + c) * rows
            g.task(Op.ATTN_PARTIAL, {"q_off": At(q), "q_ld": Ld(q), "t": t, "kv": KV(layer), "kvh": h, "chunk": c,
                                     "chunk_len": chunk, "part_off": At(part, r0), "state_off": At(state),
                                     "layer": layer},
                   reads=[q.tile(0, t, h * grp * hd, (h + 1) * grp * hd), cache.tile(h, h + 1), state.tile()],
                   writes=[part.tile(r0, r0 + rows)], stage=f"{p}.attn", group=f"{p}.attn.h{h}", layer=layer,
                   cost=Cost(chunk * (hd + vd) * BF16, 4 * rows * chunk * (hd + vd)))

    out = g.buffer(f"{p}.attn_out", t, s.num_heads * vd)
    sink = g.weight(f"{p}.sink", "vector", size=s.num_heads) if s.sink else -1
    merge_heads(g, p, layer, layer, part, out, sink, n_chunks, s.num_kv_heads, grp, vd)

    h_out = g.buffer(f"{p}.h", t, cfg.hidden_size)
    linear(g, f"{p}.o", layer, out, f"{p}.o", h_out, pol, resid=x)
    return h_out


def merge_heads(g: Graph, p: str, layer: int, kv_layer: int, part: Buffer, out: Buffer, sink: object,
                n_chunks: int, kv_heads: int, grp: int, vd: int) -> None:
    """One ATTN_MERGE per kv head: its chunk partials -> its heads' columns of `out`.
    `kv_layer` is the layer-table entry the op reads shapes from (a draft layer's differs
    from its build-order `layer`)."""
    t = out.rows
    rows = t * grp
    for h in range(kv_heads):
        r0 = h * n_chunks * rows
        g.task(Op.ATTN_MERGE, {"part_off": At(part, r0), "n_chunks": n_chunks, "t": t, "kvh": h, "w_sink": sink,
                               "out_off": At(out), "out_ld": Ld(out), "layer": kv_layer},
               reads=[part.tile(r0, r0 + n_chunks * rows)], writes=[out.tile(0, t, h * grp * vd, (h + 1) * grp * vd)],
               stage=f"{p}.merge", layer=layer, cost=Cost(n_chunks * rows * (2 + vd) * 4, 0))


def dense_ffn_block(g: Graph, layer: int, h: Buffer, pol: TilePolicy) -> Buffer:
    return swiglu_ffn(g, f"L{layer}", layer, h, g.cfg.dense_intermediate, f"L{layer + 1}.x", pol)


def swiglu_ffn(g: Graph, p: str, layer: int, h: Buffer, inter: int, out_name: str, pol: TilePolicy) -> Buffer:
    """out = h + down(silu(gate n(h)) * up n(h)), n = RMSNorm by `{p}.norm_post`; weights
    `{p}.gate|up|down`. The target's dense layer and every draft layer's MLP."""
    t, hid = h.rows, h.cols
    act = g.buffer(f"{p}.act", t, inter)
    wg = g.weight(f"{p}.gate", "bf16", rows=inter, cols=hid)
    wu = g.weight(f"{p}.up", "bf16", rows=inter, cols=hid)
    wn = g.weight(f"{p}.norm_post", "vector", size=hid)
    for n0, n1 in pol.split(inter, pol.tiles_for(2 * inter * hid * BF16, inter)):
        g.task(Op.LINEAR_SWIGLU, {**_x_args(h, wn), "w": wg, "w2": wu, "n0": n0, "n1": n1, "out_off": At(act),
                                  "out_ld": Ld(act)},
               reads=[h.tile()], writes=[act.tile(0, t, n0, n1)], stage=f"{p}.gate_up", layer=layer,
               cost=Cost(2 * (n1 - n0) * hid * BF16, 4 * t * (n1 - n0) * hid))
    x_next = g.buffer(out_name, t, hid)
    linear(g, f"{p}.down", layer, act, f"{p}.down", x_next, pol, resid=h)
    return x_next


def moe_ffn_block(g: Graph, layer: int, h: Buffer, pol: TilePolicy) -> Buffer:
    cfg, t = g.cfg, g.tokens
    p, hid, inter, e, k = f"L{layer}", cfg.hidden_size, cfg.moe_intermediate, cfg.num_experts, cfg.top_k
    logits = g.buffer(f"{p}.router_logits", t, e)
    linear(g, f"{p}.router", layer, h, f"{p}.router", logits, pol, norm=f"{p}.norm_post")

    slots = min(t * k, e)
    table = g.buffer(f"{p}.slots", 1, slot_table_words(slots, t, k), "i32")
    bias = g.weight(f"{p}.router_bias", "vector", size=e)
    g.task(Op.ROUTE, {"logits_off": At(logits), "t": t, "w_bias": bias, "table_off": At(table), "layer": layer},
           reads=[logits.tile()], writes=[table.tile()], stage=f"{p}.route", layer=layer,
           cost=Cost(t * e * 4, t * e * 8))

    fields = slot_table_fields(slots, t, k)
    assert fields["n_used"] == 0
    act = g.buffer(f"{p}.act", slots * t, inter)
    wg = g.weight(f"{p}.experts.gate", "mxfp4_bank", rows=inter, cols=hid, experts=e)
    wu = g.weight(f"{p}.experts.up", "mxfp4_bank", rows=inter, cols=hid, experts=e)
    wd = g.weight(f"{p}.experts.down", "mxfp4_bank", rows=hid, cols=inter, experts=e)
    wn = g.weight(f"{p}.norm_post", "vector", size=hid)
    # Expert row tiles are whole 16-row mma tiles (csrc/ops/gemv_mxfp4.cuh).
    up_tiles = pol.split(inter, pol.tiles_per_group(inter, slots, 16, 2 * hid * FP4), align=16)
    xa, h_all, tab, tab_all, act_ld = _x_args(h, wn), h.tile(), At(table), table.tile(), Ld(act)
    up_cost = {(n0, n1): Cost(2 * (n1 - n0) * hid * FP4, 4 * t * (n1 - n0) * hid) for n0, n1 in up_tiles}
    for s in range(slots):
        act_s, stage, group = At(act, s * t), f"{p}.up", f"{p}.up.s{s}"
        for n0, n1 in up_tiles:
            g.task(Op.EXPERT_UP, {**xa, "w": wg, "w2": wu, "slot": s, "n0": n0, "n1": n1,
                                  "table_off": tab, "act_off": act_s, "act_ld": act_ld, "layer": layer},
                   reads=[h_all, tab_all], writes=[act.tile(s * t, (s + 1) * t, n0, n1)],
                   stage=stage, group=group, layer=layer, cost=up_cost[n0, n1])

    y = g.buffer(f"{p}.y", slots * t, hid)
    down_tiles = pol.split(hid, pol.tiles_per_group(hid, slots, 16, inter * FP4), align=16)
    y_ld, stage = Ld(y), f"{p}.down"
    down = [(j, n0, n1, f"{p}.down.c{j}", Cost((n1 - n0) * inter * FP4, 2 * t * (n1 - n0) * inter))
            for j, (n0, n1) in enumerate(down_tiles)]
    for s in range(slots):
        act_s, act_rows, y_s = At(act, s * t), act.tile(s * t, (s + 1) * t), At(y, s * t)
        for j, n0, n1, group, cost in down:
            g.task(Op.EXPERT_DOWN, {"act_off": act_s, "act_ld": act_ld, "k": inter, "t": t, "w": wd,
                                    "slot": s, "n0": n0, "n1": n1, "table_off": tab, "y_off": y_s,
                                    "y_ld": y_ld, "layer": layer},
                   reads=[act_rows, tab_all], writes=[y.tile(s * t, (s + 1) * t, n0, n1)],
                   stage=stage, group=group, layer=layer, cost=cost)

    x_next = g.buffer(f"L{layer + 1}.x", t, hid)
    # Combine tiles: each down tile's columns cut again, to COMBINE_TASKS in all (none
    # narrower than COMBINE_MIN_COLS). A combine moves almost no bytes, so its stage costs
    # its slowest task's latency: few wide tasks (3 at T = 8 with the down tiles'
    # columns) took ~16 us each.
    per_down = max(1, COMBINE_TASKS // len(down_tiles))
    combine_tiles = [(n0 + a, n0 + b) for n0, n1 in down_tiles
                     for a, b in pol.split(n1 - n0, min(per_down, max(1, (n1 - n0) // COMBINE_MIN_COLS)))]
    for n0, n1 in combine_tiles:
        g.task(Op.MOE_COMBINE, {"y_off": At(y), "y_ld": y_ld, "t": t, "table_off": tab, "resid_off": At(h),
                                "resid_ld": Ld(h), "out_off": At(x_next), "out_ld": Ld(x_next), "c0": n0, "c1": n1,
                                "layer": layer},
               reads=[y.tile(0, slots * t, n0, n1), tab_all, h.tile(0, t, n0, n1)],
               writes=[x_next.tile(0, t, n0, n1)], stage=f"{p}.combine", layer=layer,
               cost=Cost(t * k * (n1 - n0) * 4, 2 * t * k * (n1 - n0)))
    return x_next
