"""FP8 e4m3 weights with 128x128 block scales, as the published MiMo release stores
``qkv_proj`` and the dense MLP: ``w ~= fp8 * weight_scale_inv[block]``."""

from __future__ import annotations

import torch

from .config import ceil_div
from .errors import QuantizationError

E4M3_MAX = 448.0


def _expand(scale: torch.Tensor, shape: tuple[int, int], block: tuple[int, int]) -> torch.Tensor:
    s = scale.repeat_interleave(block[0], dim=0).repeat_interleave(block[1], dim=1)
    return s[: shape[0], : shape[1]]


def quantize_blockwise(w: torch.Tensor, block: tuple[int, int] = (128, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    """w [out, in] -> (float8_e4m3fn [out, in], fp32 scale_inv [ceil(out/b0), ceil(in/b1)])."""
    if w.ndim != 2:
        raise QuantizationError(f"quantize_blockwise: need a 2-D weight, got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise QuantizationError("quantize_blockwise: input has NaN/inf")
    out, inp = w.shape
    rb, cb = ceil_div(out, block[0]), ceil_div(inp, block[1])
    padded = torch.zeros(rb * block[0], cb * block[1], dtype=torch.float32, device=w.device)
    padded[:out, :inp] = w.float()
    amax = padded.view(rb, block[0], cb, block[1]).abs().amax(dim=(1, 3))
    scale_inv = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    q = (w.float() / _expand(scale_inv, (out, inp), block)).clamp(-E4M3_MAX, E4M3_MAX)
    return q.to(torch.float8_e4m3fn), scale_inv


def dequantize_blockwise(q: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = (128, 128),
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    out, inp = q.shape
    want = (ceil_div(out, block[0]), ceil_div(inp, block[1]))
    if tuple(scale_inv.shape) != want:
        raise QuantizationError(f"dequantize_blockwise: scale_inv shape {tuple(scale_inv.shape)}, expected {want}")
    return (q.float() * _expand(scale_inv.float(), (out, inp), block)).to(dtype)
