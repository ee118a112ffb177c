"""Copy drafting (`pipeline/dflash/copy_draft.py`): the rule, and its three homes agreeing.

* the rule: the latest earlier occurrence of the longest suffix (min..max tokens, in the
  last SEARCH_WINDOW tokens) is the source; the first k tokens of its continuation (round the loop where it reaches the
  anchor) replace the proposals, k the copy length with the largest expected accepted
  length under the draft rows and the copy's trust;
* the reference decoder with copying is still exactly greedy decoding, and copies;
* the COPY_DRAFT op in the chained DFlash program on the CPU executor proposes what the
  reference rule proposes, and the whole program commits, step for step, what the
  reference decoder with copying commits (`tests/gpu/test_dflash_gpu.py` ties the GPU to
  the CPU executor);
* bad policies and missing histories are refused; the megakernel refuses the op where
  its build does not carry it.
"""

from __future__ import annotations

import pytest
import torch

from test_dflash_programs import dweights, weights  # noqa: F401  (fixtures)
from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.copy_draft import CopyDraft, copied_prefix, copy_length, copy_source, slot_probabilities
from tilewarp.pipeline.dflash.decoder import DFlashDecoder, plain_decode
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.program_loop import generate
from tilewarp.pipeline.errors import DeviceError, InputError
from tilewarp.pipeline.graph.dflash_step import build_dflash_step
from tilewarp.pipeline.graph.ops import Op
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.pipeline.schedule import DeviceModel, schedule

CFG = preset("tiny")
DCFG = tiny_drafter(CFG)
B = DCFG.block_size
N = 128
#: A prompt that repeats itself, so copying has something to copy from the first step on.
UNIT = torch.randint(0, CFG.vocab_size, (13,), generator=torch.Generator().manual_seed(5)).tolist()
PROMPT = UNIT * 3 + UNIT[:4]
CAP = len(PROMPT) + N + 2 * B
ALWAYS = CopyDraft(min_match=2, trust_permille=1000)   # a copied slot is certain: copy all of it
#: On the random tiny pair over this prompt: EAGER copies the whole source at all 27 steps
#: that have one; PICKY, whose trust the drafter's probabilities often beat, has a source at
#: 31 steps and copies all of it at 7, part at 3, none at 21.
EAGER = CopyDraft(min_match=1, trust_permille=1000)
PICKY = CopyDraft(min_match=1, trust_permille=300)


# ------------------------------------------------------------------ the rule
def test_the_source_is_the_latest_earlier_occurrence_of_the_longest_suffix():
    seq = [1, 2, 3, 9, 2, 3, 7, 1, 2, 3]
    assert copy_source(seq, 1, 16) == 3                  # [1, 2, 3] at 0..2 beats [2, 3] at 4..5
    assert copy_source(seq, 4, 16) is None               # no earlier run of 4
    assert copy_source([5, 6, 5, 6, 5, 6], 2, 16) == 4   # overlapping runs: the latest end
    assert copy_source(seq, 1, 2) == 6                   # capped at 2: the latest [2, 3] wins
    assert copy_source([4], 1, 16) is None


def test_the_source_is_searched_in_the_last_search_window_tokens(monkeypatch):
    from tilewarp.pipeline.dflash import copy_draft
    seq = [1, 2, 3, 9, 9, 9, 9, 9, 2, 3, 7, 1, 2, 3]
    assert copy_source(seq, 1, 16) == 3                  # [1, 2, 3] at 0..2
    monkeypatch.setattr(copy_draft, "SEARCH_WINDOW", 8)  # the window starts at index 6
    assert copy_source(seq, 1, 16) == 10                 # [2, 3] at 8..9, an index of the whole sequence
    monkeypatch.setattr(copy_draft, "SEARCH_WINDOW", 4)
    assert copy_source(seq, 1, 16) is None               # [7, 1, 2, 3]: no earlier 3 inside


