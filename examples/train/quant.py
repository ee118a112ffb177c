"""MXFP4 fake quantisation: what the exported experts will compute, usable while training.

``fake_mxfp4(w)`` returns exactly ``mxfp4.dequantize(*mxfp4.quantize(w))`` in the forward
pass, the weights the runtime decodes from the checkpoint (OCP "floor" scale mode, the
codec's default, which the export uses too), and passes the gradient straight through to
``w`` (straight-through estimator), so the last part of training can adapt the fp32
master weights to the 4-bit grid (quantisation-aware training).

Blocks of 32 run along the last (input) axis, matching the checkpoint layout
``[out, in]``; leading axes (the stacked experts) are carried along.
"""

from __future__ import annotations

import torch

from tilewarp.pipeline import mxfp4

SCALE_MODE = "floor"


def mxfp4_roundtrip(w: torch.Tensor) -> torch.Tensor:
    """The decoded MXFP4 value of every weight, fp32, no gradient."""
    codes, scales = mxfp4.quantize(w.detach(), scale_mode=SCALE_MODE)
    return mxfp4.dequantize(codes, scales, torch.float32)


def fake_mxfp4(w: torch.Tensor) -> torch.Tensor:
    """Forward: the MXFP4-decoded weights. Backward: identity to ``w``."""
    return w + (mxfp4_roundtrip(w).to(w.dtype) - w).detach()
