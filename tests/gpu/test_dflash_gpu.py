"""DFlash in the megakernel on a Hopper GPU (skipped elsewhere), on tiny with a random drafter:

* op by op, the draft step, the verify step exporting hidden states and two chained dflash
  steps (greedy and sampled) equal the CPU executor: one run of a program planned without
  arena reuse on both executors from the same caches, every buffer compared under the
  bound of the op that wrote it (as test_ops_gpu.py does), integer buffers (proposals,
  choices, committed rows, state, anchor) exactly, both caches to within one bf16 rounding;
* with copy drafting (COPY_DRAFT, over a planted history that repeats), three chained
  steps commit what the CPU executor's commit, the token history ACCEPT extends included;
  over a whole generation from a looping prompt, every block is the CPU's (whole, partial
  and no copies); and a source ~480 tokens back in a long history is found;
* greedy DFlash through the megakernel commits exactly the tokens of plain greedy decoding
  (the reference) over 96 tokens, several steps per launch; and through the Engine;
* sampled DFlash (temperature 0.8, fixed sample_seed) commits, step for step, the tokens
  the CPU executor's DFlash commits, which are those counter-based plain sampling draws
  (`counter_rng`: one noise per position); sampled decode steps agree with the CPU too.

The 40-token prompt wraps the target's 24-slot sliding-window ring and the drafter's
32-slot context ring (window 16) before the first step.
"""

from __future__ import annotations

import pytest
import torch

from tilewarp.pipeline.counter_rng import sample_rows
from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.copy_draft import CopyDraft, copy_source
from tilewarp.pipeline.dflash.decoder import plain_decode
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.kv_cache import DraftKVCache
from tilewarp.pipeline.dflash.program_loop import generate
from tilewarp.pipeline.dflash.weights import random_draft_weights
from tilewarp.pipeline.graph.dflash_step import build_dflash_step, build_draft_step
from tilewarp.pipeline.graph.ops import Op, slot_table_fields
from tilewarp.pipeline.graph.step import build_decode_step, build_verify_step
from tilewarp.pipeline.lower import Program, lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.pipeline.schedule import DeviceModel, schedule
from test_ops_gpu import BOUNDS as TARGET_BOUNDS
from test_ops_gpu import ROUTE_WEIGHTS_TOL
from test_ops_gpu import gpu_copy, writer_ops

pytestmark = pytest.mark.gpu

CFG = preset("tiny")
DCFG = tiny_drafter(CFG)
B = DCFG.block_size
N = 96
PROMPT = torch.randint(0, CFG.vocab_size, (40,), generator=torch.Generator().manual_seed(0)).tolist()
CAP = len(PROMPT) + N + 2 * B
TEMP, SAMPLE_SEED = 0.8, 1234

#: Relative (Frobenius) error bound per op: the target's ops as in test_ops_gpu.py, and the
#: DFlash ops. DRAFT_EMBED and EXPORT_HIDDEN copy; EXPORT_HIDDEN's rows carry the error of
#: the target layers before it. The draft ops read context K/V that the two executors
#: rounded to bf16 independently (one rounding apart at most).
BOUNDS = {**TARGET_BOUNDS, Op.DRAFT_EMBED: 0.0, Op.EXPORT_HIDDEN: 5e-4, Op.DRAFT_ROPE_KV: 5e-4,
          Op.DRAFT_ATTN: 1e-3}


def workers() -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count


@pytest.fixture(scope="module")
def weights():
    return random_weights(CFG, 0)


@pytest.fixture(scope="module")
def dweights():
    return random_draft_weights(DCFG, 1)


def prefilled(weights, dweights, prompt: list[int] = PROMPT, capacity: int = CAP
              ) -> tuple[ReferenceModel, DraftModel, int]:
    """The prompt in the target's cache and its context in the drafter's (the PyTorch
    prefill, on the CPU); returns (target, drafter, first generated token)."""
    ref = ReferenceModel(weights, capacity=capacity)
    out = ref.prefill(prompt, return_hidden=DCFG.target_layer_ids)
    drafter = DraftModel(DCFG, dweights, weights, capacity=capacity)
    drafter.append_context(out.hidden, range(len(prompt)))
    return ref, drafter, int(out.logits[-1].argmax())


def gpu_draft_copy(dc: DraftKVCache) -> DraftKVCache:
    out = DraftKVCache(dc.cfg, dc.capacity, device="cuda")
    for a, b in zip(out.k + out.v, dc.k + dc.v):
        a.copy_(b)
    out.length = dc.length
    out.owner.copy_(dc.owner)
    return out


