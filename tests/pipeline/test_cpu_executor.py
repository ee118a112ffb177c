"""The CPU executor runs the lowered Program and gives the reference model's answer:
greedy tokens identical over 64 decode steps (in one launch or several, under several
random worker interleavings, for two random models), verify logits within tolerance with
identical argmax over consecutive DFlash-style steps with rollback; bad inputs are
refused; and every arena word an op touches is one its task declared.

The 40-token prompt is longer than tiny's 24-slot sliding-window ring, so the ring wraps
during prefill and again during decoding.
"""

from __future__ import annotations

import torch
import pytest

from access_check import check_accesses
from tilewarp.pipeline import cpu_exec
from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.cpu_ops.context import Ctx
from tilewarp.pipeline.errors import DeviceError, GraphError, InputError
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.graph.tiling import TilePolicy
from tilewarp.pipeline.kv_cache import MAX_STEP_TOKENS, KVCache
from tilewarp.pipeline.lower import Program, lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.schedule import DeviceModel, schedule

CFG = preset("tiny")
CAP = 128
STEPS = 64
PROMPT = torch.randint(0, CFG.vocab_size, (40,), generator=torch.Generator().manual_seed(0)).tolist()
assert len(PROMPT) > CFG.swa_attn.window + MAX_STEP_TOKENS and len(PROMPT) + STEPS <= CAP

# K/V are rounded to bf16 in the cache, so a one-ulp difference in an fp32 GEMM of another
# shape can move a cached element by one bf16 step; the reference's own paths differ by
# up to 4.4e-4 (max |diff| / max |logit|). Measured for the executor against the
# reference's verify, 4 weight seeds x 8 steps: median ~1e-5, worst 2.5e-4.
LOGIT_RTOL = 2e-3


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def decode_program() -> Program:
    return lower(schedule(build_step(CFG, 1, kind="decode", capacity=CAP)))


@pytest.fixture(scope="module")
def verify_program() -> Program:
    return lower(schedule(build_step(CFG, 8, kind="verify", capacity=CAP), DeviceModel(workers=16)))


@pytest.fixture(scope="module", params=[0, 1], ids=lambda s: f"weights{s}")
def model(request):
    """(weights, first token after the prompt, the reference's 64 greedy tokens, last logits)."""
    w = random_weights(CFG, request.param)
    ref = ReferenceModel(w, capacity=CAP)
    first = int(ref.prefill(PROMPT).logits[-1].argmax())
    tokens, tok = [], first
    for _ in range(STEPS):
        out = ref.decode(tok).logits[-1]
        tok = int(out.argmax())
        tokens.append(tok)
    return w, first, tokens, out


def prefilled_cache(weights) -> KVCache:
    """A cache holding the prompt, written by the reference's prefill (contract 7)."""
    ref = ReferenceModel(weights, capacity=CAP)
    ref.prefill(PROMPT)
    return ref.cache


# ------------------------------------------------------------------ decode
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_greedy_tokens_equal_the_reference_over_64_steps_in_one_launch(decode_program, model, seed):
    w, first, want, last_logits = model
    ex = CpuExecutor(decode_program, w, prefilled_cache(w))
    assert ex.decode(first, STEPS, seed=seed) == want
    assert ex.cache.length == len(PROMPT) + STEPS
    assert relative_error(ex.logits()[0], last_logits) < LOGIT_RTOL


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_greedy_tokens_equal_the_reference_in_four_launches_of_16(decode_program, model, seed):
    w, first, want, _ = model
    ex = CpuExecutor(decode_program, w, prefilled_cache(w))
    got, tok = [], first
    for launch in range(4):
        out = ex.decode(tok, 16, seed=seed * 10 + launch)
        got += out
        tok = out[-1]
    assert got == want
    assert ex.steps_done == STEPS


