"""The tensor-core MXFP4 layout (runtime/mxfp4_mma.py): each lane's 32-bit word holds
exactly the 8 codes of its mma.m16n8k16 A fragment, the device's two-shift decode gives
each code's E2M1 value times 2^-14 in fp16, and an mma emulated from those fragments
(plus the packed scales) reproduces the dequantised matrix product."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tilewarp.pipeline.mxfp4 import E2M1_VALUES
import torch

from tilewarp.runtime.mxfp4_mma import check_shape, decode_half2, fragment_cells, fragment_words, pack_scales

VALUES = np.array(E2M1_VALUES + tuple(-v for v in E2M1_VALUES))


def random_bank(e=2, n=32, k=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (e, n, k // 2), dtype=np.uint8),
            rng.integers(118, 136, (e, n, k // 32), dtype=np.uint8))


def dequantised(codes, scales):
    e, n, k2 = codes.shape
    nib = np.empty((e, n, 2 * k2), np.int64)
    nib[..., 0::2], nib[..., 1::2] = codes & 15, codes >> 4
    return VALUES[nib] * np.repeat(2.0 ** (scales.astype(np.int64) - 127), 32, axis=-1)


def test_each_fragment_cell_is_covered_once_per_tile():
    cells = fragment_cells().reshape(-1, 2)
    assert len({tuple(c) for c in cells}) == 256 and cells.min() == 0 and cells.max() == 15


def test_the_two_shift_decode_gives_each_fragment_code_times_2_to_the_minus_14():
    codes, _ = random_bank()
    words = fragment_words(torch.from_numpy(codes))   # [E, N/16, K/16, 32]
    nib = np.empty(codes.shape[:2] + (2 * codes.shape[2],), np.int64)
    nib[..., 0::2], nib[..., 1::2] = codes & 15, codes >> 4
    cells = fragment_cells()
    for j in range(4):
        h = decode_half2(words, j).astype(np.float64)   # [E, N/16, K/16, 32, 2]
        for half, nibble in ((0, j), (1, j + 4)):
            r, c = cells[:, nibble, 0], cells[:, nibble, 1]
            for rt in range(words.shape[1]):
                for kt in range(words.shape[2]):
                    want = VALUES[nib[:, 16 * rt + r, 16 * kt + c]] * 2.0 ** -14
                    np.testing.assert_array_equal(h[:, rt, kt, :, half], want)


def test_an_mma_emulated_from_the_fragments_equals_the_dequantised_product():
    codes, scales = random_bank(e=1, n=32, k=64, seed=3)
    x = np.random.default_rng(4).standard_normal((64, 8))          # B: k x 8 tokens
    words = fragment_words(torch.from_numpy(codes))[0]              # [N/16, K/16, 32]
    sc = pack_scales(torch.from_numpy(scales))[0].numpy().reshape(2, 2, 16)   # [N/16, K/32, 16]
    cells = fragment_cells()
    out = np.zeros((32, 8))
    for rt in range(2):
        for kb in range(2):                                         # 32-k blocks: two k16 mmas, then the scales
            block = np.zeros((16, 8))
            for kt in (2 * kb, 2 * kb + 1):
                a = np.zeros((16, 16))
                for j in range(4):
                    h = decode_half2(words[rt, kt], j).astype(np.float64)   # [32 lanes, 2]
                    for half, nibble in ((0, j), (1, j + 4)):
                        a[cells[:, nibble, 0], cells[:, nibble, 1]] = h[:, half]
                block += a @ x[16 * kt:16 * kt + 16]
            rows_scale = 2.0 ** (sc[rt, kb].astype(np.int64) - 127 + 14)   # 2^14 undoes the decode's 2^-14
            out[16 * rt:16 * rt + 16] += block * rows_scale[:, None]
    np.testing.assert_allclose(out, dequantised(codes, scales)[0] @ x, rtol=1e-12, atol=1e-12)


def test_shapes_off_the_tile_grid_are_refused():
    with pytest.raises(ValueError, match="rows % 16"):
        check_shape(24, 64)


def test_the_megakernel_uploads_expert_banks_in_fragment_order_and_everything_else_as_is():
    from tilewarp.pipeline.errors import DeviceError
    from tilewarp.runtime.megakernel import device_layout
    codes, scales = random_bank()
    got = device_layout("mxfp4_bank", {"codes": torch.from_numpy(codes), "scales": torch.from_numpy(scales)})
    assert got["codes"].shape == codes.shape and got["scales"].shape == scales.shape   # same bytes per row range
    np.testing.assert_array_equal(got["codes"].numpy().reshape(-1).view(np.uint32),
                                  fragment_words(torch.from_numpy(codes)).reshape(-1))
    want_scales = scales.reshape(2, 2, 16, 2).transpose(0, 1, 3, 2).reshape(-1)   # [E, N/16, K/32, 16]
    np.testing.assert_array_equal(got["scales"].numpy().reshape(-1), want_scales)
    w = {"w": torch.ones(3, 4)}
    assert torch.equal(device_layout("bf16", w)["w"], w["w"])
    with pytest.raises(DeviceError, match="rows % 16"):
        device_layout("mxfp4_bank", {"codes": torch.zeros(1, 24, 32, dtype=torch.uint8),
                                     "scales": torch.zeros(1, 24, 2, dtype=torch.uint8)})


@pytest.mark.parametrize("name", ["tiny", "mimo-mini"])
def test_expert_tasks_cover_whole_16_row_mma_tiles(name):
    from tilewarp.pipeline.graph.ops import Op
    from tilewarp.pipeline.graph.step import build_step
    from tilewarp.pipeline.presets import preset
    g = build_step(preset(name), 8, kind="verify", capacity=256)
    for t in g.tasks:
        if t.op in (Op.EXPERT_UP, Op.EXPERT_DOWN):
            assert t.args["n0"] % 16 == 0 and t.args["n1"] % 16 == 0, (t.op, t.args["n0"], t.args["n1"])


def test_expert_banks_with_scales_past_the_folded_exponent_are_refused_at_upload():
    """The GPU folds a block scale and its fixed 2^16 into one exponent field (s + 16 < 255)."""
    import re

    from tilewarp.pipeline.errors import DeviceError
    from tilewarp.runtime.megakernel import E8M0_MAX_FOLDED, device_layout
    header = (Path(__file__).parents[2] / "csrc" / "ops" / "gemv_mxfp4.cuh").read_text()
    assert E8M0_MAX_FOLDED == 254 - int(re.search(r"#define TW_MMA_UNSCALE_LOG2 (\d+)", header).group(1))
    codes, scales = random_bank()
    scales[1, 17, 1] = E8M0_MAX_FOLDED
    device_layout("mxfp4_bank", {"codes": torch.from_numpy(codes), "scales": torch.from_numpy(scales)})
    scales[1, 17, 1] = E8M0_MAX_FOLDED + 1
    with pytest.raises(DeviceError, match=r"scale byte 239 \(2\^112\) at \(1, 17, 1\)"):
        device_layout("mxfp4_bank", {"codes": torch.from_numpy(codes), "scales": torch.from_numpy(scales)})


def test_weights_past_32_bit_offsets_are_refused_at_upload():
    """The tensor-core GEMV addresses one matrix (a bf16 weight, one expert) in 32 bits."""
    from tilewarp.pipeline.errors import DeviceError
    from tilewarp.runtime.megakernel import check_matrix_bytes
    check_matrix_bytes("bf16", {"w": (65536, 32767)})
    check_matrix_bytes("mxfp4_bank", {"codes": (512, 65536, 65535), "scales": (512, 65536, 4095)})
    with pytest.raises(DeviceError, match="bf16 weight .* 4294967296 bytes"):
        check_matrix_bytes("bf16", {"w": (65536, 32768)})
    with pytest.raises(DeviceError, match="one expert's codes take 4294967296 bytes"):
        check_matrix_bytes("mxfp4_bank", {"codes": (2, 65536, 65536), "scales": (2, 65536, 4096)})
    check_matrix_bytes("rope", {"cos": (1 << 20, 1 << 13)})
