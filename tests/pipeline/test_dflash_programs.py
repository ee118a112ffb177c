"""DFlash programs on the CPU executor against the PyTorch reference (`ReferenceModel`,
`DraftModel`, `DFlashDecoder`):

* the draft step gives `DraftModel.propose`'s logits (close) and proposals (equal);
* the verify step exports `ReferenceModel.verify(..., return_hidden=...)`'s hidden states;
* draft + verify programs driven by the host reproduce the reference decoder step by step;
* the chained DFlash program (many steps per launch, acceptance on the device) decodes
  exactly what plain greedy decoding does over 256 tokens, commits whole blocks for a
  perfect drafter, and leaves the drafter's context as the reference would build it;
* every arena word its ops touch is declared, and bad inputs are refused.

The 40-token prompt wraps the target's 24-slot sliding-window ring and the drafter's
32-slot context ring (window 16) before the first step.
"""

from __future__ import annotations

import pytest
import torch

from access_check import check_accesses
from tilewarp.pipeline import cpu_exec, cpu_ops
from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.decoder import DFlashDecoder, plain_decode
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.kv_cache import DraftKVCache
from tilewarp.pipeline.dflash.program_loop import generate
from tilewarp.pipeline.dflash.verify import verify_greedy
from tilewarp.pipeline.dflash.weights import random_draft_weights
from tilewarp.pipeline.errors import GraphError, InputError
from tilewarp.pipeline.graph.dflash_step import build_dflash_step, build_draft_step
from tilewarp.pipeline.graph.ops import STATE_POS, Op
from tilewarp.pipeline.graph.step import build_step, build_verify_step
from tilewarp.pipeline.kv_cache import KVCache
from tilewarp.pipeline.lower import Program, lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.pipeline.schedule import DeviceModel, schedule

CFG = preset("tiny")
DCFG = tiny_drafter(CFG)
B = DCFG.block_size
N = 256
PROMPT = torch.randint(0, CFG.vocab_size, (40,), generator=torch.Generator().manual_seed(0)).tolist()
CAP = len(PROMPT) + N + 2 * B
assert len(PROMPT) > DCFG.window + 16 > CFG.swa_attn.window + 16

# As in test_cpu_executor: fp32 GEMMs of other shapes move bf16-cached K/V by an ulp now and then.
RTOL = 2e-3


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def program(g) -> Program:
    return lower(schedule(g, DeviceModel(workers=8)))


@pytest.fixture(scope="module")
def weights():
    return random_weights(CFG, 0)


@pytest.fixture(scope="module")
def dweights():
    return random_draft_weights(DCFG, 1)


@pytest.fixture(scope="module")
def greedy(weights) -> list[int]:
    return plain_decode(ReferenceModel(weights, capacity=CAP), PROMPT, SamplingParams(max_tokens=N))


@pytest.fixture(scope="module")
def draft_program() -> Program:
    return program(build_draft_step(CFG, DCFG, capacity=CAP))


@pytest.fixture(scope="module")
def verify_program() -> Program:
    return program(build_verify_step(CFG, B, capacity=CAP, export_layers=DCFG.target_layer_ids))


@pytest.fixture(scope="module")
def dflash_program() -> Program:
    return program(build_dflash_step(CFG, DCFG, capacity=CAP))


def prefilled(weights, dweights, dcfg=DCFG, prompt=PROMPT) -> tuple[ReferenceModel, DraftModel, int]:
    """Prompt in the target's cache and its context in the drafter's (the PyTorch prefill,
    contract 7); returns (target, drafter, first generated token)."""
    ref = ReferenceModel(weights, capacity=CAP)
    out = ref.prefill(prompt, return_hidden=dcfg.target_layer_ids)
    drafter = DraftModel(dcfg, dweights, weights, capacity=CAP)
    drafter.append_context(out.hidden, range(len(prompt)))
    return ref, drafter, int(out.logits[-1].argmax())


def dflash_executor(p: Program, weights, dweights) -> tuple[CpuExecutor, int]:
    ref, drafter, first = prefilled(weights, dweights)
    return CpuExecutor(p, weights, ref.cache, draft_weights=dweights, draft_cache=drafter.cache), first


def flat(steps: list[list[int]]) -> list[int]:
    return [t for s in steps for t in s]


# ------------------------------------------------------------------ draft step
@pytest.mark.parametrize("window", [16, None], ids=["window16", "all-context"])
def test_the_draft_step_equals_the_drafters_propose(weights, window):
    """Three blocks, the context growing between them through the reference verify; with
    all context visible the keys span two attention chunks that ATTN_MERGE combines."""
    dcfg = DCFG.replace(window=window)
    dweights = random_draft_weights(dcfg, 1)
    p = program(build_draft_step(CFG, dcfg, capacity=CAP))
    ref, drafter, anchor = prefilled(weights, dweights, dcfg)
    ex = CpuExecutor(p, weights, KVCache(CFG, CAP), draft_weights=dweights, draft_cache=drafter.cache)
    for step in range(3):
        pos = drafter.context_length
        want = drafter.propose(anchor, pos).proposal_logits
        logits, proposals = ex.draft(anchor, seed=step)
        assert rel(logits, want) < RTOL
        assert proposals == want.argmax(-1).tolist()
        assert drafter.context_length == pos, "a draft step does not move the context"
        out = ref.verify([anchor] + proposals, return_hidden=dcfg.target_layer_ids)
        drafter.append_context(out.hidden, range(pos, pos + B))
        ref.truncate(pos + 2)
        drafter.truncate(pos + 2)
        anchor = int(out.logits[1].argmax())


