"""Engine: the decode engine users embed. One model, one backend, a streaming generate.

Backends:
* "reference": the PyTorch oracle, step by step (CPU or CUDA);
* "cpu": the lowered task program run by the CPU executor (prefill through PyTorch into
  the same KV cache); greedy decoding chains `steps_per_call` steps per launch, sampling
  runs one step per launch and samples the logits on the host;
* "megakernel": the resident CUDA kernel (see `runtime.megakernel`).

With a DFlash drafter (`drafter=`), each step drafts a block and the target verifies it,
committing 1..B tokens: "reference" runs `DFlashDecoder`, "cpu" runs the chained DFlash
program on the CPU executor (`cpu_backend.CpuDFlashBackend`), "megakernel" the same program
in the megakernel (`megakernel_dflash.MegakernelDFlashBackend`). Greedy output is the same
with or without a drafter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generator, Iterator, Literal, Sequence

import torch

from tilewarp.pipeline.checkpoint import load_checkpoint
from tilewarp.pipeline.dflash.checkpoint import load_draft_checkpoint
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.copy_draft import CopyDraft
from tilewarp.pipeline.dflash.decoder import DFlashDecoder
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.weights import DraftWeights, random_draft_weights
from tilewarp.pipeline.errors import CheckpointError, DeviceError, InputError
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import Sampler, SamplingParams
from tilewarp.pipeline.weights import Weights

if TYPE_CHECKING:
    from tokenizers import Tokenizer  # optional: the `demo` extra

    from .cpu_backend import DFlashProgramBackend

Backend = Literal["reference", "cpu", "megakernel"]
BACKENDS = ("reference", "cpu", "megakernel")
# Published shapes: inspect / graph / plan them, never allocate them (hundreds of GB of weights).
PLANNING_ONLY_PRESETS = ("mimo-v2-flash", "mimo-v2.5-pro")


def check_allocatable(preset_name: str) -> None:
    """Refuse a preset whose random weights would not fit in a machine's memory."""
    if preset_name in PLANNING_ONLY_PRESETS:
        raise InputError(f"preset {preset_name!r} is for planning only (inspect, graph): its weights are hundreds "
                         "of GB; use tiny or mimo-mini")


@dataclass
class GenerationResult:
    tokens: list[int]
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    # Tokens each DFlash step committed (after a stop token or max_tokens cut the last one);
    # the prefill's token is not a step. Empty without a drafter.
    committed_per_step: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.decode_s if self.decode_s > 0 else float("inf")

    @property
    def mean_committed(self) -> float | None:
        """Mean tokens committed per DFlash step (the speed-up DFlash buys over one token per
        target pass); None when no DFlash step ran (no drafter, or the prefill's token ended it)."""
        steps = self.committed_per_step
        return sum(steps) / len(steps) if steps else None


