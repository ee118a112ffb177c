"""MXFP4 (OCP Microscaling v1.0): E2M1 elements, 32-element blocks, one E8M0 scale each.

Layout (as the published MiMo checkpoints store it): codes are uint8 ``[out, in/2]``,
two E2M1 codes per byte, **low nibble = even input index**; scales are uint8
``[out, in/32]`` holding E8M0 (value ``2**(byte - 127)``; byte 255 is NaN and rejected).

Quantising follows the OCP spec by default (``scale_mode="floor"``): the shared exponent
is ``floor(log2(amax)) - 2`` (2 = E2M1's largest exponent), elements are rounded to the
nearest E2M1 value with ties to the even code, and a block whose max maps into (6, 8)
clips to 6. ``scale_mode="ceil"`` rounds the scale up instead so nothing clips.
"""

from __future__ import annotations

from typing import Literal

import torch

from .errors import QuantizationError

BLOCK = 32
E8M0_BIAS = 127
E8M0_NAN = 255

#: E2M1 code -> value. Codes 8..15 are the negatives of 0..7 (8 is -0).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_E2M1 = torch.tensor(E2M1_VALUES + tuple(-v for v in E2M1_VALUES), dtype=torch.float32)
_MIDS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
# A value exactly on a midpoint goes to the even code: up where the upper code is even.
_TIE_UP = torch.tensor([False, True, False, True, False, True, False])


def e2m1_table(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return _E2M1.to(dtype)


def e8m0_to_float(scales: torch.Tensor) -> torch.Tensor:
    """E8M0 bytes -> fp32 powers of two (exact, including 2**-127 as a subnormal)."""
    e = scales.to(torch.int32) - E8M0_BIAS
    return torch.ldexp(torch.ones(e.shape, dtype=torch.float32, device=e.device), e)


def check_scales(scales: torch.Tensor, name: str = "scales") -> None:
    """Reject E8M0 NaN bytes (255), naming the first offending position."""
    if scales.dtype != torch.uint8:
        raise QuantizationError(f"{name}: E8M0 scales must be uint8, got {scales.dtype}")
    bad = scales == E8M0_NAN
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise QuantizationError(f"{name}: E8M0 scale byte 255 (NaN) at {idx}")


def unpack_codes(codes: torch.Tensor) -> torch.Tensor:
    """uint8 [..., n/2] -> uint8 codes [..., n], low nibble first."""
    lo = codes & 0x0F
    hi = codes >> 4
    return torch.stack([lo, hi], dim=-1).reshape(*codes.shape[:-1], codes.shape[-1] * 2)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [..., n] (values 0..15) -> uint8 [..., n/2], even index in the low nibble."""
    if codes.shape[-1] % 2:
        raise QuantizationError(f"pack_codes: last dim {codes.shape[-1]} must be even")
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32,
               *, name: str = "mxfp4") -> torch.Tensor:
    """(codes [out, in/2], scales [out, in/32]) -> weights [out, in], exact in fp32."""
    check_scales(scales, name)
    if codes.dtype != torch.uint8:
        raise QuantizationError(f"{name}: codes must be uint8, got {codes.dtype}")
    n_in = codes.shape[-1] * 2
    if scales.shape[-1] * BLOCK != n_in or scales.shape[:-1] != codes.shape[:-1]:
        raise QuantizationError(f"{name}: scales {tuple(scales.shape)} do not match codes {tuple(codes.shape)} "
                                f"(need [..., in/{BLOCK}] for in={n_in})")
    vals = _E2M1.to(codes.device)[unpack_codes(codes).long()]
    s = e8m0_to_float(scales).repeat_interleave(BLOCK, dim=-1)
    return (vals * s).to(dtype)


def quantize(w: torch.Tensor, scale_mode: Literal["floor", "ceil"] = "floor") -> tuple[torch.Tensor, torch.Tensor]:
    """weights [out, in] -> (codes uint8 [out, in/2], scales uint8 [out, in/32])."""
    if w.ndim < 1 or w.shape[-1] % BLOCK:
        raise QuantizationError(f"quantize: last dim {tuple(w.shape)} must be a multiple of {BLOCK}")
    if not bool(torch.isfinite(w).all()):
        raise QuantizationError("quantize: input has NaN/inf")
    x = w.float().reshape(*w.shape[:-1], -1, BLOCK)
    amax = x.abs().amax(dim=-1, keepdim=True)
    tiny = amax == 0
    safe = torch.where(tiny, torch.ones_like(amax), amax)
    if scale_mode == "floor":
        e = torch.floor(torch.log2(safe)) - 2
    elif scale_mode == "ceil":
        e = torch.ceil(torch.log2(safe / 6.0))
    else:
        raise QuantizationError(f"quantize: scale_mode {scale_mode!r} not in ('floor', 'ceil')")
    e = torch.where(tiny, torch.full_like(e, -E8M0_BIAS), e).clamp(-E8M0_BIAS, 254 - E8M0_BIAS)
    scaled = x / torch.ldexp(torch.ones_like(e), e.to(torch.int32))
    mag = scaled.abs().clamp(max=6.0)
    idx = torch.bucketize(mag, _MIDS.to(mag.device), right=False)
    at_mid = mag == _MIDS.to(mag.device)[idx.clamp(max=6)]
    idx = idx + (at_mid & _TIE_UP.to(mag.device)[idx.clamp(max=6)]).long()
    codes = idx.to(torch.uint8) | ((scaled < 0).to(torch.uint8) << 3)
    codes = codes.reshape(*w.shape[:-1], -1)
    scales = (e.squeeze(-1) + E8M0_BIAS).to(torch.uint8)
    return pack_codes(codes), scales
