"""Engine backends that run lowered programs on the CPU executor: plain decode steps, and
DFlash steps chained in one launch (draft, verify and acceptance with no host between)."""

from __future__ import annotations

import random
from typing import Iterator

import torch

from tilewarp.pipeline.counter_rng import sample_rows
from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.dflash import program_loop
from tilewarp.pipeline.dflash.copy_draft import CopyDraft
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.graph.dflash_step import build_dflash_step
from tilewarp.pipeline.graph.step import MAX_STEPS_PER_LAUNCH, build_decode_step
from tilewarp.pipeline.kv_cache import KVCache
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams
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


class DFlashProgramBackend:
    """DFlash through the chained dflash program on an executor with `dflash(anchor, steps,
    ...)` (`program_loop.DFlashExecutor`: the CPU executor here, the megakernel in
    `megakernel_dflash`): each launch runs up to `steps_per_launch` whole steps; the
    PyTorch reference prefills both caches (the target's KV cache and the drafter's
    context) where the executor reads them."""

    def __init__(self, executor: program_loop.DFlashExecutor, target: ReferenceModel, draft: DraftModel, *,
                 steps_per_launch: int = 16):
        self.exec = executor
        self.target = target
        self.draft = draft
        self.steps_per_launch = min(steps_per_launch, MAX_STEPS_PER_LAUNCH)
        self.launches = 0   # varies the executor's worker interleavings from launch to launch

    def generate(self, prompt: list[int], params: SamplingParams) -> Iterator[list[int]]:
        """Committed tokens per step, `[first]` (the prefill's token) first; the prompt is
        prefilled here, so bad input raises at the first `next`.

        Sampling uses the programs' counter-based draws (`counter_rng`: temperature only),
        which are what sampled plain decoding with the same seed draws; top-k / top-p have
        no device code, so they are refused rather than silently ignored."""
        if not params.greedy and (params.top_k or params.top_p < 1):
            raise InputError("top_k / top_p: the chained DFlash program samples at a temperature only; "
                             "use --backend reference for top-k / top-p with a drafter")
        seed = (params.seed if params.seed is not None else random.getrandbits(32)) & 0xFFFF_FFFF
        layers = self.draft.cfg.target_layer_ids
        self.target.reset()
        self.draft.reset()
        out = self.target.prefill(prompt, return_hidden=layers)
        self.draft.append_context(out.hidden, range(len(prompt)))
        first = sample_rows(out.logits[-1:].cpu(), seed, len(prompt), params.temperature)[0]
        yield [first]
        history = list(prompt)            # what both caches hold: a copy-drafting program reads it
        anchor, left = first, params.max_tokens - 1
        while left > 0 and anchor not in params.stop_tokens:
            for step in self._launch(anchor, left, params, seed, history):
                yield step
                left -= len(step)
                history += [anchor] + step[:-1]
                anchor = step[-1]

    def _launch(self, anchor: int, left: int, params: SamplingParams, seed: int,
                history: list[int]) -> list[list[int]]:
        """One launch's committed steps, cut by `program_loop` where the request ends."""
        self.launches += 1
        return program_loop.launch_steps(self.exec, anchor, left, self.draft.cfg.block_size,
                                         steps_per_launch=self.steps_per_launch, stop_tokens=params.stop_tokens,
                                         seed=self.launches, temperature=params.temperature, sample_seed=seed,
                                         history=list(history))


class CpuDFlashBackend(DFlashProgramBackend):
    """DFlash through the chained dflash program on the CPU executor."""

    def __init__(self, weights: Weights, target: ReferenceModel, draft: DraftModel, *, steps_per_launch: int = 16,
                 copy: CopyDraft | None = None):
        program = lower(schedule(build_dflash_step(weights.cfg, draft.cfg, capacity=target.cache.capacity,
                                                   copy=copy)))
        super().__init__(CpuExecutor(program, weights, target.cache, draft_weights=draft.weights,
                                     draft_cache=draft.cache), target, draft, steps_per_launch=steps_per_launch)
