"""GPU timing for `tilewarp bench`: per-step times from CUDA events, and the device's
memory bandwidth measured in the same run (the denominator of every "% of floor").

Steps are timed with one chain of events recorded *between* calls and a single
synchronisation at the end, so asynchronous callers (an eager step, a graph replay) are
measured in steady state with the launch queue full, and the host time a synchronous
caller (a megakernel launch, which waits for its status word) spends per call is
included, as a user would see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class StepTimes:
    """Milliseconds per step, one sample per timed call (a call may run several steps)."""

    per_step_ms: tuple[float, ...]
    steps: int

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.per_step_ms, q))

    @property
    def median(self) -> float:
        return self.percentile(50)

    @property
    def p10(self) -> float:
        return self.percentile(10)

    @property
    def p90(self) -> float:
        return self.percentile(90)


def time_calls(call: Callable[[], int], *, steps: int, warmup: int, min_calls: int = 10) -> StepTimes:
    """Time `call` (which runs n >= 1 steps and returns n) until `steps` steps and
    `min_calls` calls are done, after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    events = [torch.cuda.Event(enable_timing=True)]
    counts: list[int] = []
    events[0].record()
    while sum(counts) < steps or len(counts) < min_calls:
        n = call()
        if n < 1:
            raise ValueError(f"a timed call must run at least one step, reported {n}")
        counts.append(n)
        events.append(torch.cuda.Event(enable_timing=True))
        events[-1].record()
    torch.cuda.synchronize()
    per_step = tuple(events[i].elapsed_time(events[i + 1]) / n for i, n in enumerate(counts))
    return StepTimes(per_step, sum(counts))


@dataclass(frozen=True)
class Bandwidth:
    """Device-to-device copy bandwidth, bytes read + written per second."""

    bytes_per_s: float
    copy_bytes: int
    samples_s: tuple[float, ...]
    source: str

    def as_dict(self) -> dict:
        return {"bytes_per_s": self.bytes_per_s, "GB_per_s": self.bytes_per_s / 1e9, "copy_bytes": self.copy_bytes,
                "samples_ms": [s * 1e3 for s in self.samples_s], "source": self.source}


def measure_bandwidth(device: torch.device, nbytes: int = 2 << 30, reps: int = 10, warmup: int = 2) -> Bandwidth:
    """Median bandwidth of copying `nbytes` device to device (2 x nbytes moved per copy)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    for _ in range(warmup):
        dst.copy_(src)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    med = float(np.median(times))
    return Bandwidth(2 * nbytes / med, nbytes, tuple(times),
                     f"measured: median of {reps} device-to-device copies of {nbytes / 2 ** 30:.1f} GiB "
                     "(read + write bytes)")


#: Used by --dry-run only, where nothing is measured; labelled as a datasheet figure.
NOMINAL_BANDWIDTH = Bandwidth(3.35e12, 0, (), "nominal: H100 SXM5 datasheet HBM3 bandwidth, not measured")