def program(g, reuse_arena: bool = True) -> Program:
    return lower(schedule(g, DeviceModel(workers=workers()), reuse_arena=reuse_arena))


def executors(p: Program, weights, dweights, prompt: list[int] = PROMPT):
    """(CPU executor, megakernel runner, first token) over the same prefilled caches."""
    from tilewarp.runtime.megakernel import MegakernelRunner
    from tilewarp.runtime.megakernel_dflash import MegakernelDFlashRunner
    ref, drafter, first = prefilled(weights, dweights, prompt, p.capacity)
    gcache, gdraft = gpu_copy(ref.cache), gpu_draft_copy(drafter.cache)
    if p.meta.get("drafter"):
        cpu = CpuExecutor(p, weights, ref.cache, draft_weights=dweights, draft_cache=drafter.cache)
        gpu = MegakernelDFlashRunner(p, weights, gcache, draft_weights=dweights, draft_cache=gdraft)
    else:
        cpu, gpu = CpuExecutor(p, weights, ref.cache), MegakernelRunner(p, weights, gcache)
    return cpu, gpu, first


#: Absolute slack of a K/V element beside its one rounding: a step of >= 2 tokens projects
#: K and V on tensor cores with its input split into bf16 hi + lo, an error of ~2^-17 of
#: sum |x w| (~2^-16 on these shapes), not of the element, which may be near zero.
KV_ATOL = 2 ** -10


def within_one_rounding(got: torch.Tensor, want: torch.Tensor, atol: float = KV_ATOL) -> bool:
    """bf16 tensors equal up to one rounding apart (fp32 inputs on either side of a
    boundary), plus `atol`."""
    a, b = got.float().cpu(), want.float()
    return bool(((a - b).abs() <= 2 ** -7 * torch.maximum(a.abs(), b.abs()) + atol).all())


def routing(tab: torch.Tensor, t: int) -> tuple:
    """What a slot table says (`graph.ops.slot_table_fields`): the used slots' experts and
    token lists, each (token, choice)'s slot, and the weights. Words past the used slots
    and counts are not part of it: the device's ROUTE leaves the previous step's there,
    the CPU's zeroes them."""
    k = CFG.top_k
    f = slot_table_fields(min(t * k, CFG.num_experts), t, k)
    n = int(tab[f["n_used"]])
    counts = tab[f["count"]:f["count"] + n].tolist()
    lists = [tab[f["tokens"] + s * t:f["tokens"] + s * t + c].tolist() for s, c in enumerate(counts)]
    return (n, tab[f["expert"]:f["expert"] + n].tolist(), lists, tab[f["tok_slot"]:f["tok_slot"] + t * k].tolist(),
            tab[f["tok_weight"]:f["tok_weight"] + t * k].view(torch.float32))


def compare_arenas(p: Program, cpu: CpuExecutor, gpu, tokens: int) -> dict[str, float]:
    a_cpu, a_gpu = cpu.ctx.arena, gpu.arena.cpu()
    writers = writer_ops(p)
    worst: dict[str, float] = {}
    for b in p.buffers:
        if b.kind == "external":
            continue
        x = a_cpu[b.offset:b.offset + b.rows * b.cols]
        y = a_gpu[b.offset:b.offset + b.rows * b.cols]
        op = writers.get(b.name)
        if op is None:   # written by no task (the host's inputs): untouched on both sides
            assert torch.equal(x.view(torch.int32), y.view(torch.int32)), f"{b.name} (input) differs"
            continue
        if b.dtype == "i32":
            xi, yi = x.view(torch.int32), y.view(torch.int32)
            if op == Op.ROUTE:
                want, got = routing(xi, tokens), routing(yi, tokens)
                assert want[:-1] == got[:-1], f"{b.name}: routing differs"
                torch.testing.assert_close(got[-1], want[-1], **ROUTE_WEIGHTS_TOL)
            else:
                assert torch.equal(xi, yi), f"{b.name} ({op.name}) differs: {xi.tolist()} vs {yi.tolist()}"
            continue
        if op == Op.LM_HEAD and b.cols == 2:   # tile (max, argmax): the ids exactly
            xs, ys = x.view(-1, 2), y.view(-1, 2)
            assert torch.equal(xs[:, 1], ys[:, 1]), f"{b.name}: tile argmax differs"
            x, y = xs[:, 0].contiguous(), ys[:, 0].contiguous()
        same_inf = torch.isinf(x) & (x == y)   # empty attention chunks: max = -inf on both sides
        x, y = torch.where(same_inf, 0.0, x), torch.where(same_inf, 0.0, y)
        err = float((y - x).norm() / x.norm().clamp(min=1e-30))
        worst[op.name] = max(worst.get(op.name, 0.0), err)
        assert err <= BOUNDS[op], f"{b.name} written by {op.name}: relative error {err:.2e} > {BOUNDS[op]:.0e}"
    return worst


