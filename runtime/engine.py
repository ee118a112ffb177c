"""Engine: the decode engine users embed. One model, one backend, a streaming generate.

Backends:
* "reference": the PyTorch oracle, step by step (CPU or CUDA);
* "cpu": the lowered task program run by the CPU executor (prefill through PyTorch into
  the same KV cache); greedy decoding chains `steps_per_call` steps per launch, sampling
  runs one step per launch and samples the logits on the host;
* "megakernel": the resident CUDA kernel (see `runtime.megakernel`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal, Sequence

import torch

from tilewarp.pipeline.checkpoint import load_checkpoint
from tilewarp.pipeline.errors import CheckpointError, InputError
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import Sampler, SamplingParams
from tilewarp.pipeline.weights import Weights

if TYPE_CHECKING:
    from tokenizers import Tokenizer  # optional: the `demo` extra

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

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.decode_s if self.decode_s > 0 else float("inf")


class Engine:
    def __init__(self, weights: Weights, *, backend: Backend = "reference", capacity: int | None = None,
                 device: str | None = None, steps_per_call: int = 16, tokenizer_path: Path | None = None):
        """`capacity`: KV cache positions (default min(4096, the model's context)); a prompt plus
        its `max_tokens` must fit in it."""
        if backend not in BACKENDS:
            raise InputError(f"backend {backend!r} not in {BACKENDS}")
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
        if backend == "cpu":
            from .cpu_backend import CpuBackend
            self._backend = CpuBackend(weights, self.model.cache)
        elif backend == "megakernel":
            from .megakernel import MegakernelBackend
            self._backend = MegakernelBackend(weights, self.model.cache)
        else:
            self._backend = ReferenceBackend(self.model)
        self.last: GenerationResult | None = None

    # -------------------------------------------------------------- builders
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, backend: Backend = "reference", **kw) -> "Engine":
        path = Path(path)
        tok = path / "tokenizer.json"
        return cls(load_checkpoint(path), backend=backend, tokenizer_path=tok if tok.exists() else None, **kw)

    @classmethod
    def from_preset(cls, name: str, *, seed: int = 0, backend: Backend = "reference", **kw) -> "Engine":
        check_allocatable(name)
        return cls(random_weights(preset(name), seed), backend=backend, **kw)

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
    def stream(self, prompt: Sequence[int], params: SamplingParams | None = None) -> Iterator[int]:
        """Yield generated tokens one at a time (the prompt is prefilled first).

        Greedy decoding asks the backend for up to `steps_per_call` tokens per call (the
        megakernel and the CPU executor chain them on the device); sampling feeds one
        token per call and samples the logits on the host with a seeded generator.
        """
        params = params or SamplingParams()
        params.check_vocab(self.cfg.vocab_size)
        prompt = list(prompt)
        if not prompt:
            raise InputError("prompt: empty; give at least one token")
        if len(prompt) + params.max_tokens > self.capacity:
            raise InputError(f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                             f"context capacity {self.capacity}")
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
            for tk in chunk:
                out.append(tk)
                self.last.decode_s = time.perf_counter() - t1
                yield tk
                if tk in params.stop_tokens or len(out) >= params.max_tokens:
                    return
            token = chunk[-1]
            if greedy:
                chunk = self._backend.feed_greedy(token, min(self.steps_per_call, params.max_tokens - len(out)))
            else:
                chunk = [sampler.sample(self._backend.feed(token))]

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
