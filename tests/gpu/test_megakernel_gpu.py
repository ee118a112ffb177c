"""The megakernel on a Hopper GPU: greedy tokens equal the reference's over 128 steps
(tiny and mimo-mini), verify-step logits equal the CPU executor's, and a never-signalled
event ends the launch with a named DeviceTimeoutError instead of a hang, and NaN router
scores or logits end it with a named DeviceError instead of an out-of-range index.

Greedy equality is exact except at a near-tie: the megakernel and the reference sum in
different orders (fp32 both), so where the reference's top two logits are closer than
the two implementations' rounding differences, either token is right. At such a step the
test takes the megakernel's own logits for it and checks they agree with the reference's
everywhere within LOGIT_REL of max |logit| (then the flip can only be a near-tie: the
gap is at most twice that difference); the chain then continues from the reference's
token, so every one of the 128 steps is still compared. A real bug moves logits by far
more than LOGIT_REL and fails.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.errors import DeviceError, DeviceTimeoutError
from tilewarp.pipeline.graph.step import build_decode_step, build_verify_step
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.schedule import DeviceModel, schedule

pytestmark = pytest.mark.gpu

PROMPT = [3, 17, 91, 5, 42, 7, 250, 11, 64, 2, 33, 128, 9, 77, 150, 21, 8, 99, 4, 60]


def workers() -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count


#: Largest difference between the megakernel's and the reference's logits, relative to
#: max |logit|, accepted at a near-tie. K/V are rounded to bf16 in the cache, so a one-ulp
#: fp32 difference can move a cached element by a bf16 step: the reference's own paths
#: differ by up to 4.4e-4, and tests/pipeline/test_cpu_executor.py holds the CPU executor
#: to the same 2e-3 (measured here on mimo-mini: 1.3e-4).
LOGIT_REL = 2e-3
#: Ties allowed in 128 steps before the test calls it a divergence.
MAX_TIES = 2


def reference_greedy(weights, capacity: int, n: int, device) -> tuple[list[int], list[torch.Tensor]]:
    """Tokens 0..n-1 and, for each token i > 0, the logits that chose it."""
    ref = ReferenceModel(weights, capacity=capacity, device=device)
    tok = int(ref.prefill(PROMPT).logits[-1].argmax())
    out, logits = [tok], [None]
    for _ in range(n - 1):
        lg = ref.decode(tok).logits[-1].float()
        tok = int(lg.argmax())
        out.append(tok)
        logits.append(lg)
    return out, logits


def tie_gap(logits: torch.Tensor, want: int, got: int) -> float:
    return float((logits[want] - logits[got]) / logits.abs().max())


def megakernel_follows_reference(weights, ref: list[int], ref_logits, capacity: int, device,
                                 steps_per_launch: int) -> list[tuple[int, float]]:
    """Chains of `steps_per_launch` (<= 16, the KV slack that makes rollback safe) greedy
    steps from the reference's tokens; returns the (step, reference's lead) of every
    near-tie, asserting each is one. Steps within a chain equal the reference until one."""
    from tilewarp.runtime.megakernel import MegakernelRunner
    assert steps_per_launch <= 16
    prog = lower(schedule(build_decode_step(weights.cfg, capacity=capacity), DeviceModel(workers=workers())))
    pre = ReferenceModel(weights, capacity=capacity, device=device)
    assert int(pre.prefill(PROMPT).logits[-1].argmax()) == ref[0]
    runner = MegakernelRunner(prog, weights, pre.cache)
    base, i, ties = pre.cache.length, 0, []
    while i < len(ref) - 1:
        steps = min(steps_per_launch, len(ref) - 1 - i)
        out = runner.decode(ref[i], steps)
        bad = next((j for j, t in enumerate(out) if t != ref[i + 1 + j]), None)
        if bad is None:
            i += steps
            continue
        step = i + 1 + bad
        # The megakernel's own logits for that step: back to the position that chose it.
        pre.cache.length = base + step - 1
        assert runner.decode(ref[step - 1], 1) == [out[bad]]
        lg = ref_logits[step]
        diff = float((runner.logits()[-1].float() - lg).abs().max() / lg.abs().max())
        gap = tie_gap(lg, ref[step], out[bad])
        assert diff <= LOGIT_REL, (f"step {step}: megakernel chose {out[bad]}, reference {ref[step]} (ahead by "
                                   f"{gap:.2e}); the logits differ by {diff:.2e} of max |logit|: not a near-tie")
        ties.append((step, gap))
        pre.cache.length = base + step   # drop what the chain wrote past the tie, go on from the reference
        i = step
    assert len(ties) <= MAX_TIES, f"{len(ties)} ties in {len(ref)} steps: {ties}"
    return ties


def test_tiny_128_greedy_tokens_equal_the_reference(gpu):
    w = random_weights(preset("tiny"), 0)
    ref, ref_logits = reference_greedy(w, 512, 128, gpu)
    assert megakernel_follows_reference(w, ref, ref_logits, 512, gpu, steps_per_launch=16) == []


def test_tiny_chains_64_steps_in_one_launch(gpu):
    from tilewarp.runtime.megakernel import MegakernelRunner
    w = random_weights(preset("tiny"), 0)
    ref, _ = reference_greedy(w, 512, 65, gpu)
    prog = lower(schedule(build_decode_step(w.cfg, capacity=512), DeviceModel(workers=workers())))
    pre = ReferenceModel(w, capacity=512, device=gpu)
    pre.prefill(PROMPT)
    assert MegakernelRunner(prog, w, pre.cache).decode(ref[0], 64) == ref[1:]


@pytest.mark.slow
def test_mimo_mini_128_greedy_tokens_equal_the_reference(gpu):
    w = random_weights(preset("mimo-mini"), 0)
    ref, ref_logits = reference_greedy(w, 4096, 128, gpu)
    ties = megakernel_follows_reference(w, ref, ref_logits, 4096, gpu, steps_per_launch=16)
    print(f"mimo-mini: {len(ties)} tie(s) in 128 greedy steps: {ties}")


def test_verify_step_logits_equal_the_cpu_executor(gpu):
    from tilewarp.runtime.megakernel import MegakernelRunner
    cfg = preset("tiny")
    w = random_weights(cfg, 1)
    prog = lower(schedule(build_verify_step(cfg, 8, capacity=256), DeviceModel(workers=workers())))
    block = [5, 6, 7, 8, 9, 10, 11, 12]
    cpu_ref = ReferenceModel(w, capacity=256)
    cpu_ref.prefill(PROMPT)
    cpu_logits, cpu_rows = CpuExecutor(prog, w, cpu_ref.cache).verify(block)
    gpu_ref = ReferenceModel(w, capacity=256, device=gpu)
    gpu_ref.prefill(PROMPT)
    gpu_logits, gpu_rows = MegakernelRunner(prog, w, gpu_ref.cache).verify(block)
    err = (gpu_logits.cpu() - cpu_logits).abs().max() / cpu_logits.abs().max()
    assert err < 2e-3, f"relative max error {err:.2e}"
    assert gpu_rows == cpu_rows


def test_a_never_signalled_event_raises_a_named_timeout(gpu):
    from tilewarp.runtime.megakernel import MegakernelRunner
    cfg = preset("tiny")
    w = random_weights(cfg, 0)
    prog = lower(schedule(build_decode_step(cfg, capacity=256), DeviceModel(workers=workers())))
    waiting = np.flatnonzero(prog.desc["n_wait"] > 0)
    victim = int(waiting[len(waiting) // 2])
    prog.desc["wait_need"][victim][0] = 1_000_000
    ref = ReferenceModel(w, capacity=256, device=gpu)
    ref.prefill(PROMPT)
    runner = MegakernelRunner(prog, w, ref.cache, wait_bound_s=0.25)
    start = time.perf_counter()
    # The first wait to pass its bound is recorded: the stalled task or one that waits on it.
    with pytest.raises(DeviceTimeoutError, match=r"worker \d+ at task \d+ \(\w+, [\w.]+\).*event \d+ reached \d+ of \d+"):
        runner.decode(1, 1)
    assert time.perf_counter() - start < 10.0
    with pytest.raises(Exception, match="stopped on an error"):
        runner.decode(1, 1)


def poisoned_runner(gpu, weight: str, row: int | None = None):
    """A tiny decode runner with NaN in `weight` (all of it, or one row) after upload:
    weights are checked finite at load, so in a run NaN comes from activations (an
    overflow upstream); this is the quickest way to put it there."""
    from tilewarp.runtime.megakernel import MegakernelRunner
    cfg = preset("tiny")
    w = random_weights(cfg, 0)
    prog = lower(schedule(build_decode_step(cfg, capacity=256), DeviceModel(workers=workers())))
    ref = ReferenceModel(w, capacity=256, device=gpu)
    ref.prefill(PROMPT)
    runner = MegakernelRunner(prog, w, ref.cache, wait_bound_s=0.5)
    table = runner.tables[next(d.index for d in prog.weights if d.name == weight)]["w"]
    table[slice(None) if row is None else row] = float("nan")
    return runner


def test_nan_router_scores_raise_a_named_error_not_an_illegal_address(gpu):
    """ROUTE meets NaN scores: the launch ends with a DeviceError naming the task (it was
    an out-of-range expert index), and the GPU context stays usable."""
    runner = poisoned_runner(gpu, "L1.router")
    with pytest.raises(DeviceError, match=r"non-finite values .* \(ROUTE, L1\.\w+\).*router scores of token 0 hold NaN"):
        runner.decode(1, 1)
    assert torch.ones(4, device=gpu).sum().item() == 4.0   # the context survived


@pytest.mark.parametrize("temperature", [0.0, 0.8], ids=["greedy", "sampled"])
def test_a_nan_logit_raises_a_named_error_not_a_token(gpu, temperature):
    """One NaN logit (LM-head row 7): the compare would skip it (or, all NaN, leave the
    argmax at 0x7fffffff for the next step's EMBED); SAMPLE refuses the row instead."""
    runner = poisoned_runner(gpu, "lm_head", row=7)
    with pytest.raises(DeviceError, match=r"non-finite values .* \(SAMPLE, \w+\).*logits of token 0 hold NaN or inf"):
        runner.decode(1, 1, temperature=temperature)
    assert torch.ones(4, device=gpu).sum().item() == 4.0