class Engine:
    def __init__(self, weights: Weights, *, backend: Backend = "reference", capacity: int | None = None,
                 device: str | None = None, steps_per_call: int = 16, tokenizer_path: Path | None = None,
                 drafter: DraftWeights | None = None, copy_draft: CopyDraft | None = CopyDraft()):
        """`capacity`: KV cache positions (default min(4096, the model's context)); a prompt plus
        its `max_tokens` must fit in it (`room_needed`). `drafter`: decode with DFlash; it must
        read this target's layers and share its vocabulary (checked here, before any work).
        `copy_draft`: with a drafter, copy proposals from the context where it repeats
        (`pipeline/dflash/copy_draft.py`, every backend the same rule); None turns it off. On
        by default: lossless, held-out 4.442 -> 4.536 committed per step with the shipped
        pair, and on the H200 a step with it took 4-25 us longer (of ~0.85 ms; docs/benchmarks.md)."""
        if backend not in BACKENDS:
            raise InputError(f"backend {backend!r} not in {BACKENDS}")
        if backend == "megakernel" and not torch.cuda.is_available():
            raise DeviceError("backend 'megakernel' needs a CUDA GPU and none is visible; use --backend cpu or "
                              "reference")
        if drafter is not None:
            drafter.cfg.check_target(weights.cfg)
        if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int) or steps_per_call < 1:
            raise InputError(f"steps_per_call={steps_per_call!r} is invalid: allowed an integer >= 1")
        cfg = weights.cfg
        # The megakernel reads the KV cache the (PyTorch) prefill writes: both on the GPU.
        device = device or ("cuda" if backend == "megakernel" else "cpu")
        self.cfg = cfg
        self.weights = weights
        self.backend = backend
        if capacity is None:
            capacity = min(4096, cfg.max_position)
        elif isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= cfg.max_position:
            raise InputError(f"capacity={capacity!r} is invalid: allowed an integer in [1, {cfg.max_position}] "
                             f"(the context of {cfg.name})")
        self.capacity = capacity
        self.device = device
        self.steps_per_call = steps_per_call
        self.tokenizer: Tokenizer | None = _load_tokenizer(tokenizer_path) if tokenizer_path else None
        self.model = ReferenceModel(weights, capacity=self.capacity, device=device)
        self.drafter = drafter
        self.copy_draft = copy_draft
        self.draft_model = (DraftModel(drafter.cfg, drafter, weights, capacity=self.capacity, device=device)
                            if drafter is not None else None)
        self._dflash: DFlashProgramBackend | None = None
        if backend == "cpu" and self.draft_model is not None:
            from . import cpu_backend   # lazily: the CPU executor is not needed by other backends
            self._dflash = cpu_backend.CpuDFlashBackend(weights, self.model, self.draft_model,
                                                        steps_per_launch=steps_per_call, copy=copy_draft)
        elif backend == "megakernel" and self.draft_model is not None:
            from .megakernel_dflash import MegakernelDFlashBackend
            self._dflash = MegakernelDFlashBackend(weights, self.model, self.draft_model,
                                                   steps_per_launch=steps_per_call, copy=copy_draft)
        if backend == "cpu":
            from .cpu_backend import CpuBackend
            self._backend = CpuBackend(weights, self.model.cache)
        elif backend == "megakernel":
            # With a drafter every step runs the dflash program: no decode kernel is built.
            from .megakernel import MegakernelBackend
            self._backend = MegakernelBackend(weights, self.model.cache) if self._dflash is None else None
        else:
            self._backend = ReferenceBackend(self.model)
        self.last: GenerationResult | None = None

    # -------------------------------------------------------------- builders
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, drafter_path: str | Path | None = None,
                        backend: Backend = "reference", **kw) -> "Engine":
        """A target checkpoint directory, and optionally its DFlash drafter's directory."""
        path = Path(path)
        tok = path / "tokenizer.json"
        drafter = load_draft_checkpoint(drafter_path) if drafter_path is not None else None
        return cls(load_checkpoint(path), backend=backend, tokenizer_path=tok if tok.exists() else None,
                   drafter=drafter, **kw)

    @classmethod
    def from_preset(cls, name: str, *, seed: int = 0, drafter: bool | DraftWeights = False,
                    backend: Backend = "reference", **kw) -> "Engine":
        """Random weights of a preset shape. `drafter=True` adds a random `tiny_drafter` of the
        same seed: it drafts poorly (about one token per step) but runs every DFlash code path."""
        check_allocatable(name)
        weights = random_weights(preset(name), seed)
        if drafter is True:
            drafter = random_draft_weights(tiny_drafter(weights.cfg), seed)
        return cls(weights, backend=backend, drafter=drafter or None, **kw)

    # ------------------------------------------------------------- tokens
    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise InputError("this model has no tokenizer.json; pass the prompt as token ids")
        return self.tokenizer.encode(text).ids

    def decode_text(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            return " ".join(str(i) for i in ids)
        return self.tokenizer.decode(list(ids))

    # ----------------------------------------------------------- generation
    def room_needed(self, prompt_tokens: int, max_tokens: int) -> int:
        """KV cache positions a request needs. The chained DFlash program writes a whole block
        of B positions per step even when fewer tokens are left, so its last step, anchored
        at most at position prompt + max_tokens - 2, reaches B - 1 positions past that (no
        step runs when the prefill's token is the only one asked for)."""
        if self.drafter is not None and self.backend in ("cpu", "megakernel") and max_tokens > 1:
            return prompt_tokens + max_tokens - 2 + self.drafter.cfg.block_size
        return prompt_tokens + max_tokens

    def stream(self, prompt: Sequence[int], params: SamplingParams | None = None) -> Iterator[int]:
        """Yield generated tokens one at a time (the prompt is prefilled first).

        Greedy decoding asks the backend for up to `steps_per_call` tokens per call (the
        megakernel and the CPU executor chain them on the device); sampling feeds one
        token per call and samples the logits on the host with a seeded generator.
        With a drafter, each DFlash step's committed tokens are yielded one by one, as soon
        as the step (or, on "cpu", the launch) ends, and their count is recorded in
        `self.last.committed_per_step`.
        """
        params = params or SamplingParams()
        params.check_vocab(self.cfg.vocab_size)
        prompt = list(prompt)
        if not prompt:
            raise InputError("prompt: empty; give at least one token")
        need = self.room_needed(len(prompt), params.max_tokens)
        if need > self.capacity:
            block = need - len(prompt) - params.max_tokens
            extra = f" + {block} positions for the last DFlash block" if block else ""
            raise InputError(f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}){extra} exceeds the "
                             f"context capacity {self.capacity}")
        if self.drafter is not None:
            yield from self._stream_dflash(prompt, params)
            return
        self.model.reset()
        sampler = Sampler(params)
        greedy = params.temperature == 0
        out: list[int] = []
        t0 = time.perf_counter()
        token = sampler.sample(self.model.prefill(prompt).logits[-1])
        t1 = time.perf_counter()
        self.last = GenerationResult(out, len(prompt), t1 - t0, 0.0)
        chunk = [token]
        while True:
            if (yield from self._emit(chunk, params, t1)):
                return
            token = chunk[-1]
            if greedy:
                chunk = self._backend.feed_greedy(token, min(self.steps_per_call, params.max_tokens - len(out)))
            else:
                chunk = [sampler.sample(self._backend.feed(token))]

    def _stream_dflash(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        """The DFlash loop of the backend; the first list it gives is the prefill's token."""
        t0 = time.perf_counter()
        if self._dflash is not None:
            steps = self._dflash.generate(prompt, params)
        else:
            assert self.draft_model is not None
            steps = DFlashDecoder(self.model, self.draft_model, params, self.copy_draft).generate(prompt,
                                                                                                 params.max_tokens)
        chunk: list[int] | None = next(steps)
        t1 = time.perf_counter()
        self.last = GenerationResult([], len(prompt), t1 - t0, 0.0)
        while chunk is not None:
            # Both DFlash loops end the request themselves; _emit checks again so that the
            # Engine's stop / max_tokens contract does not rest on their bookkeeping.
            if (yield from self._emit(chunk, params, t1)):
                return
            chunk = next(steps, None)
            if chunk is not None:
                self.last.committed_per_step.append(len(chunk))

    def _emit(self, chunk: list[int], params: SamplingParams, t1: float) -> Generator[int, None, bool]:
        """Yield a chunk's tokens into `self.last`; True once a stop token or max_tokens ends
        the request."""
        assert self.last is not None
        for tk in chunk:
            self.last.tokens.append(tk)
            self.last.decode_s = time.perf_counter() - t1
            yield tk
            if tk in params.stop_tokens or len(self.last.tokens) >= params.max_tokens:
                return True
        return False

    def generate(self, prompt: Sequence[int], params: SamplingParams | None = None) -> GenerationResult:
        """Blocking form of `stream`."""
        for _ in self.stream(prompt, params):
            pass
        assert self.last is not None
        return self.last


class ReferenceBackend:
    """Decode steps through the PyTorch reference, one token per step."""

    def __init__(self, model: ReferenceModel):
        self.model = model

    def feed(self, token: int) -> torch.Tensor:
        return self.model.decode(token).logits[-1]

    def feed_greedy(self, token: int, n: int) -> list[int]:
        out = []
        for _ in range(n):
            token = int(torch.argmax(self.feed(token)))
            out.append(token)
        return out


def _load_tokenizer(path: Path) -> Tokenizer:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise CheckpointError(f"{path}: reading it needs the `tokenizers` package "
                         "(pip install 'tilewarp[demo]')") from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise CheckpointError(f"{path}: not a valid tokenizer.json ({e})") from None
