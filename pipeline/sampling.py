"""Sampling: request parameters, the logits -> distribution transform, and a seeded sampler.

``probabilities`` is the single definition of temperature / top-k / top-p. DFlash's
lossless verification applies it to both the draft's and the target's logits, so the
two distributions it compares went through the identical transform (Leviathan et al.:
the guarantee holds for whatever distribution p both sides agree on).

Draws use one uniform number per token from a seeded CPU ``torch.Generator`` and an
inverse CDF in float64, so the same seed gives the same tokens whatever device the
logits were computed on.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .errors import InputError

_SEED_LIMIT = 2 ** 64


def _real(name: str, value: Any, allowed: str, ok: Callable[[float], bool]) -> float:
    """A finite real parameter, or an InputError naming it and its allowed range."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or not ok(value)):
        raise InputError(f"{name}={value!r} is invalid: allowed {allowed}")
    return float(value)


def _integer(name: str, value: Any, allowed: str, ok: Callable[[int], bool]) -> int:
    """An integer parameter (bools refused), or an InputError naming it and its allowed range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not ok(int(value)):
        raise InputError(f"{name}={value!r} is invalid: allowed {allowed}")
    return int(value)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each generated token. Validated on construction."""

    temperature: float = 0.0          # 0 = greedy (argmax, ties to the lowest id)
    top_k: int = 0                    # 0 = off; else keep the k most likely tokens
    top_p: float = 1.0                # keep the smallest set of tokens whose mass >= top_p
    seed: int | None = None           # None: seeded from the OS; else reproducible
    max_tokens: int = 64
    stop_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _real("temperature", self.temperature, "a finite number >= 0 (0 = greedy)", lambda t: t >= 0)
        _integer("top_k", self.top_k, "an integer >= 0 (0 = off)", lambda k: k >= 0)
        _real("top_p", self.top_p, "a number in (0, 1]", lambda p: 0 < p <= 1)
        if self.seed is not None:
            _integer("seed", self.seed, "None or an integer in [0, 2**64)", lambda s: 0 <= s < _SEED_LIMIT)
        _integer("max_tokens", self.max_tokens, "an integer >= 1", lambda n: n >= 1)
        try:
            stops = tuple(self.stop_tokens)
        except TypeError:
            raise InputError(f"stop_tokens={self.stop_tokens!r} is invalid: allowed a sequence of token ids "
                             ">= 0") from None
        for t in stops:
            _integer("stop_tokens", t, "token ids >= 0", lambda i: i >= 0)
        object.__setattr__(self, "stop_tokens", tuple(int(t) for t in stops))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def check_vocab(self, vocab_size: int) -> None:
        """Check the parameters that depend on the model: stop ids and top_k within the vocab."""
        for t in self.stop_tokens:
            if t >= vocab_size:
                raise InputError(f"stop_tokens: id {t} is out of range [0, vocab_size={vocab_size})")
        if self.top_k > vocab_size:
            raise InputError(f"top_k={self.top_k} is invalid: allowed 0 (off) to vocab_size={vocab_size}")


def _checked_logits(logits: torch.Tensor) -> torch.Tensor:
    """fp32 logits ``[..., V]``; NaN, +inf and all -inf rows are refused (nothing sane to sample)."""
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise InputError(f"logits: need a floating-point tensor, got {type(logits).__name__}"
                         f"{'' if not isinstance(logits, torch.Tensor) else ' of ' + str(logits.dtype)}")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise InputError(f"logits: need shape [..., vocab] with vocab >= 1, got {tuple(logits.shape)}")
    x = logits.float()
    nan = torch.isnan(x)
    if bool(nan.any()):
        raise InputError(f"logits: NaN at index {tuple(int(i) for i in nan.nonzero()[0])}")
    if bool((x == float("inf")).any()):
        raise InputError("logits: +inf is not a valid logit")
    if bool((x == float("-inf")).all(dim=-1).any()):
        raise InputError("logits: a row is entirely -inf; no token can be sampled")
    return x


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution tokens are drawn from: ``[..., V]`` logits -> ``[..., V]`` probabilities.

    Temperature first, then top-k (exactly k tokens; ties at the cut go to the lower id),
    then top-p on the renormalised top-k distribution (the smallest most-likely set with
    mass >= top_p; the most likely token always stays), then renormalise. Greedy
    (temperature 0) is the point mass on the argmax (ties to the lowest id), so lossless
    verification reduces to the greedy rule with no special case.
    """
    x = _checked_logits(logits)
    if params.greedy:
        return torch.nn.functional.one_hot(x.argmax(dim=-1), x.shape[-1]).float()
    # Shift by the max before dividing: a tiny temperature then sends others to -inf, never NaN.
    x = (x - x.amax(dim=-1, keepdim=True)) / params.temperature
    sorted_x, order = torch.sort(x, dim=-1, descending=True, stable=True)
    keep = torch.ones_like(sorted_x, dtype=torch.bool)
    if params.top_k:
        keep[..., params.top_k:] = False
    if params.top_p < 1:
        keep &= _mass_before(torch.softmax(sorted_x.masked_fill(~keep, float("-inf")).double(), dim=-1)) < params.top_p
    sorted_probs = torch.softmax(sorted_x.masked_fill(~keep, float("-inf")), dim=-1)
    return torch.empty_like(sorted_probs).scatter_(-1, order, sorted_probs)


def _mass_before(sorted_probs: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum: the mass of the tokens ranked above each token."""
    return sorted_probs.cumsum(dim=-1) - sorted_probs


class Sampler:
    """Draws tokens for one request with its own seeded generator."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.generator = torch.Generator(device="cpu")
        if params.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(params.seed)

    def sample(self, logits: torch.Tensor) -> int:
        """One token from logits ``[V]``."""
        if not isinstance(logits, torch.Tensor) or logits.ndim != 1:
            raise InputError(f"logits: sample() takes one row [vocab], got shape "
                             f"{tuple(getattr(logits, 'shape', ()))}; use sample_rows() for [T, vocab]")
        return self.sample_rows(logits[None])[0]

    def sample_rows(self, logits: torch.Tensor) -> list[int]:
        """One token per row of ``[T, V]``, drawn in row order (same stream as T calls of sample)."""
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise InputError(f"logits: sample_rows() takes [T, vocab], got shape "
                             f"{tuple(getattr(logits, 'shape', ()))}")
        probs = probabilities(logits, self.params)
        if self.params.greedy:
            return probs.argmax(dim=-1).tolist()
        return [self._draw(row) for row in probs.detach().to("cpu", torch.float64)]

    def _draw(self, probs: torch.Tensor) -> int:
        """Inverse-CDF draw with one uniform: the first token whose cumulative mass exceeds u."""
        cdf = probs.cumsum(dim=0)
        u = torch.rand(1, dtype=torch.float64, generator=self.generator) * cdf[-1]
        index = int(torch.searchsorted(cdf, u, right=True))
        if index >= probs.numel():      # u rounded up to the total: take the last token with mass
            index = int(probs.nonzero()[-1])
        return index