def compare_caches(cpu: CpuExecutor, gpu) -> None:
    for layer in range(CFG.num_layers):
        assert within_one_rounding(gpu.cache.k[layer], cpu.cache.k[layer]), f"target K, layer {layer}"
        assert within_one_rounding(gpu.cache.v[layer], cpu.cache.v[layer]), f"target V, layer {layer}"
    if cpu.draft_cache is not None:
        for layer in range(DCFG.num_layers):
            assert within_one_rounding(gpu.draft_cache.k[layer], cpu.draft_cache.k[layer]), f"draft K, layer {layer}"
            assert within_one_rounding(gpu.draft_cache.v[layer], cpu.draft_cache.v[layer]), f"draft V, layer {layer}"
        assert gpu.draft_cache.length == cpu.draft_cache.length
        assert torch.equal(gpu.draft_cache.owner, cpu.draft_cache.owner)
    assert gpu.cache.length == cpu.cache.length


# ------------------------------------------------------------------ op by op
def copy_history(first: int) -> list[int]:
    """40 tokens (the prompt's length) in which PROMPT[8:12] + [first] occurred before, then
    PROMPT[8:12] again at the end: the suffix with the anchor matches 5 tokens back there."""
    head = PROMPT[:8] + PROMPT[8:12] + [first] + PROMPT[13:24]
    return head + PROMPT[24:36] + PROMPT[8:12]


@pytest.mark.parametrize("kind", ["draft", "verify", "dflash", "dflash-sampled", "dflash-copy"])
def test_every_dflash_op_equals_the_cpu_executor(gpu, weights, dweights, kind):
    if kind == "draft":
        g = build_draft_step(CFG, DCFG, capacity=CAP)
    elif kind == "verify":
        g = build_verify_step(CFG, B, capacity=CAP, export_layers=DCFG.target_layer_ids)
    elif kind == "dflash-copy":   # trust 0.3: the rows' probabilities decide how much is copied
        g = build_dflash_step(CFG, DCFG, capacity=CAP, copy=CopyDraft(min_match=1, trust_permille=300))
    else:
        g = build_dflash_step(CFG, DCFG, capacity=CAP)
    p = program(g, reuse_arena=False)
    cpu, mk, first = executors(p, weights, dweights)
    if kind == "draft":
        want_logits, want = cpu.draft(first)
        got_logits, got = mk.draft(first)
        assert got == want
        assert float((got_logits.cpu() - want_logits).norm() / want_logits.norm()) <= BOUNDS[Op.LM_HEAD]
    elif kind == "verify":
        block = [first] + list(range(5, 5 + B - 1))
        want_logits, want = cpu.verify(block)
        got_logits, got = mk.verify(block)
        assert got == want
        for layer, h in cpu.hidden().items():
            assert float((mk.hidden()[layer].cpu() - h).norm() / h.norm()) <= BOUNDS[Op.EXPORT_HIDDEN], layer
    elif kind == "dflash-copy":
        hist = copy_history(first)
        assert copy_source(hist + [first], 1, 16) == 13, "the planted history makes COPY_DRAFT copy"
        want = cpu.dflash(first, 3, history=hist)
        got = mk.dflash(first, 3, history=hist)
        assert got == want
    else:
        temp = TEMP if kind == "dflash-sampled" else 0.0
        want = cpu.dflash(first, 2, temperature=temp, sample_seed=SAMPLE_SEED)
        got = mk.dflash(first, 2, temperature=temp, sample_seed=SAMPLE_SEED)
        assert got == want
        if temp:
            best, logits = mk.floats("best").cpu(), mk.floats("logits").cpu()
            rows = torch.arange(best.shape[0]) % B
            assert not torch.equal(best[:, 0], logits[rows, best[:, 1].long()]), "maxima of the sampling scores"
    worst = compare_arenas(p, cpu, mk, B)
    compare_caches(cpu, mk)
    ops = {Op(int(o)) for o in p.desc["op"]}
    assert {o.name for o in ops} <= set(worst) | {"ARGMAX_ROWS", "ACCEPT", "ROUTE", "SAMPLE", "COPY_DRAFT"}, \
        "every op was compared"
    print(kind, {k: f"{v:.1e}" for k, v in worst.items()})