def test_sliding_window_attention_cut_into_chunks_gives_the_same_tokens(model):
    # tiny's 24-key window ring in 3 chunks of 8 (mimo-mini's 144 keys go in 4 of 36).
    g = build_step(CFG, 1, kind="decode", capacity=CAP, policy=TilePolicy(swa_min_chunk=8))
    swa_layer = next(i for i in range(CFG.num_layers) if CFG.attn(i).window is not None)
    assert sum(t.stage == f"L{swa_layer}.attn" for t in g.tasks) == 3 * CFG.swa_attn.num_kv_heads
    w, first, want, last_logits = model
    ex = CpuExecutor(lower(schedule(g)), w, prefilled_cache(w))
    assert ex.decode(first, STEPS, seed=7) == want
    assert relative_error(ex.logits()[0], last_logits) < LOGIT_RTOL


def test_in_order_execution_gives_the_same_tokens(decode_program, model):
    w, first, want, _ = model
    ex = CpuExecutor(decode_program, w, prefilled_cache(w))
    assert ex.decode(first, 16, order="in_order") == want[:16]


# ------------------------------------------------------------------ verify
def test_verify_steps_match_the_reference_across_rollbacks(verify_program):
    """Six DFlash-like steps: 8 tokens verified, the first 3 kept, the rest rolled back in
    both the reference and the executor's cache."""
    w = random_weights(CFG, 0)
    ref = ReferenceModel(w, capacity=CAP)
    ref.prefill(PROMPT)
    ex = CpuExecutor(verify_program, w, prefilled_cache(w))
    gen = torch.Generator().manual_seed(7)
    worst = 0.0
    for step in range(6):
        block = torch.randint(0, CFG.vocab_size, (8,), generator=gen).tolist()
        pos = ref.position
        want = ref.verify(block).logits
        logits, argmax = ex.verify(block, seed=step)
        assert logits.shape == want.shape
        worst = max(worst, relative_error(logits, want))
        assert argmax == want.argmax(-1).tolist(), f"step {step}"
        assert ex.cache.length == ref.position == pos + 8
        ref.truncate(pos + 3)
        ex.cache.truncate(pos + 3)
    assert worst < LOGIT_RTOL, worst


# ------------------------------------------------------------------ refusals
def test_weights_of_another_model_are_refused(decode_program):
    other = random_weights(CFG.replace(name="tiny-other"), 0)
    with pytest.raises(GraphError, match="built for 'tiny'"):
        CpuExecutor(decode_program, other, KVCache(other.cfg, CAP))


def test_a_cache_of_another_capacity_is_refused(decode_program):
    w = random_weights(CFG, 0)
    with pytest.raises(GraphError, match="capacity"):
        CpuExecutor(decode_program, w, KVCache(CFG, CAP * 2))


def test_a_program_of_the_other_kind_is_refused(decode_program, verify_program):
    w = random_weights(CFG, 0)
    with pytest.raises(GraphError, match="decode program"):
        CpuExecutor(verify_program, w, KVCache(CFG, CAP)).decode(1, 1)
    with pytest.raises(GraphError, match="verify program"):
        CpuExecutor(decode_program, w, KVCache(CFG, CAP)).verify([1] * 8)


@pytest.mark.parametrize("bad", [-1, CFG.vocab_size, 10**9])
def test_token_ids_out_of_range_are_refused(decode_program, verify_program, bad):
    w = random_weights(CFG, 0)
    with pytest.raises(InputError, match="outside"):
        CpuExecutor(decode_program, w, KVCache(CFG, CAP)).decode(bad, 1)
    with pytest.raises(InputError, match="outside"):
        CpuExecutor(verify_program, w, KVCache(CFG, CAP)).verify([1, 2, bad, 4, 5, 6, 7, 8])