# ------------------------------------------------------------------ verify step
def test_the_verify_step_exports_the_reference_hidden_states(weights, verify_program):
    ref = ReferenceModel(weights, capacity=CAP)
    ref.prefill(PROMPT)
    mine = ReferenceModel(weights, capacity=CAP)
    mine.prefill(PROMPT)
    ex = CpuExecutor(verify_program, weights, mine.cache)
    gen = torch.Generator().manual_seed(3)
    for step in range(4):
        block = torch.randint(0, CFG.vocab_size, (B,), generator=gen).tolist()
        pos = ref.position
        want = ref.verify(block, return_hidden=DCFG.target_layer_ids)
        logits, argmax = ex.verify(block, seed=step)
        hidden = ex.hidden()
        assert list(hidden) == list(DCFG.target_layer_ids)
        for k in DCFG.target_layer_ids:
            assert rel(hidden[k], want.hidden[k]) < RTOL, (step, k)
        assert argmax == want.logits.argmax(-1).tolist() and rel(logits, want.logits) < RTOL
        ref.truncate(pos + 3)
        ex.cache.truncate(pos + 3)


# ------------------------------------------------------------------ host-driven DFlash
def test_draft_and_verify_programs_driven_by_the_host_reproduce_the_reference_decoder(weights, dweights,
                                                                                      draft_program, verify_program):
    decoder = DFlashDecoder(ReferenceModel(weights, capacity=CAP), DraftModel(DCFG, dweights, weights, capacity=CAP),
                            SamplingParams())
    first = decoder.start(PROMPT, 48)
    records = []
    while not decoder.finished:
        records.append(decoder.step())

    ref, drafter, anchor = prefilled(weights, dweights)
    assert anchor == first
    exd = CpuExecutor(draft_program, weights, ref.cache, draft_weights=dweights, draft_cache=drafter.cache)
    exv = CpuExecutor(verify_program, weights, ref.cache)
    for i, rec in enumerate(r for r in records if len(r.proposals) == B - 1):
        pos = ref.cache.length
        assert (rec.anchor, rec.position) == (anchor, pos)
        _, proposals = exd.draft(anchor, seed=i)
        assert proposals == rec.proposals, f"step {i}"
        logits, _ = exv.verify([anchor] + proposals, seed=i)
        verdict = verify_greedy(proposals, logits)
        assert verdict.tokens == rec.committed and verdict.accepted == rec.accepted
        drafter.append_context(exv.hidden(), range(pos, pos + B))
        kept = pos + 1 + verdict.accepted
        ref.cache.truncate(kept)
        drafter.truncate(kept)
        anchor = verdict.tokens[-1]


# ------------------------------------------------------------------ chained DFlash on the device
@pytest.mark.parametrize("seed", [1])
def test_greedy_dflash_programs_equal_plain_greedy_decoding_over_256_tokens(weights, dweights, dflash_program,
                                                                            greedy, monkeypatch, seed):
    ex, first = dflash_executor(dflash_program, weights, dweights)
    launches: list[int] = []
    real = ex.dflash
    monkeypatch.setattr(ex, "dflash", lambda anchor, steps, **kw: launches.append(steps) or real(anchor, steps, **kw))
    steps = generate(ex, first, N, B, steps_per_launch=16, seed=seed)
    assert flat(steps) == greedy
    assert max(launches) == 16 and len(launches) < len(steps) - 1, "several DFlash steps per host call"
    assert ex.cache.length == ex.draft_cache.length >= len(PROMPT) + N - 1


def plant(monkeypatch, p: Program, sequence: list[int], spoil: tuple[int, ...] = ()) -> None:
    """Make the draft step propose `sequence[pos + i]` for slot i (another token at the
    `spoil` slots): the drafter's own proposals are overwritten after its ARGMAX_ROWS, so
    the device's acceptance, rollback and chaining meet every acceptance length."""
    tokens, state = p.buffer("tokens").offset, p.buffer("state").offset
    real = cpu_ops.IMPLS[Op.ARGMAX_ROWS]

    def oracle(ctx, a: dict) -> None:
        real(ctx, a)
        if a["out_off"] == tokens + 1:
            pos = int(ctx.arena_i[state + STATE_POS])
            want = [(sequence[pos + i] + (i in spoil)) % CFG.vocab_size for i in range(1, B)]
            ctx.arena_i[tokens + 1:tokens + B] = torch.tensor(want, dtype=torch.int32)

    monkeypatch.setitem(cpu_exec.IMPLS, Op.ARGMAX_ROWS, oracle)