# ------------------------------------------------------------------ greedy DFlash
def test_greedy_dflash_in_the_megakernel_equals_plain_greedy_decoding(gpu, weights, dweights):
    greedy = plain_decode(ReferenceModel(weights, capacity=CAP), PROMPT, SamplingParams(max_tokens=N))
    _, mk, first = executors(program(build_dflash_step(CFG, DCFG, capacity=CAP)), weights, dweights)
    assert first == greedy[0]
    launches: list[int] = []
    real = mk.dflash
    mk.dflash = lambda anchor, steps, **kw: launches.append(steps) or real(anchor, steps, **kw)
    steps = generate(mk, first, N, B, steps_per_launch=16)
    got = [t for s in steps for t in s]
    mismatch = next((i for i, (x, y) in enumerate(zip(got, greedy)) if x != y), None)
    assert got == greedy, f"first mismatch at token {mismatch}"
    assert max(launches) > 1 and len(launches) < len(steps) - 1, "several DFlash steps per launch"
    assert mk.cache.length == mk.draft_cache.length >= len(PROMPT) + N - 1


def test_the_engine_runs_dflash_in_the_megakernel(gpu):
    from tilewarp.runtime.engine import Engine
    prompt = PROMPT[:12]
    plain = Engine.from_preset("tiny", backend="reference", capacity=CAP)
    mk = Engine.from_preset("tiny", drafter=True, backend="megakernel", capacity=CAP)
    want = plain.generate(prompt, SamplingParams(max_tokens=64)).tokens
    res = mk.generate(prompt, SamplingParams(max_tokens=64))
    assert res.tokens == want
    assert sum(res.committed_per_step) == 63 and res.mean_committed is not None
    cpu = Engine.from_preset("tiny", drafter=True, backend="cpu", capacity=CAP)
    sampled = SamplingParams(temperature=TEMP, seed=SAMPLE_SEED, max_tokens=48)
    assert mk.generate(prompt, sampled).tokens == cpu.generate(prompt, sampled).tokens


# ------------------------------------------------------------------ copy drafting
#: 40 tokens that repeat a 13-token unit: copying has a source from the first step on.
LOOP_UNIT = torch.randint(0, CFG.vocab_size, (13,), generator=torch.Generator().manual_seed(5)).tolist()
LOOP_PROMPT = LOOP_UNIT * 3 + LOOP_UNIT[:1]


def copy_counts(monkeypatch) -> dict[str, int]:
    """Spies on the CPU executor's COPY_DRAFT: how many of its runs copied none of the
    block's proposals (no source, or the drafter's were worth more), part of them, all."""
    from tilewarp.pipeline import cpu_ops
    real, counts = cpu_ops.IMPLS[Op.COPY_DRAFT], {"none": 0, "part": 0, "all": 0}

    def spy(ctx, a):
        before = ctx.ints(a["tok_off"], B).tolist()
        real(ctx, a)
        changed = [x != y for x, y in zip(before, ctx.ints(a["tok_off"], B).tolist())]
        counts["all" if all(changed[1:]) else "part" if any(changed) else "none"] += 1

    monkeypatch.setitem(cpu_ops.IMPLS, Op.COPY_DRAFT, spy)
    return counts


def proposals_per_step(ex, first: int) -> tuple[list[list[int]], list[list[int]]]:
    """A whole generation from LOOP_PROMPT one step per launch: the committed tokens per
    step, and the block each step verified (a launch leaves its proposals in tokens[1:])."""
    blocks: list[list[int]] = []
    real = ex.dflash

    def one_step(anchor, steps, **kw):
        rows = real(anchor, steps, **kw)
        blocks.append(ex.ints("tokens").reshape(-1)[1:B].tolist())
        return rows

    ex.dflash = one_step
    return generate(ex, first, N, B, steps_per_launch=1, prompt=LOOP_PROMPT), blocks


