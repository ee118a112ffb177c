"""The DFlash ops one at a time, on hand-made arenas: ACCEPT commits what
`dflash.verify.verify_greedy` commits and advances the state; ARGMAX_ROWS breaks ties as
one argmax over the whole row does; DRAFT_EMBED builds [anchor, MASK...]; the weight
table serves the drafter's tensors under the program's names; the layer table tells
target and draft layers apart."""

from __future__ import annotations

import random

import pytest
import torch

from tilewarp.pipeline.cpu_ops import accept, argmax_rows, draft_embed
from tilewarp.pipeline.cpu_ops.context import Ctx
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.kv_cache import DraftKVCache
from tilewarp.pipeline.dflash.verify import verify_greedy
from tilewarp.pipeline.dflash.weights import random_draft_weights
from tilewarp.pipeline.errors import GraphError
from tilewarp.pipeline.graph.ops import STATE_POS, STATE_STEP
from tilewarp.pipeline.kv_cache import KVCache
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.weight_table import materialize

CFG = preset("tiny")
DCFG = tiny_drafter(CFG)
B = DCFG.block_size


def ctx(words: int = 256, draft: bool = False) -> Ctx:
    return Ctx(CFG, torch.zeros(words), [], KVCache(CFG, 64), DraftKVCache(DCFG, 64) if draft else None)


# ------------------------------------------------------------------ ACCEPT
PROP, CHOICE, TOK, STATE, OUT = 0, 16, 32, 48, 64
ARGS = {"prop_off": PROP, "choice_off": CHOICE, "t": B, "tok_off": TOK, "out_off": OUT, "out_ld": B + 1,
        "state_off": STATE, "hist_off": -1}


def one_hot_rows(choices: list[int]) -> torch.Tensor:
    logits = torch.zeros(len(choices), CFG.vocab_size)
    logits[torch.arange(len(choices)), torch.tensor(choices)] = 1.0
    return logits


@pytest.mark.parametrize("match", list(range(B)))
def test_accept_commits_what_verify_greedy_commits(match):
    """`match` leading proposals equal the target's choices (B-1: all, plus the bonus)."""
    rng = random.Random(match)
    for trial in range(5):
        choices = [rng.randrange(CFG.vocab_size) for _ in range(B)]
        proposals = choices[:match] + [(c + 1 + rng.randrange(5)) % CFG.vocab_size for c in choices[match:B - 1]]
        c = ctx()
        ints = c.arena_i
        ints[PROP:PROP + B - 1] = torch.tensor(proposals, dtype=torch.int32)
        ints[CHOICE:CHOICE + B] = torch.tensor(choices, dtype=torch.int32)
        ints[STATE + STATE_POS], ints[STATE + STATE_STEP] = 100, trial
        accept.run(c, ARGS)
        want = verify_greedy(proposals, one_hot_rows(choices))
        assert want.accepted == match
        row = ints[OUT + trial * (B + 1):OUT + (trial + 1) * (B + 1)].tolist()
        assert row == [len(want.tokens)] + want.tokens + [-1] * (B - len(want.tokens))
        assert int(ints[TOK]) == want.tokens[-1], "the last committed token is the next anchor"
        assert (int(ints[STATE + STATE_POS]), int(ints[STATE + STATE_STEP])) == (100 + len(want.tokens), trial + 1)
        assert not ints[OUT:OUT + trial * (B + 1)].any(), "earlier steps' rows are left alone"


# ------------------------------------------------------------------ ARGMAX_ROWS
def test_argmax_rows_takes_the_lowest_id_among_equal_maxima_across_tiles():
    c = ctx()
    best = c.rows(0, 2, 3 * 2, 2).view(3, 2, 2)          # 3 tiles x 2 rows of (max, argmax)
    best[:, 0, 0] = torch.tensor([1.0, 5.0, 5.0])
    best[:, 0, 1] = torch.tensor([3.0, 140.0, 70.0])      # tie between tiles 1 and 2: id 70 wins
    best[:, 1, 0] = torch.tensor([9.0, -1.0, 2.0])
    best[:, 1, 1] = torch.tensor([12.0, 200.0, 300.0])
    argmax_rows.run(c, {"best_off": 0, "n_tiles": 3, "t": 2, "out_off": 40})
    assert c.arena_i[40:42].tolist() == [70, 12]


# ------------------------------------------------------------------ DRAFT_EMBED
def test_draft_embed_puts_the_anchor_row_then_mask_rows():
    w = random_weights(CFG, 0)
    dw = random_draft_weights(DCFG, 1)
    c = ctx(4096)
    c.weights = [materialize("embed", w), materialize("D.mask", w, draft=dw)]
    c.arena_i[0] = 77
    h = CFG.hidden_size
    draft_embed.run(c, {"tok_off": 0, "w": 0, "w_mask": 1, "out_off": 64, "out_ld": h, "t": B, "c0": 32, "c1": h})
    x = c.rows(64, h, B, h)
    assert torch.equal(x[0, 32:], w.dense("model.embed_tokens.weight")[77, 32:].float())
    assert torch.equal(x[1:, 32:], dw.get("mask_embedding")[32:].float().expand(B - 1, -1))
    assert not x[:, :32].any(), "columns outside c0:c1 are another task's"


# ------------------------------------------------------------------ weight and layer tables
def test_the_weight_table_serves_the_drafters_tensors_under_program_names():
    w = random_weights(CFG, 0)
    dw = random_draft_weights(DCFG, 1)
    qkv = materialize("D1.qkv", w, draft=dw)["w"]
    p = "layers.1.self_attn."
    assert torch.equal(qkv, torch.cat([dw.get(p + "q_proj.weight"), dw.get(p + "k_proj.weight"),
                                       dw.get(p + "v_proj.weight")]))
    assert torch.equal(materialize("D.fc", w, draft=dw)["w"], dw.get("fc.weight"))
    assert torch.equal(materialize("D0.k_norm", w, draft=dw)["w"], dw.get("layers.0.self_attn.k_norm.weight"))
    with pytest.raises(GraphError, match="none was given"):
        materialize("D.fc", w)
    for bad in ("D.q_norm", "D0.fc", "D0.nonsense"):
        with pytest.raises(GraphError, match="unknown drafter weight"):
            materialize(bad, w, draft=dw)


def test_the_layer_table_maps_ids_past_the_target_to_draft_layers():
    c = ctx(draft=True)
    last = c.layer(CFG.num_layers - 1)
    assert last.k is c.cache.k[-1] and last.value_scale == CFG.value_scale
    d = c.layer(CFG.num_layers + 1)
    assert d.k is c.draft_cache.k[1] and (d.heads, d.kv_heads, d.head_dim, d.window, d.value_scale) == (
        DCFG.num_heads, DCFG.num_kv_heads, DCFG.head_dim, DCFG.window, DCFG.value_scale)
    with pytest.raises(GraphError, match="out of range"):
        c.layer(CFG.num_layers + DCFG.num_layers)
    with pytest.raises(GraphError, match="no drafter attached"):
        ctx().layer(CFG.num_layers)