def test_a_perfect_drafter_commits_whole_blocks_on_the_device(weights, dweights, dflash_program, greedy,
                                                             monkeypatch):
    ex, first = dflash_executor(dflash_program, weights, dweights)
    plant(monkeypatch, dflash_program, PROMPT + greedy + [0] * B)
    steps = generate(ex, first, N, B, steps_per_launch=8)
    assert flat(steps) == greedy
    # 255 tokens after the first: 31 blocks of 7 accepted + the bonus, then one block cut to 7
    assert [len(s) for s in steps] == [1] + [B] * 31 + [7]


def test_a_drafter_wrong_at_slot_3_commits_two_proposals_and_the_correction(weights, dweights, dflash_program,
                                                                            greedy, monkeypatch):
    ex, first = dflash_executor(dflash_program, weights, dweights)
    plant(monkeypatch, dflash_program, PROMPT + greedy + [0] * B, spoil=(3,))
    steps = ex.dflash(first, 10, order="in_order")
    assert [len(s) for s in steps] == [3] * 10
    assert [first] + flat(steps) == greedy[:31]
    assert ex.cache.length == len(PROMPT) + 30 and ex.ints("tokens")[0, 0] == greedy[30]


def test_the_context_the_device_appended_is_the_one_the_drafter_builds(weights, dweights, dflash_program, greedy,
                                                                      monkeypatch):
    """After launches mixing acceptance lengths, the next draft pass (run on the device,
    over context K/V the device appended and rolled back) equals the reference drafter's
    over the same committed tokens."""
    ex, first = dflash_executor(dflash_program, weights, dweights)
    plant(monkeypatch, dflash_program, PROMPT + greedy + [0] * B, spoil=(2, 5))   # commits 2 per step
    done = [first] + flat(ex.dflash(first, 6) + ex.dflash(greedy[12], 5))
    assert done == greedy[:23]
    monkeypatch.undo()
    end = ex.cache.length
    ex.dflash(done[-1], 1)
    ref, drafter, _ = prefilled(weights, dweights, prompt=PROMPT + done[:-1])
    assert drafter.context_length == end
    want = drafter.propose(done[-1], end).proposal_logits
    assert rel(ex.floats("draft_logits"), want) < RTOL
    assert ex.ints("tokens")[0, 1:].tolist() == want.argmax(-1).tolist()


# ------------------------------------------------------------------ declared accesses
def test_every_word_a_draft_or_dflash_op_touches_is_declared(monkeypatch, weights, dweights, draft_program,
                                                             dflash_program):
    ex, first = dflash_executor(draft_program, weights, dweights)
    seen = check_accesses(monkeypatch, draft_program, ex)
    ex.draft(first)
    assert sorted(seen) == list(range(draft_program.n_tasks))

    ex, first = dflash_executor(dflash_program, weights, dweights)
    seen = check_accesses(monkeypatch, dflash_program, ex)
    ex.dflash(first, 2)
    assert sorted(seen) == sorted(list(range(dflash_program.n_tasks)) * 2)


# ------------------------------------------------------------------ refusals
def test_a_dflash_program_needs_its_drafter_and_others_take_none(weights, dweights, dflash_program):
    ref, drafter, _ = prefilled(weights, dweights)
    with pytest.raises(GraphError, match="pass draft_weights"):
        CpuExecutor(dflash_program, weights, ref.cache)
    other = DCFG.replace(name="other-drafter")
    with pytest.raises(GraphError, match="built for drafter"):
        CpuExecutor(dflash_program, weights, ref.cache, draft_weights=random_draft_weights(other, 1),
                    draft_cache=DraftKVCache(other, CAP))
    with pytest.raises(GraphError, match="capacity"):
        CpuExecutor(dflash_program, weights, ref.cache, draft_weights=dweights, draft_cache=DraftKVCache(DCFG, 64))
    decode = program(build_step(CFG, 1, kind="decode", capacity=CAP))
    with pytest.raises(GraphError, match="uses no drafter"):
        CpuExecutor(decode, weights, ref.cache, draft_weights=dweights, draft_cache=drafter.cache)


def test_bad_dflash_launches_are_refused_and_run_nothing(weights, dweights, dflash_program):
    ex, first = dflash_executor(dflash_program, weights, dweights)
    with pytest.raises(GraphError, match="needs a draft program"):
        ex.draft(first)
    for steps in (0, 10**6):
        with pytest.raises(InputError, match="steps"):
            ex.dflash(first, steps)
    with pytest.raises(InputError, match="outside"):
        ex.dflash(CFG.vocab_size, 1)
    ex.draft_cache.length -= 1
    with pytest.raises(InputError, match="context tokens"):
        ex.dflash(first, 1)
    ex.draft_cache.length += 1
    ex.cache.length = ex.draft_cache.length = CAP - B + 1
    with pytest.raises(InputError, match="overflow"):
        ex.dflash(first, 1)
    assert ex.steps_done == 0
