"""DFlash step builders: the draft step alone, and the whole DFlash step that chains on
the device.

* `build_draft_step` (kind "draft"): one draft pass over `[tokens[0], MASK x (B-1)]` at
  the state's position; proposals into tokens[1:B], logits into `draft_logits`. The
  position does not move. One step per launch; the host reads the proposals.
* `build_verify_step(..., export_layers=dcfg.target_layer_ids)` (`step.py`, kind
  "verify"): the target over the B tokens, with the drafter's target layers exported
  into `hidden_out`. Together these two run DFlash one host round trip per stage.
* `build_dflash_step` (kind "dflash"): draft pass -> target pass over [anchor,
  proposals] (exporting the hidden states into the arena) -> the target's choice per row
  (ARGMAX_ROWS) -> context append of the B verified tokens into the draft cache -> ACCEPT,
  which writes the committed tokens, the next anchor (tokens[0]) and the new position.
  With copy drafting (`dflash/copy_draft.py`), COPY_DRAFT rewrites the proposals between
  the draft pass and the target pass, from a carried token `history` that the host fills
  to the position before a launch and ACCEPT extends step by step.
  Everything the next step reads (anchor, position) is in carried buffers, so a launch
  runs many DFlash steps with no host in between, like decode. Rollback is the position:
  both caches hold K/V for all B verified positions, and only the committed ones lie
  below the new position.

Task layers (the arena planner frees a buffer one layer after its last use, so layers
must rise in build order): the draft pass takes -(D+3) .. -2, the target -1 .. L, the
context append L+1, ACCEPT L+2.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..dflash.config import DraftConfig
from ..dflash.copy_draft import CopyDraft
from ..gc_pause import without_gc
from .draft_blocks import check_drafter, context_append, draft_pass
from .ir import At, Buffer, Cost, Graph, Ld
from .ops import STATE_WORDS, Op
from .step import MAX_STEPS_PER_LAUNCH, check_capacity, target_pass
from .tiling import TilePolicy, default_policy


def _start(cfg: ModelConfig, dcfg: DraftConfig, kind: str, capacity: int) -> tuple[Graph, Buffer, Buffer]:
    b = dcfg.block_size
    check_capacity(cfg, b, capacity)
    g = Graph(cfg, b, kind, capacity)
    check_drafter(g, dcfg)
    state = g.buffer("state", 1, STATE_WORDS, "i32", kind="carried")
    tok = g.buffer("tokens", 1, b, "i32", kind="carried")
    return g, state, tok


def _draft_layer0(dcfg: DraftConfig) -> int:
    return -(dcfg.num_layers + 3)


@without_gc
def build_draft_step(cfg: ModelConfig, dcfg: DraftConfig, *, capacity: int = 4096,
                     policy: TilePolicy | None = None) -> Graph:
    """One draft pass (see the module docstring)."""
    pol = policy or default_policy(dcfg.block_size)
    g, state, tok = _start(cfg, dcfg, "draft", capacity)
    draft_pass(g, dcfg, tok, state, pol, _draft_layer0(dcfg))
    return g


def _copy_draft(g: Graph, copy: CopyDraft, tok: Buffer, draft_logits: Buffer, state: Buffer, layer: int) -> Buffer:
    """COPY_DRAFT after the draft pass's proposals; returns the carried token history it reads."""
    b = g.tokens
    hist = g.buffer("history", 1, g.capacity, "i32", kind="carried")
    g.meta["copy_draft"] = [copy.min_match, copy.max_match, copy.trust_permille]
    g.task(Op.COPY_DRAFT, {"tok_off": At(tok), "t": b, "logits_off": At(draft_logits), "logits_ld": Ld(draft_logits),
                           "v": g.cfg.vocab_size, "hist_off": At(hist), "state_off": At(state),
                           "min_match": copy.min_match, "max_match": copy.max_match,
                           "trust": copy.trust_permille},
           reads=[tok.tile(), draft_logits.tile(), hist.tile(), state.tile()], writes=[tok.tile(0, 1, 1, b)],
           stage="D.copy", layer=layer, cost=Cost(4 * g.capacity + 4 * (b - 1) * g.cfg.vocab_size))
    return hist


@without_gc
def build_dflash_step(cfg: ModelConfig, dcfg: DraftConfig, *, capacity: int = 4096,
                      policy: TilePolicy | None = None, copy: CopyDraft | None = None) -> Graph:
    """One whole DFlash step that chains on the device (see the module docstring). With
    ``copy``, COPY_DRAFT rewrites the proposals from the carried token ``history`` (which
    the host fills up to the position before a launch, and ACCEPT extends)."""
    pol = policy or default_policy(dcfg.block_size)
    g, state, tok = _start(cfg, dcfg, "dflash", capacity)
    b, layers = g.tokens, cfg.num_layers
    out_tok = g.buffer("out_tokens", MAX_STEPS_PER_LAUNCH, b + 1, "i32", kind="carried")
    caches, draft_logits = draft_pass(g, dcfg, tok, state, pol, _draft_layer0(dcfg))
    hist = None if copy is None else _copy_draft(g, copy, tok, draft_logits, state,
                                                 _draft_layer0(dcfg) + dcfg.num_layers + 1)

    feats = g.buffer("features", b, dcfg.context_width)
    best, n_tiles = target_pass(g, tok, state, pol, export=feats, export_layers=dcfg.target_layer_ids)
    choice = g.buffer("choice", 1, b, "i32")
    g.task(Op.ARGMAX_ROWS, {"best_off": At(best), "n_tiles": n_tiles, "t": b, "out_off": At(choice)},
           reads=[best.tile()], writes=[choice.tile()], stage="choose", layer=layers, cost=Cost(n_tiles * b * 8))

    context_append(g, dcfg, feats, caches, state, pol, layers + 1)

    g.task(Op.ACCEPT, {"prop_off": At(tok, 0, 1), "choice_off": At(choice), "t": b, "tok_off": At(tok),
                       "out_off": At(out_tok), "out_ld": Ld(out_tok), "state_off": At(state),
                       "hist_off": At(hist) if hist is not None else -1},
           reads=[tok.tile() if hist is not None else tok.tile(0, 1, 1, b), choice.tile(), state.tile()],
           writes=[tok.tile(0, 1, 0, 1), out_tok.tile(), state.tile()] + ([hist.tile()] if hist is not None else []),
           stage="accept", layer=layers + 2,
           cost=Cost(4 * b * 4))
    return g
