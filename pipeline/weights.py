"""Weights: the model's tensors as every executor sees them.

A `TensorSource` hands out stored tensors by name (a lazy safetensors reader, or a dict).
`Weights` checks the source against the config's tensor table once (names, shapes,
dtypes: no data read) and checks each tensor's values the first time it is read
(E8M0 byte 255, NaN/inf). It then serves the one decoded view all executors share:

* dense weights as bf16 — FP8 blocks are widened to bf16 here, once, so the reference,
  the CPU executor and the GPU compute with bit-identical weights;
* q/k/v split per projection whatever the stored layout (fused per kv head or split);
* experts as MXFP4 (codes, scales), decoded by `mxfp4.dequantize` where needed.
"""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Protocol

import torch

from . import fp8, mxfp4
from .config import ModelConfig
from .errors import CheckpointError
from .tensor_specs import TensorSpec, expert_name, layer_prefix, qkv_rows, tensor_specs


class TensorSource(Protocol):
    """Where stored tensors come from. `meta` must not read tensor data."""

    def keys(self) -> Iterable[str]: ...
    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]: ...
    def get(self, name: str) -> torch.Tensor: ...


class DictSource:
    """An in-memory `TensorSource` (tests, freshly generated models)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t = dict(tensors)

    def keys(self) -> Iterable[str]:
        return self._t.keys()

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        t = self._t[name]
        return tuple(t.shape), t.dtype

    def get(self, name: str) -> torch.Tensor:
        return self._t[name]


def check_structure(source: TensorSource, specs: dict[str, TensorSpec], where: str, what: str) -> None:
    """Names, shapes and dtypes of `source` against `specs`, without reading tensor data."""
    have = set(source.keys())
    missing = [n for n in specs if n not in have]
    extra = sorted(have - set(specs))
    if missing:
        raise CheckpointError(f"{where}: tensor {missing[0]} is missing ({len(missing)} missing in all: "
                              f"{missing[:4]})")
    if extra:
        raise CheckpointError(f"{where}: tensor {extra[0]} is not part of a {what} ({len(extra)} unexpected in "
                              f"all: {extra[:4]})")
    for name, spec in specs.items():
        shape, dtype = source.meta(name)
        if tuple(shape) != spec.shape:
            raise CheckpointError(f"{where}: tensor {name}: shape {tuple(shape)}, expected {spec.shape}")
        if dtype != spec.dtype:
            raise CheckpointError(f"{where}: tensor {name}: dtype {dtype}, expected {spec.dtype}")


def check_finite(t: torch.Tensor, name: str, where: str) -> None:
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise CheckpointError(f"{where}: tensor {name}: non-finite value {t[idx].item()} at {idx}")


class Mxfp4Weight(NamedTuple):
    codes: torch.Tensor   # uint8 [out, in/2], low nibble = even input index
    scales: torch.Tensor  # uint8 [out, in/32], E8M0

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return mxfp4.dequantize(self.codes, self.scales, dtype=dtype)


class Weights:
    """Validated, decoded access to a model's tensors."""

    def __init__(self, cfg: ModelConfig, source: TensorSource, *, where: str = "checkpoint"):
        self.cfg = cfg
        self.source = source
        self.where = where
        self.specs: dict[str, TensorSpec] = {s.name: s for s in tensor_specs(cfg)}
        self._checked: set[str] = set()
        self._dense: dict[str, torch.Tensor] = {}
        self._check_structure()

    # ------------------------------------------------------------- structure
    def _check_structure(self) -> None:
        check_structure(self.source, self.specs, self.where, f"{self.cfg.name!r} model")

    # ----------------------------------------------------------------- reads
    def raw(self, name: str) -> torch.Tensor:
        """The stored tensor, its values checked on first read."""
        if name not in self.specs:
            raise KeyError(name)
        t = self.source.get(name)
        if name not in self._checked:
            self._check_values(name, t)
            self._checked.add(name)
        return t

    def _check_values(self, name: str, t: torch.Tensor) -> None:
        codec = self.specs[name].codec
        if codec == "mxfp4_scale":
            mxfp4.check_scales(t, name=f"{self.where}: {name}")
        elif codec in ("bf16", "fp8_scale"):
            check_finite(t, name, self.where)
            if codec == "fp8_scale" and bool((t <= 0).any()):
                raise CheckpointError(f"{self.where}: tensor {name}: FP8 block scale must be positive")
        elif codec == "fp8":
            bad = torch.isnan(t.float())
            if bool(bad.any()):
                idx = tuple(int(i) for i in bad.nonzero()[0])
                raise CheckpointError(f"{self.where}: tensor {name}: FP8 NaN code at {idx}")

    def dense(self, name: str) -> torch.Tensor:
        """A non-expert weight as bf16 (FP8 widened with its block scales, once)."""
        hit = self._dense.get(name)
        if hit is not None:
            return hit
        spec = self.specs[name]
        if spec.codec == "fp8":
            scale = self.raw(name + "_scale_inv")
            out = fp8.dequantize_blockwise(self.raw(name), scale, block=self.cfg.quant.fp8_block).to(torch.bfloat16)
        elif spec.codec == "bf16":
            out = self.raw(name)
        else:
            raise KeyError(f"{name} is not a dense weight (codec {spec.codec})")
        self._dense[name] = out
        return out

    def qkv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Wq, Wk, Wv) bf16, rows ordered head-major, whatever the stored layout."""
        p = layer_prefix(layer) + ".self_attn."
        if not self.cfg.fused_qkv:
            return self.dense(p + "q_proj.weight"), self.dense(p + "k_proj.weight"), self.dense(p + "v_proj.weight")
        key = p + "qkv_proj.weight#split"
        if key not in self._dense:
            w = self.dense(p + "qkv_proj.weight")
            s = self.cfg.attn(layer)
            per = w.view(s.num_kv_heads, s.group * s.head_dim + s.head_dim + s.v_head_dim, -1)
            wq, wk, wv = per.split([s.group * s.head_dim, s.head_dim, s.v_head_dim], dim=1)
            rq, rk, rv = qkv_rows(self.cfg, layer)
            self._dense[key + "q"] = wq.reshape(rq, -1).contiguous()
            self._dense[key + "k"] = wk.reshape(rk, -1).contiguous()
            self._dense[key + "v"] = wv.reshape(rv, -1).contiguous()
            self._dense[key] = w
        return self._dense[key + "q"], self._dense[key + "k"], self._dense[key + "v"]

    def expert(self, layer: int, expert: int, proj: str) -> Mxfp4Weight:
        name = expert_name(layer, expert, proj)
        if self.cfg.quant.experts != "mxfp4":
            raise KeyError(f"{name}: experts are stored as bf16; use expert_dense")
        return Mxfp4Weight(self.raw(name), self.raw(name.removesuffix(".weight") + ".weight_scale"))

    def expert_dense(self, layer: int, expert: int, proj: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.cfg.quant.experts == "mxfp4":
            return self.expert(layer, expert, proj).dequantize(dtype)
        return self.raw(expert_name(layer, expert, proj)).to(dtype)

    def check_all(self) -> None:
        """Read every tensor once and check its values (otherwise checked lazily on use)."""
        for name in self.specs:
            self.raw(name)

    def lm_head(self) -> torch.Tensor:
        return self.dense("model.embed_tokens.weight" if self.cfg.tie_word_embeddings else "lm_head.weight")