def test_wrong_token_counts_step_counts_and_overflow_are_refused(decode_program, verify_program):
    w = random_weights(CFG, 0)
    with pytest.raises(InputError, match="8 token"):
        CpuExecutor(verify_program, w, KVCache(CFG, CAP)).verify([1, 2, 3])
    ex = CpuExecutor(decode_program, w, KVCache(CFG, CAP))
    for steps in (0, 10**6):
        with pytest.raises(InputError, match="steps"):
            ex.decode(1, steps)
    ex.cache.length = CAP - 2
    with pytest.raises(InputError, match="overflow"):
        ex.decode(1, 3)
    assert ex.steps_done == 0, "a refused launch runs nothing"


def poison(ex: CpuExecutor, program: Program, weight: str, row: int | None = None) -> None:
    """NaN into a weight after load (loading checks weights are finite: in a run, NaN comes
    from activations, e.g. an overflow upstream); `row`: only that row."""
    w = ex.ctx.weights[next(d.index for d in program.weights if d.name == weight)]["w"]
    w = w.clone()
    w[slice(None) if row is None else row] = float("nan")
    ex.ctx.weights[next(d.index for d in program.weights if d.name == weight)]["w"] = w


def test_nan_router_scores_raise_a_named_error_instead_of_choosing_experts(decode_program):
    """As the megakernel (tests/gpu/test_megakernel_gpu.py): a NaN has no place in the
    top-k order, so ROUTE refuses."""
    w = random_weights(CFG, 0)
    ex = CpuExecutor(decode_program, w, prefilled_cache(w))
    poison(ex, decode_program, "L1.router")
    with pytest.raises(DeviceError, match=r"cpu executor at task \d+ \(ROUTE, L1\.\w+\).*token 0 hold NaN"):
        ex.decode(PROMPT[-1], 1)


@pytest.mark.parametrize("temperature", [0.0, 0.8], ids=["greedy", "sampled"])
def test_a_nan_logit_is_refused_by_sample_instead_of_becoming_a_token(decode_program, temperature):
    """One NaN logit (LM-head row 7) is enough: torch's argmax would pick it, the device's
    compare would skip it; both refuse the row instead, naming SAMPLE."""
    w = random_weights(CFG, 0)
    ex = CpuExecutor(decode_program, w, prefilled_cache(w))
    poison(ex, decode_program, "lm_head", row=7)
    with pytest.raises(DeviceError, match=r"\(SAMPLE, \w+\).*logits of token 0 hold NaN or inf"):
        ex.decode(PROMPT[-1], 1, temperature=temperature)


# ------------------------------------------------------------------ declared accesses
def test_in_debug_mode_every_word_an_op_touches_is_declared_by_its_task(monkeypatch, decode_program,
                                                                        verify_program):
    w = random_weights(CFG, 0)
    ex = CpuExecutor(decode_program, w, prefilled_cache(w))
    seen = check_accesses(monkeypatch, decode_program, ex)
    ex.decode(PROMPT[-1], 3, seed=1)
    assert sorted(seen) == sorted(list(range(decode_program.n_tasks)) * 3)

    ex = CpuExecutor(verify_program, w, prefilled_cache(w))
    seen = check_accesses(monkeypatch, verify_program, ex)
    ex.verify(PROMPT[:8], seed=1)
    assert sorted(seen) == list(range(verify_program.n_tasks))


def test_the_access_check_notices_an_op_that_reads_an_undeclared_word(monkeypatch, decode_program):
    """The check above is not vacuous: an EMBED that also reads the state block is caught."""
    w = random_weights(CFG, 0)
    ex = CpuExecutor(decode_program, w, prefilled_cache(w))
    state = decode_program.buffer("state").offset
    real_embed = cpu_exec.IMPLS[cpu_exec.Op.EMBED]

    def leaky(ctx: Ctx, a: dict) -> None:
        real_embed(ctx, a)
        ctx.rows(a["out_off"], a["out_ld"], 1, 1).add_(ctx.arena[state + 1])

    monkeypatch.setitem(cpu_exec.IMPLS, cpu_exec.Op.EMBED, leaky)
    check_accesses(monkeypatch, decode_program, ex)
    with pytest.raises(AssertionError, match="EMBED.*other results"):
        ex.decode(PROMPT[-1], 1)
