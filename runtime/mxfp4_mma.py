"""MXFP4 expert weights in mma.sync fragment order, for the tensor-core expert GEMV
(csrc/ops/gemv_mxfp4.cuh).

mma.sync.m16n8k16 (f16 x f16 -> f32) takes its A operand (16 rows x 16 k) as four half2
registers per lane: with g = lane / 4 and t = lane % 4, a0a1 = A[g][2t, 2t+1],
a2a3 = A[g+8][2t, 2t+1], a4a5 = A[g][2t+8, 2t+9], a6a7 = A[g+8][2t+8, 2t+9] (PTX ISA,
"Matrix fragments for mma.m16n8k16"). The device turns nibbles j and j + 4 of a 32-bit
word into one half2 with two shifts and two masks, so each 16 x 16 tile is stored as 32
words, the lane's 8 codes arranged as nibbles (0, 4) = a0a1, (1, 5) = a2a3, (2, 6) =
a4a5, (3, 7) = a6a7: one coalesced 4-byte load per lane per tile.

Codes [E, N, K/2] (low nibble = even k) become [E, N/16, K/16, 32] words; scales
[E, N, K/32] become [E, N/16, K/32, 16] (the tile's 16 rows innermost, so a lane finds
rows g and g + 8 in one 16-byte group). `decode_half2` is the device's decode in numpy,
for the tests.
"""

from __future__ import annotations

import numpy as np
import torch

TILE = 16


def fragment_cells() -> np.ndarray:
    """[32 lanes, 8 nibbles, 2]: the (row, k) inside the tile of each nibble of a lane's word."""
    cells = np.zeros((32, 8, 2), dtype=np.int64)
    for lane in range(32):
        g, t = divmod(lane, 4)
        for j, (r, c) in enumerate(((g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8))):
            cells[lane, j] = (r, c)          # low half of half2 j
            cells[lane, j + 4] = (r, c + 1)  # high half
    return cells


def check_shape(n: int, k: int) -> None:
    if n % TILE or k % 32:
        raise ValueError(f"the tensor-core MXFP4 layout needs rows % 16 == 0 and k % 32 == 0, got {n} x {k}")


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """[E, N, K/2] uint8 -> the same bytes in fragment order: [E, N/16, K/16, 32] little-
    endian uint32 words, as a [E, N, K/2] uint8 tensor on the same device. In torch, so the
    megakernel repacks a bank on the GPU at upload (numpy took ~2.6 s per mimo-mini bank)."""
    e, n, k2 = codes.shape
    check_shape(n, 2 * k2)
    nib = torch.stack((codes & 0x0F, codes >> 4), dim=-1).reshape(e, n // TILE, TILE, 2 * k2 // TILE, TILE)
    tiles = nib.permute(0, 1, 3, 2, 4)                           # [E, N/16, K/16, 16 rows, 16 k]
    cells = torch.from_numpy(fragment_cells()).to(codes.device)
    picked = tiles[..., cells[..., 0], cells[..., 1]]            # [E, N/16, K/16, 32, 8]
    words = torch.zeros(picked.shape[:-1], dtype=torch.int32, device=codes.device)
    for j in range(8):
        words |= picked[..., j].to(torch.int32) << (4 * j)
    return words.view(torch.uint8).reshape(e, n, k2)


def pack_scales(scales: torch.Tensor) -> torch.Tensor:
    """[E, N, K/32] uint8 -> the same bytes as [E, N/16, K/32, 16] (same shape, same device)."""
    e, n, kb = scales.shape
    check_shape(n, 32 * kb)
    return scales.reshape(e, n // TILE, TILE, kb).permute(0, 1, 3, 2).contiguous().reshape(e, n, kb)


def fragment_words(codes: torch.Tensor) -> np.ndarray:
    """`pack_codes` viewed as its words, [E, N/16, K/16, 32] uint32 (numpy, for the tests)."""
    e, n, k2 = codes.shape
    return pack_codes(codes).cpu().numpy().view(np.uint32).reshape(e, n // TILE, 2 * k2 // TILE, 32)


def _shift(w: np.ndarray, s: int) -> np.ndarray:
    return (w << np.uint32(s)) if s >= 0 else (w >> np.uint32(-s))


def decode_half2(words: np.ndarray, j: int) -> np.ndarray:
    """The device decode of half2 j (nibbles j and j + 4) in numpy: [..., 2] float16, each
    E2M1 value times 2^-14 (exact: the magnitude lands on fp16 bits 11..9, the sign on 15)."""
    w = words.astype(np.uint32)
    bits = (_shift(w, 9 - 4 * j) & np.uint32(0x0E000E00)) | (_shift(w, 12 - 4 * j) & np.uint32(0x80008000))
    halves = np.stack([bits & np.uint32(0xFFFF), bits >> np.uint32(16)], axis=-1).astype(np.uint16)
    return halves.view(np.float16)
