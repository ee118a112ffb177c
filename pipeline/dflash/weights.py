"""DraftWeights: a drafter's tensors, checked against its tensor table; random drafters.

The source is any ``TensorSource`` (a lazy safetensors reader or a dict). Names, shapes
and dtypes are checked once, up front, without reading data; each tensor's values
(NaN / inf) the first time it is read. Every failure names the tensor.
"""

from __future__ import annotations

import math

import torch

from ..tensor_specs import TensorSpec
from ..weights import DictSource, TensorSource, check_finite, check_structure
from .config import DraftConfig
from .tensor_specs import draft_tensor_specs


class DraftWeights:
    """Validated access to a drafter's tensors (all bf16)."""

    def __init__(self, dcfg: DraftConfig, source: TensorSource, *, where: str = "drafter checkpoint"):
        self.cfg = dcfg
        self.source = source
        self.where = where
        self.specs: dict[str, TensorSpec] = {s.name: s for s in draft_tensor_specs(dcfg)}
        self._checked: set[str] = set()
        self._check_structure()

    def _check_structure(self) -> None:
        check_structure(self.source, self.specs, self.where, f"{self.cfg.name!r} drafter")

    def get(self, name: str) -> torch.Tensor:
        """The stored tensor, its values checked on first read."""
        if name not in self.specs:
            raise KeyError(f"{name} is not a tensor of a {self.cfg.name!r} drafter")
        t = self.source.get(name)
        if name not in self._checked:
            check_finite(t, name, self.where)
            self._checked.add(name)
        return t

    def check_all(self) -> None:
        for name in self.specs:
            self.get(name)


# ================================================================ random drafters
def _random_tensor(spec: TensorSpec, g: torch.Generator) -> torch.Tensor:
    """Statistics of a trained drafter at init: unit norms, O(1) activations through the layers."""
    if spec.group == "norm":
        w = 1.0 + 0.05 * torch.randn(spec.shape, generator=g)
    elif spec.group in ("sink", "embed"):
        w = torch.randn(spec.shape, generator=g)
    else:   # linear [out, in]
        w = torch.randn(spec.shape, generator=g) / math.sqrt(spec.shape[1])
    return w.to(spec.dtype)


def random_draft_tensors(dcfg: DraftConfig, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) for every drafter tensor; each drawn from its own seed, so the same seed
    always gives the same drafter and one tensor can be regenerated alone."""
    out = []
    for index, spec in enumerate(draft_tensor_specs(dcfg)):
        g = torch.Generator().manual_seed((seed * 1_000_003 + index + 7_777) & 0x7FFF_FFFF_FFFF_FFFF)
        out.append((spec.name, _random_tensor(spec, g)))
    return out


def random_draft_weights(dcfg: DraftConfig, seed: int = 0) -> DraftWeights:
    """A random drafter in memory (random weights draft poorly: acceptance near 1 token/step)."""
    return DraftWeights(dcfg, DictSource(dict(random_draft_tensors(dcfg, seed))),
                        where=f"random drafter {dcfg.name} seed={seed}")