def test_the_copy_length_maximises_the_expected_accepted_length():
    # Copy tokens the drafter gives no chance (chosen 0): a copied slot is worth `trust`.
    assert copy_length([0.6] * 7, [0.0] * 7, 900) == 7          # 0.9 a slot beats 0.6
    assert copy_length([0.6] * 7, [0.0] * 7, 500) == 0          # 0.5 does not
    assert copy_length([0.3] + [0.95] * 6, [0.0] * 7, 500) == 1  # copy where the drafter is unsure only
    # It looks ahead: one copied slot alone is worse (0.5 < 0.6), all three are better
    # (0.5 + 0.25 + 0.125 > 0.6 + 0.12 + 0.024).
    assert copy_length([0.6, 0.2, 0.2], [0.0] * 3, 500) == 3
    # A copy token that is the drafter's own best (chosen == best) is free to take: among
    # equal lengths the longest wins.
    assert copy_length([0.9, 0.5, 0.5], [0.9, 0.1, 0.1], 0) == 1
    assert copy_length([0.99] * 7, [0.0] * 3, 1000) == 3         # certain copies; the copy is 3 long


def test_slot_probabilities_are_the_softmax_maximum_and_the_copy_tokens_share():
    logits = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 2.0, 0.0]])
    best, chosen = slot_probabilities(logits, [1, 2])
    soft = torch.softmax(logits, dim=-1)
    assert best == pytest.approx(soft.max(dim=-1).values.tolist(), rel=1e-6)
    assert chosen == pytest.approx([soft[0, 1].item(), soft[1, 2].item()], rel=1e-6)


def test_the_copy_replaces_the_first_proposals_where_it_pays():
    seq = [1, 2, 3, 40, 41, 42, 43, 1, 2, 3]            # the copy is 40, 41, 42, 43, 1, 2, 3
    v = 128
    unsure = torch.zeros(7, v)                            # uniform rows: 1/128 a slot
    sure = torch.full((7, v), -20.0)
    sure[:, 99] = 20.0                                    # certain of token 99 everywhere
    pol = CopyDraft(min_match=3)
    assert copied_prefix(seq, unsure, pol) == [40, 41, 42, 43, 1, 2, 3]
    assert copied_prefix(seq, sure, pol) == []
    mixed = sure.clone()
    mixed[:2] = 0.0                                       # unsure of the first two slots only
    assert copied_prefix(seq, mixed, pol) == [40, 41]
    # The source runs into the anchor: the text loops with period 4, and the copy goes round.
    assert copied_prefix([1, 2, 3, 40, 1, 2, 3], unsure, pol) == [40, 1, 2, 3, 40, 1, 2]
    assert copied_prefix([7, 1, 2, 3], unsure, pol) == []


@pytest.mark.parametrize("kw", [dict(min_match=0), dict(min_match=5, max_match=4), dict(max_match=65),
                                dict(trust_permille=1001), dict(trust_permille=-1)])
def test_a_bad_policy_is_refused(kw):
    with pytest.raises(InputError, match="copy drafting"):
        CopyDraft(**kw)


# ------------------------------------------------------------------ reference decoder
# The random tiny pair (fixtures `weights`, `dweights`) of the DFlash program tests.


def reference_steps(weights, dweights, copy: CopyDraft | None) -> list[list[int]]:
    dec = DFlashDecoder(ReferenceModel(weights, capacity=CAP), DraftModel(DCFG, dweights, weights, capacity=CAP),
                        SamplingParams(max_tokens=N), copy)
    return list(dec.generate(PROMPT, N))


def test_greedy_dflash_with_copying_is_greedy_decoding(weights, dweights):
    greedy = plain_decode(ReferenceModel(weights, capacity=CAP), PROMPT, SamplingParams(max_tokens=N))
    for copy in (EAGER, PICKY, CopyDraft()):
        assert [t for s in reference_steps(weights, dweights, copy) for t in s] == greedy