@pytest.mark.parametrize("trust", [1000, 300], ids=["eager", "picky"])
def test_copy_drafting_in_the_megakernel_proposes_what_the_cpu_executor_proposes(gpu, weights, dweights, trust,
                                                                                monkeypatch):
    """Every block of a whole generation (loop wraps, whole, partial and no copies): the
    GPU's COPY_DRAFT picks the CPU's source and length. (The random target rejects most
    copies, so the committed tokens alone would not show a wrong one.)"""
    p = program(build_dflash_step(CFG, DCFG, capacity=CAP, copy=CopyDraft(min_match=1, trust_permille=trust)))
    cpu, mk, first = executors(p, weights, dweights, LOOP_PROMPT)
    counts = copy_counts(monkeypatch)
    want = proposals_per_step(cpu, first)
    assert counts["all"] > 0 and (trust == 1000 or counts["part"] > 0), f"the rule was exercised: {counts}"
    got = proposals_per_step(mk, first)
    bad = next((i for i, (x, y) in enumerate(zip(got[1], want[1])) if x != y), None)
    assert got == want, f"first different block: step {bad}"


def test_copy_draft_finds_its_source_far_back_in_a_long_history(gpu, weights, dweights):
    """A history as long as tiny's context allows (490 tokens, staged in shared memory by
    16-byte loads) whose suffix with the anchor occurred once, ~480 tokens back: the GPU
    copies what followed it there, as the CPU does."""
    n, cap = 490, CFG.max_position
    prompt = torch.randint(0, CFG.vocab_size, (n,), generator=torch.Generator().manual_seed(7)).tolist()
    p = program(build_dflash_step(CFG, DCFG, capacity=cap, copy=CopyDraft(min_match=1, trust_permille=1000)))
    cpu, mk, first = executors(p, weights, dweights, prompt)
    hist = list(prompt)
    hist[5:10] = hist[-4:] + [first]                 # the suffix [hist[-4:], anchor] at 5..9
    assert copy_source(hist + [first], 1, 16) == 10, "the only earlier occurrence is far back"
    want, got = cpu.dflash(first, 1, history=hist), mk.dflash(first, 1, history=hist)
    block = cpu.ints("tokens").reshape(-1)[1:B].tolist()
    assert block == hist[10:10 + B - 1], "the CPU copied the whole block"
    assert mk.ints("tokens").reshape(-1)[1:B].cpu().tolist() == block
    assert got == want


# ------------------------------------------------------------------ sampled DFlash
def counter_sampled_plain(weights, n: int) -> list[int]:
    """Plain decoding with the programs' counter-based draws: the token at position q is
    sample_rows(logits, SAMPLE_SEED, q, TEMP)."""
    ref = ReferenceModel(weights, capacity=CAP)
    q = len(PROMPT)
    out = [sample_rows(ref.prefill(PROMPT).logits[-1:], SAMPLE_SEED, q, TEMP)[0]]
    while len(out) < n:
        q += 1
        out.append(sample_rows(ref.decode(out[-1]).logits[-1:], SAMPLE_SEED, q, TEMP)[0])
    return out


def test_sampled_dflash_in_the_megakernel_commits_what_the_cpu_executor_commits(gpu, weights, dweights):
    p = program(build_dflash_step(CFG, DCFG, capacity=CAP))
    cpu, mk, _ = executors(p, weights, dweights)
    plain = counter_sampled_plain(weights, N)
    first = plain[0]
    want = generate(cpu, first, N, B, steps_per_launch=8, temperature=TEMP, sample_seed=SAMPLE_SEED)
    got = generate(mk, first, N, B, steps_per_launch=8, temperature=TEMP, sample_seed=SAMPLE_SEED)
    assert got == want, "committed tokens per step differ"
    flat = [t for s in got for t in s]
    assert flat == plain, "sampled DFlash emits what counter-based plain sampling draws"
    assert flat != plain_decode(ReferenceModel(weights, capacity=CAP), PROMPT, SamplingParams(max_tokens=N)), \
        "sampling at 0.8 departs from greedy"


def test_sampled_decode_steps_in_the_megakernel_equal_the_cpu_executors(gpu, weights, dweights):
    p = program(build_decode_step(CFG, capacity=CAP))
    cpu, mk, first = executors(p, weights, dweights)
    want = cpu.decode(first, 32, temperature=TEMP, sample_seed=SAMPLE_SEED)
    got = mk.decode(first, 32, temperature=TEMP, sample_seed=SAMPLE_SEED)
    assert got == want
