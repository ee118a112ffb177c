"""The megakernel on a Hopper GPU: greedy tokens equal the reference's over 128 steps
(tiny and mimo-mini), verify-step logits equal the CPU executor's, and a never-signalled
event ends the launch with a named DeviceTimeoutError instead of a hang."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.errors import DeviceTimeoutError
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


def reference_greedy(weights, capacity: int, n: int, device) -> list[int]:
    ref = ReferenceModel(weights, capacity=capacity, device=device)
    tok = int(ref.prefill(PROMPT).logits[-1].argmax())
    out = [tok]
    for _ in range(n - 1):
        tok = int(ref.decode(tok).logits[-1].argmax())
        out.append(tok)
    return out


def megakernel_greedy(weights, capacity: int, n: int, device, steps_per_launch: int) -> list[int]:
    from tilewarp.runtime.megakernel import MegakernelRunner
    prog = lower(schedule(build_decode_step(weights.cfg, capacity=capacity), DeviceModel(workers=workers())))
    ref = ReferenceModel(weights, capacity=capacity, device=device)
    tok = int(ref.prefill(PROMPT).logits[-1].argmax())
    runner = MegakernelRunner(prog, weights, ref.cache)
    out = [tok]
    while len(out) < n:
        out += runner.decode(out[-1], min(steps_per_launch, n - len(out)))
    return out


def first_mismatch(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), -1)


def test_tiny_128_greedy_tokens_equal_the_reference(gpu):
    w = random_weights(preset("tiny"), 0)
    ref = reference_greedy(w, 512, 128, gpu)
    mk = megakernel_greedy(w, 512, 128, gpu, steps_per_launch=64)
    assert mk == ref, f"first mismatch at step {first_mismatch(mk, ref)}"


@pytest.mark.slow
def test_mimo_mini_128_greedy_tokens_equal_the_reference(gpu):
    w = random_weights(preset("mimo-mini"), 0)
    ref = reference_greedy(w, 4096, 128, gpu)
    mk = megakernel_greedy(w, 4096, 128, gpu, steps_per_launch=128)
    assert mk == ref, f"first mismatch at step {first_mismatch(mk, ref)}"


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