class LoopingTarget(ReferenceModel):
    """The reference target, except that its logits say: continue the prompt's period (the
    loops a small target's greedy text falls into), whatever the weights say."""

    def _loop(self, out, n: int):
        pos = torch.arange(self.position - n, self.position) + 1
        out.logits = torch.full_like(out.logits, -10.0)
        out.logits[torch.arange(n), torch.tensor(UNIT)[pos % len(UNIT)]] = 10.0
        return out

    def prefill(self, ids, **kw):
        return self._loop(super().prefill(ids, **kw), len(ids))

    def verify(self, tokens, **kw):
        return self._loop(super().verify(tokens, **kw), len(tokens))


def test_copying_commits_whole_blocks_where_the_target_loops(weights, dweights):
    """A random drafter proposes noise; with copying, a target that repeats the prompt's
    period gets its blocks proposed whole (the default policy lets this random drafter
    overrule the copy where it is sure of other tokens, so it commits fewer)."""
    steps = {}
    for name, copy in (("plain", None), ("always", ALWAYS), ("default", CopyDraft())):
        dec = DFlashDecoder(LoopingTarget(weights, capacity=CAP), DraftModel(DCFG, dweights, weights, capacity=CAP),
                            SamplingParams(max_tokens=N), copy)
        steps[name] = list(dec.generate(PROMPT, N))
        assert [t for s in steps[name] for t in s] == (UNIT * 20)[len(PROMPT) % 13:][:N]
    assert len(steps["always"]) == 1 + -(-(N - 1) // B)
    assert len(steps["always"]) < 30 < 100 < len(steps["plain"])
    assert len(steps["always"]) <= len(steps["default"]) <= len(steps["plain"])


# ------------------------------------------------------------------ the program
def dflash_executor(weights, dweights, copy: CopyDraft) -> tuple[CpuExecutor, int]:
    p = lower(schedule(build_dflash_step(CFG, DCFG, capacity=CAP, copy=copy), DeviceModel(workers=8)))
    ref = ReferenceModel(weights, capacity=CAP)
    out = ref.prefill(PROMPT, return_hidden=DCFG.target_layer_ids)
    drafter = DraftModel(DCFG, dweights, weights, capacity=CAP)
    drafter.append_context(out.hidden, range(len(PROMPT)))
    ex = CpuExecutor(p, weights, ref.cache, draft_weights=dweights, draft_cache=drafter.cache)
    return ex, int(out.logits[-1].argmax())


def test_copy_draft_proposes_what_the_rule_proposes(weights, dweights, monkeypatch):
    ex, first = dflash_executor(weights, dweights, ALWAYS)
    seen: list[tuple[list[int], torch.Tensor, list[int]]] = []
    from tilewarp.pipeline import cpu_ops
    real = cpu_ops.IMPLS[Op.COPY_DRAFT]

    def spy(ctx, a):
        before = ctx.ints(a["tok_off"], B).tolist()
        logits = ctx.rows(a["logits_off"], a["logits_ld"], B - 1, a["v"]).clone()
        real(ctx, a)
        seen.append((before, logits, ctx.ints(a["tok_off"], B).tolist()))

    monkeypatch.setitem(cpu_ops.IMPLS, Op.COPY_DRAFT, spy)
    anchor = UNIT[len(PROMPT) % len(UNIT)]          # the anchor that continues the prompt's period
    ex.dflash(anchor, 1, history=PROMPT)
    (before, logits, after), = seen
    assert after == [anchor] + copied_prefix(PROMPT + [anchor], logits, ALWAYS)
    assert after[1:] == (UNIT * 5)[len(PROMPT) + 1:][:B - 1] != before[1:]


@pytest.mark.parametrize("copy", [EAGER, PICKY, CopyDraft()], ids=["eager", "picky", "default"])
def test_the_chained_program_with_copying_commits_what_the_reference_decoder_commits(weights, dweights, copy):
    ex, first = dflash_executor(weights, dweights, copy)
    got = generate(ex, first, N, B, steps_per_launch=6, prompt=PROMPT)
    assert got == reference_steps(weights, dweights, copy)


def test_the_history_accept_keeps_is_the_committed_text(weights, dweights):
    ex, first = dflash_executor(weights, dweights, ALWAYS)
    steps = ex.dflash(first, 4, history=PROMPT)
    committed = [first] + [t for s in steps for t in s]
    assert ex.ints("history")[0, :ex.cache.length].tolist() == PROMPT + committed[:-1]


def test_a_launch_writes_only_the_history_the_buffer_lacks(weights, dweights, monkeypatch):
    """The prompt at a request's first launch, nothing after it (ACCEPT extends the buffer);
    all of it for another request or after a failed launch."""
    ex, first = dflash_executor(weights, dweights, ALWAYS)
    written: list[int] = []
    real = ex._history.upload
    monkeypatch.setattr(ex._history, "upload", lambda h, pos: (r := real(h, pos), written.append(len(r[1])))[0])
    steps = generate(ex, first, 40, B, steps_per_launch=2, prompt=PROMPT)
    assert written[0] == len(PROMPT) and len(written) > 2 and not any(written[1:])
    committed = [t for s in steps for t in s]
    assert ex.ints("history")[0, :ex.cache.length].tolist() == (PROMPT + committed)[:ex.cache.length]
    ex.cache.length = ex.draft_cache.length = len(PROMPT)        # the same prompt again: a new request
    (row,) = ex.dflash(first, 1, history=PROMPT)
    assert written[-1] == len(PROMPT)
    history = PROMPT + [first] + row[:-1]
    run = ex._run
    monkeypatch.setattr(ex, "_run", lambda *a, **k: (_ for _ in ()).throw(DeviceError("a failed launch")))
    with pytest.raises(DeviceError):
        ex.dflash(row[-1], 1, history=history)
    monkeypatch.setattr(ex, "_run", run)
    ex.dflash(row[-1], 1, history=history)
    assert written[-1] == len(history)                           # not 0: the failed launch may have written


def test_a_copying_program_needs_the_history(weights, dweights):
    ex, first = dflash_executor(weights, dweights, ALWAYS)
    with pytest.raises(InputError, match="pass history= the 43 committed tokens"):
        ex.dflash(first, 1)
    with pytest.raises(InputError, match="pass history="):
        ex.dflash(first, 1, history=PROMPT[:-1])
    with pytest.raises(InputError, match="outside"):
        ex.dflash(first, 1, history=PROMPT[:-1] + [CFG.vocab_size])
    assert ex.steps_done == 0


def test_the_device_op_mirrors_the_rules_limits():
    """csrc/ops/copy_draft.cuh repeats three constants of the rule; a change to one side alone
    would make the GPU disagree with the CPU only on long matches, long contexts or wide blocks."""
    import re
    from pathlib import Path

    from tilewarp.pipeline.dflash.copy_draft import MAX_MATCH_LIMIT, SEARCH_WINDOW
    from tilewarp.runtime.megakernel import COPY_DRAFT_MAX_T
    src = (Path(__file__).resolve().parents[2] / "csrc/ops/copy_draft.cuh").read_text()
    defines = {k: int(v) for k, v in re.findall(r"^#define (TW_COPY_\w+) (\d+)$", src, re.M)}
    assert defines["TW_COPY_MAX_MATCH"] == MAX_MATCH_LIMIT
    assert defines["TW_COPY_WINDOW"] == SEARCH_WINDOW
    assert defines["TW_COPY_DRAFT_MAX_T"] == COPY_DRAFT_MAX_T


def test_the_megakernel_refuses_copy_drafting_in_its_16_token_build():
    from tilewarp.runtime.megakernel import check_gpu_ops
    check_gpu_ops(lower(schedule(build_dflash_step(CFG, DCFG, capacity=CAP, copy=CopyDraft()))))
    wide = DCFG.replace(block_size=16)
    p = lower(schedule(build_dflash_step(CFG, wide, capacity=CAP + 16, copy=CopyDraft())))
    with pytest.raises(DeviceError, match="at most 8 tokens per step; this DFlash program has blocks of 16"):
        check_gpu_ops(p)
