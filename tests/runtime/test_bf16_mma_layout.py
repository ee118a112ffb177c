"""The bf16 tensor-core format's shared-memory layout (csrc/ops/gemv_bf16.cuh, TwMmaBf16),
mirrored in numpy: a tile's 32-k block copied in 16-byte chunks to their swizzled places,
then read back with ldmatrix.x4's addressing, gives each lane exactly its mma.m16n8k16 A
fragment, and every 8-row ldmatrix phase touches eight different bank groups. (The
formulas below are the C++ ones; the GPU tests check the op end to end.)"""

from __future__ import annotations

import numpy as np


def chunk_src(q: int, k: int) -> int:        # bytes into the weight from the tile block's start
    return (q >> 2) * k * 2 + (q & 3) * 16


def chunk_dst(q: int) -> int:                # bytes into the tile's 1 KB slot
    return (q >> 2) * 64 + (((q & 3) ^ ((q >> 3) & 3)) << 4)


def ldmatrix_row_addr(lane: int, s: int) -> int:
    row, chunk = lane & 15, 2 * s + (lane >> 4)
    return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4)


def copied_tile(w: np.ndarray, k: int) -> np.ndarray:
    """The slot after the 64 chunk copies of rows 0..15, k 0..31 of `w` (uint16 [16, k])."""
    src, slot = w.view(np.uint8).reshape(-1), np.zeros(1024, np.uint8)
    for q in range(64):
        slot[chunk_dst(q):chunk_dst(q) + 16] = src[chunk_src(q, k):chunk_src(q, k) + 16]
    return slot


def test_the_chunks_fill_the_slot_once():
    assert sorted(chunk_dst(q) for q in range(64)) == list(range(0, 1024, 16))


def test_ldmatrix_reads_back_each_lanes_a_fragment():
    k = 96
    w = np.random.default_rng(0).integers(0, 2**16, (16, k), dtype=np.uint16)
    slot = copied_tile(w, k).view(np.uint16)
    for s in range(2):
        # ldmatrix.x4: matrix m's row r comes from lane 8m + r's address; thread l gets
        # elements (l / 4, 2 (l % 4) .. +1) of every matrix.
        mats = [[slot[ldmatrix_row_addr(8 * m + r, s) // 2:][:8] for r in range(8)] for m in range(4)]
        for lane in range(32):
            g, t = divmod(lane, 4)
            want = [w[g, 16 * s + 2 * t:][:2], w[g + 8, 16 * s + 2 * t:][:2],
                    w[g, 16 * s + 2 * t + 8:][:2], w[g + 8, 16 * s + 2 * t + 8:][:2]]
            got = [mats[m][g][2 * t:2 * t + 2] for m in range(4)]
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)


def test_every_ldmatrix_phase_is_free_of_bank_conflicts():
    for s in range(2):
        for m in range(4):
            groups = {(ldmatrix_row_addr(8 * m + r, s) // 16) % 8 for r in range(8)}   # 16-byte bank groups
            assert len(groups) == 8, (s, m, groups)
