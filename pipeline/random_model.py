"""Random models in the published storage layout, for tests and benchmarks.

Every tensor is generated from its own seed (``seed`` and the tensor's index), so a
model can be produced lazily, one tensor at a time (the checkpoint writer streams a
multi-GB ``mimo-mini`` this way), and the same seed always gives the same model.

MXFP4 experts are drawn directly as random codes with per-row E8M0 scales sized for a
1/sqrt(fan_in) weight scale, rather than by quantising Gaussians: the result has the
statistics of a real quantised tensor at the cost of a random-byte fill. The lm_head is
scaled so logits spread by several units, which keeps greedy argmax far from ties and
makes token-exact comparisons between executors meaningful.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from . import fp8
from .config import ModelConfig
from .tensor_specs import TensorSpec, tensor_specs
from .weights import DictSource, Weights

# RMS of a uniformly random E2M1 code: sqrt(mean([0, .5, 1, 1.5, 2, 3, 4, 6]**2)).
_E2M1_RMS = math.sqrt(sum(v * v for v in (0, 0.5, 1, 1.5, 2, 3, 4, 6)) / 8)
LOGIT_STD = 4.0


def _gen(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + index) & 0x7FFF_FFFF_FFFF_FFFF)


def _gauss(shape: tuple[int, ...], std: float, g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g) * std


def _random_tensor(cfg: ModelConfig, spec: TensorSpec, g: torch.Generator) -> torch.Tensor:
    name, shape = spec.name, spec.shape
    h = cfg.hidden_size
    if spec.codec == "mxfp4":
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    if spec.codec == "mxfp4_scale":
        fan_in = shape[1] * cfg.quant.mxfp4_block
        e = round(math.log2(1.0 / (math.sqrt(fan_in) * _E2M1_RMS)))
        jitter = torch.randint(-1, 2, (shape[0], 1), generator=g)
        return (127 + e + jitter).expand(shape).to(torch.uint8).contiguous()
    if spec.group == "norm":
        return (1.0 + _gauss(shape, 0.05, g)).to(spec.dtype)
    if spec.group == "sink":
        return _gauss(shape, 1.0, g).to(spec.dtype)
    if name.endswith("e_score_correction_bias"):
        return _gauss(shape, 0.05, g).to(spec.dtype)
    if spec.group == "embed":
        return _gauss(shape, 1.0, g).to(spec.dtype)
    if spec.group == "lm_head":
        return _gauss(shape, LOGIT_STD / math.sqrt(h), g).to(spec.dtype)
    # Linear weights [out, in]: 1/sqrt(in) keeps activations O(1) through the layers.
    w = _gauss(shape, 1.0 / math.sqrt(shape[1]), g)
    return w.to(spec.dtype) if spec.codec == "bf16" else w


def random_tensors(cfg: ModelConfig, seed: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, stored tensor) for every tensor of `cfg`, generated lazily."""
    specs = tensor_specs(cfg)
    by_name = {s.name: s for s in specs}
    for index, spec in enumerate(specs):
        if spec.codec == "fp8_scale":
            continue  # produced together with its fp8 weight
        w = _random_tensor(cfg, spec, _gen(seed, index))
        if spec.codec == "fp8":
            q, scale_inv = fp8.quantize_blockwise(w, cfg.quant.fp8_block)
            yield spec.name, q
            yield spec.name + "_scale_inv", scale_inv.to(by_name[spec.name + "_scale_inv"].dtype)
        else:
            yield spec.name, w


def random_weights(cfg: ModelConfig, seed: int = 0) -> Weights:
    """A whole random model in memory (small presets only)."""
    return Weights(cfg, DictSource(dict(random_tensors(cfg, seed))), where=f"random {cfg.name} seed={seed}")
