"""Engine backend that runs the lowered decode program on the CPU executor."""

from __future__ import annotations

import torch

from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.graph.step import build_decode_step
from tilewarp.pipeline.kv_cache import KVCache
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.schedule import schedule
from tilewarp.pipeline.weights import Weights


class CpuBackend:
    """Greedy steps are chained inside one executor run, as the megakernel chains them."""

    def __init__(self, weights: Weights, cache: KVCache, *, workers: int = 132, seed: int = 0):
        program = lower(schedule(build_decode_step(weights.cfg, capacity=cache.capacity)))
        self.exec = CpuExecutor(program, weights, cache)
        self.seed = seed

    def feed(self, token: int) -> torch.Tensor:
        self.exec.decode(token, 1, seed=self.seed)
        return self.exec.logits()[-1]

    def feed_greedy(self, token: int, n: int) -> list[int]:
        return self.exec.decode(token, n, seed=self.seed)
