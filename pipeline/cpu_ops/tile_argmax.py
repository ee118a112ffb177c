"""The greedy reduction shared by SAMPLE and ARGMAX_ROWS: per row, the lowest token id
among the tiles' equal maxima, which is what one argmax over the whole row gives."""

import torch

from ..errors import DeviceError, nonfinite_message
from .context import Ctx

#: Token ids are below 2**24 (exact as floats); LM_HEAD marks a row whose logits are not
#: all finite with this id (as csrc/ops/sample.cuh).
NONFINITE_TOKEN = 1 << 24


def tile_argmax(ctx: Ctx, best_off: int, n_tiles: int, t: int) -> torch.Tensor:
    """int32 [t]: the token per row from `n_tiles` tiles of (max, argmax as float) rows."""
    best = ctx.rows(best_off, 2, n_tiles * t, 2).reshape(n_tiles, t, 2)
    vals, ids = best[:, :, 0], best[:, :, 1]
    top = vals.max(dim=0).values
    tok = torch.where(vals == top[None, :], ids, torch.full_like(ids, float("inf"))).min(dim=0).values
    bad = ~(tok < NONFINITE_TOKEN)
    if bad.any():
        raise DeviceError(nonfinite_message("logits", int(bad.nonzero()[0, 0])))
    return tok.int()
