"""The issue's budget: building, scheduling and lowering one mimo-v2.5-pro verify step
(T = 8, 70 layers, 384 experts, 132 workers, ~45k tasks; ~51k before the expert tiles
filled whole waves of workers) takes under 2 s on a 2-core
CI machine (about 0.7 s when this was written; 6.4 s before the hot paths were
vectorised). Best of two runs, so one hiccup of the machine does not fail it."""

from __future__ import annotations

import time

import pytest

from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import MAX_WAITS, DeviceModel, schedule

BUDGET_S = 2.0


@pytest.mark.slow
def test_a_pro_verify_step_builds_schedules_and_lowers_in_under_two_seconds():
    cfg = preset("mimo-v2.5-pro")
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        p = lower(schedule(build_step(cfg, 8, kind="verify", capacity=4096), DeviceModel(workers=132)))
        best = min(best, time.perf_counter() - t0)
        if best < BUDGET_S:
            break
    assert p.n_tasks > 40_000 and p.workers == 132 and int(p.desc["n_wait"].max()) <= MAX_WAITS
    assert best < BUDGET_S, f"{best:.2f} s"
