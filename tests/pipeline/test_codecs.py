"""The storage codecs: MXFP4 (OCP MX v1.0, E2M1 + E8M0 per 32 elements) and FP8 e4m3
with 128x128 block scales. Expected values are written out by hand, not recomputed with
the code under test."""

from __future__ import annotations

import math

import pytest
import torch

from tilewarp.pipeline import fp8, mxfp4
from tilewarp.pipeline.errors import QuantizationError

GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def gauss(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ====================================================================== MXFP4
def test_e2m1_codes_0_to_15_decode_to_the_ocp_table():
    want = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    table = mxfp4.e2m1_table()
    assert table.tolist() == want
    assert torch.signbit(table[8]) and not torch.signbit(table[0])  # code 8 is -0


def test_every_code_decodes_through_dequantize_with_a_unit_scale():
    codes = torch.arange(32, dtype=torch.uint8) % 16             # codes 0..15 twice
    packed = mxfp4.pack_codes(codes[None])
    out = mxfp4.dequantize(packed, torch.tensor([[127]], dtype=torch.uint8))
    assert out[0].tolist() == 2 * [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                                   -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


@pytest.mark.parametrize("byte,value", [
    (0, 2.0 ** -127),      # the smallest scale: an fp32 subnormal, exact
    (1, 2.0 ** -126),
    (126, 0.5),
    (127, 1.0),
    (128, 2.0),
    (254, 2.0 ** 127),     # the largest finite scale
])
def test_e8m0_byte_decodes_to_two_to_the_byte_minus_127(byte, value):
    got = mxfp4.e8m0_to_float(torch.tensor([byte], dtype=torch.uint8))
    assert got.dtype == torch.float32
    assert got.item() == value


def test_e8m0_byte_255_is_nan_and_rejected_with_its_position():
    scales = torch.full((3, 2), 127, dtype=torch.uint8)
    scales[2, 1] = 255
    with pytest.raises(QuantizationError, match=r"w\.scale: E8M0 scale byte 255 \(NaN\) at \(2, 1\)"):
        mxfp4.check_scales(scales, name="w.scale")
    with pytest.raises(QuantizationError, match=r"byte 255"):
        mxfp4.dequantize(torch.zeros(3, 32, dtype=torch.uint8), scales)


def test_low_nibble_holds_the_even_input_index():
    # 0x21: low nibble 1 -> element 0 = 0.5; high nibble 2 -> element 1 = 1.0.
    # 0x9F: low nibble 15 -> element 2 = -6.0; high nibble 9 -> element 3 = -0.5.
    codes = torch.zeros(1, 16, dtype=torch.uint8)
    codes[0, 0], codes[0, 1] = 0x21, 0x9F
    out = mxfp4.dequantize(codes, torch.tensor([[127]], dtype=torch.uint8))
    assert out[0, :4].tolist() == [0.5, 1.0, -6.0, -0.5]
    assert out[0, 4:].abs().sum() == 0
    assert mxfp4.pack_codes(torch.tensor([1, 2, 15, 9], dtype=torch.uint8)).tolist() == [0x21, 0x9F]
    assert mxfp4.unpack_codes(torch.tensor([0x21, 0x9F], dtype=torch.uint8)).tolist() == [1, 2, 15, 9]


def test_each_32_element_block_uses_its_own_scale():
    codes = mxfp4.pack_codes(torch.full((1, 64), 2, dtype=torch.uint8))   # every element = 1.0
    out = mxfp4.dequantize(codes, torch.tensor([[127 + 3, 127 - 5]], dtype=torch.uint8))
    assert out[0, :32].tolist() == [8.0] * 32
    assert out[0, 32:].tolist() == [2.0 ** -5] * 32


@pytest.mark.parametrize("mode", ["floor", "ceil"])
def test_values_on_the_grid_times_a_power_of_two_round_trip_exactly(mode):
    g = torch.Generator().manual_seed(1)
    grid = torch.tensor(GRID)
    vals = grid[torch.randint(0, 8, (64, 256), generator=g)]
    sign = torch.where(torch.rand(64, 256, generator=g) < 0.5, -1.0, 1.0)
    k = torch.randint(-30, 30, (64, 8, 1), generator=g).float()        # one power of two per block
    x = (vals * sign).view(64, 8, 32) * torch.exp2(k)
    x[:, :, 0] = 6.0 * torch.exp2(k[:, :, 0])                            # every block reaches 6 * 2**k
    x = x.reshape(64, 256)
    codes, scales = mxfp4.quantize(x, mode)
    assert torch.equal(mxfp4.dequantize(codes, scales), x)
    assert torch.equal(scales.view(64, 8).long(), 127 + k.view(64, 8).long())


def _half_step(m: torch.Tensor) -> torch.Tensor:
    """Largest rounding error of an E2M1 element of magnitude `m` (in units of its block scale):
    half the grid step there, or the clipped excess above 6."""
    return torch.where(m <= 2, 0.25, torch.where(m <= 4, 0.5, torch.where(m <= 6, 1.0, m - 6)))


def test_floor_mode_gaussian_error_is_within_half_a_grid_step_times_the_block_scale():
    """Per element: |deq - x| <= half the E2M1 grid step at |x|/s, times the block scale s
    (plus the clip excess above 6*s). Overall relative RMS error below 0.12."""
    x = gauss(256, 1024)
    codes, scales = mxfp4.quantize(x, "floor")
    y = mxfp4.dequantize(codes, scales)
    blocks = x.view(256, 32, 32)
    amax = blocks.abs().amax(-1)
    # floor mode by hand: s = 2**(floor(log2 amax) - 2); frexp gives amax = f * 2**e, f in [0.5, 1).
    e_hand = torch.tensor([math.frexp(a)[1] - 1 - 2 for a in amax.flatten().tolist()]).view(256, 32)
    assert torch.equal(scales.long(), 127 + e_hand)
    s = torch.exp2(e_hand.float())[..., None]
    m = blocks.abs() / s
    assert bool((m < 8).all()) and bool((blocks.abs().amax(-1) / s[..., 0] >= 4).all())
    err = (y.view(256, 32, 32) - blocks).abs()
    assert bool((err <= _half_step(m) * s * (1 + 1e-6)).all())
    rel_rms = ((y - x).norm() / x.norm()).item()
    assert rel_rms < 0.12


def test_ceil_mode_never_clips():
    x = gauss(128, 512, seed=2)
    codes, scales = mxfp4.quantize(x, "ceil")
    s = mxfp4.e8m0_to_float(scales).repeat_interleave(32, dim=-1)
    assert bool((x.abs() <= 6 * s).all())
    err = (mxfp4.dequantize(codes, scales) - x).abs()
    assert bool((err <= _half_step(x.abs() / s) * s * (1 + 1e-6)).all())


def test_midpoints_round_to_the_even_code():
    # The block holds 6.0, so its scale is 2**0 and the values below are exact midpoints.
    mids = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    want_codes = [0, 2, 2, 4, 4, 6, 6]            # all even: 0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0
    row = torch.zeros(32)
    row[0] = 6.0
    row[1:8] = torch.tensor(mids)
    row[8:15] = -torch.tensor(mids)
    codes, scales = mxfp4.quantize(row[None])
    assert scales.item() == 127
    c = mxfp4.unpack_codes(codes)[0]
    assert c[1:8].tolist() == want_codes
    assert c[8:15].tolist() == [w | 8 for w in want_codes]
    assert mxfp4.dequantize(codes, scales)[0, 1:8].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]


def test_floor_mode_clips_a_block_max_in_6_to_8_while_ceil_mode_does_not():
    row = torch.zeros(1, 32)
    row[0, 0], row[0, 1] = 7.5, 1.0
    codes, scales = mxfp4.quantize(row, "floor")   # scale 2**(floor(log2 7.5) - 2) = 1: 7.5 clips to 6
    assert scales.item() == 127
    assert mxfp4.dequantize(codes, scales)[0, :2].tolist() == [6.0, 1.0]
    codes, scales = mxfp4.quantize(row, "ceil")    # scale 2: 7.5 -> 3.75 -> 4 (x2 = 8), no clip
    assert scales.item() == 128
    assert mxfp4.dequantize(codes, scales)[0, :2].tolist() == [8.0, 1.0]


def test_all_zero_block_gets_the_smallest_scale_and_zero_codes_without_touching_its_neighbours():
    x = torch.zeros(2, 64)
    x[1, 32:] = torch.linspace(-3.0, 3.0, 32)
    codes, scales = mxfp4.quantize(x)
    assert scales.tolist() == [[0, 0], [0, 126]]   # amax 3: 2**(floor(log2 3) - 2) = 2**-1
    assert mxfp4.unpack_codes(codes)[:, :32].abs().sum() == 0
    y = mxfp4.dequantize(codes, scales)
    assert y[0].abs().sum() == 0 and y[1, :32].abs().sum() == 0
    assert y[1, 32] == -3.0 and y[1, 63] == 3.0


@pytest.mark.parametrize("call,match", [
    (lambda: mxfp4.quantize(torch.zeros(4, 48)), r"multiple of 32"),
    (lambda: mxfp4.quantize(torch.tensor([float("nan")] * 32)), r"NaN/inf"),
    (lambda: mxfp4.quantize(torch.zeros(1, 32), "round"), r"scale_mode 'round'"),
    (lambda: mxfp4.dequantize(torch.zeros(4, 16, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.uint8)),
     r"scales \(4, 2\) do not match codes \(4, 16\)"),
    (lambda: mxfp4.dequantize(torch.zeros(4, 16, dtype=torch.uint8), torch.zeros(3, 1, dtype=torch.uint8)),
     r"scales \(3, 1\) do not match codes \(4, 16\)"),
    (lambda: mxfp4.dequantize(torch.zeros(4, 16, dtype=torch.int8), torch.zeros(4, 1, dtype=torch.uint8)),
     r"codes must be uint8"),
    (lambda: mxfp4.check_scales(torch.zeros(4, 1, dtype=torch.int32)), r"must be uint8"),
    (lambda: mxfp4.pack_codes(torch.zeros(3, dtype=torch.uint8)), r"last dim 3 must be even"),
])
def test_mxfp4_shape_and_dtype_errors(call, match):
    with pytest.raises(QuantizationError, match=match):
        call()


# ======================================================================== FP8
def _blocks(shape: tuple[int, int], block: int = 128):
    for r in range(0, shape[0], block):
        for c in range(0, shape[1], block):
            yield r // block, c // block, slice(r, r + block), slice(c, c + block)


def test_fp8_round_trip_relative_error_is_at_most_2_to_the_minus_4_for_normal_values():
    """e4m3 keeps 3 mantissa bits: rounding to nearest costs at most half an ulp, 2**-4
    relative, while the scaled value is normal (>= 2**-6); below, at most half the subnormal
    step 2**-9, times the block scale."""
    w = gauss(256, 384, seed=3) * torch.exp2(torch.randint(-8, 8, (256, 384),
                                                           generator=torch.Generator().manual_seed(4)).float())
    q, scale_inv = fp8.quantize_blockwise(w)
    assert q.dtype == torch.float8_e4m3fn and scale_inv.dtype == torch.float32
    y = fp8.dequantize_blockwise(q, scale_inv)
    s = scale_inv.repeat_interleave(128, 0).repeat_interleave(128, 1)
    normal = (w / s).abs() >= 2.0 ** -6
    assert normal.float().mean() > 0.5 and (~normal).any()              # both regimes exercised
    err = (y - w).abs()
    assert bool((err[normal] <= 2.0 ** -4 * w.abs()[normal] * (1 + 1e-5)).all())
    assert bool((err[~normal] <= 2.0 ** -10 * s[~normal] * (1 + 1e-5)).all())


def test_fp8_block_scale_maps_each_block_max_to_448_including_partial_blocks():
    w = gauss(200, 300, seed=5)
    w[150, 290] = 1000.0                       # in the partial bottom-right block only
    q, scale_inv = fp8.quantize_blockwise(w)
    assert scale_inv.shape == (2, 3)           # ceil(200/128) x ceil(300/128)
    for i, j, rows, cols in _blocks((200, 300)):
        amax = w[rows, cols].abs().max()
        assert scale_inv[i, j] == amax / 448.0
    assert scale_inv[1, 2] == torch.tensor(1000.0) / 448.0
    y = fp8.dequantize_blockwise(q, scale_inv)
    assert y.shape == (200, 300)
    assert (y[:128, :128] - w[:128, :128]).abs().max() <= 2.0 ** -4 * w[:128, :128].abs().max()


def test_fp8_all_zero_block_has_scale_one():
    w = torch.zeros(128, 256)
    w[:, 128:] = 1.0
    q, scale_inv = fp8.quantize_blockwise(w)
    assert torch.equal(scale_inv, torch.tensor([[1.0, 1.0 / 448.0]]))
    assert torch.equal(fp8.dequantize_blockwise(q, scale_inv), w)


@pytest.mark.parametrize("call,match", [
    (lambda: fp8.dequantize_blockwise(torch.zeros(200, 300).to(torch.float8_e4m3fn), torch.ones(2, 2)),
     r"scale_inv shape \(2, 2\), expected \(2, 3\)"),
    (lambda: fp8.dequantize_blockwise(torch.zeros(128, 128).to(torch.float8_e4m3fn), torch.ones(2, 1)),
     r"scale_inv shape \(2, 1\), expected \(1, 1\)"),
    (lambda: fp8.quantize_blockwise(torch.zeros(4)), r"2-D weight"),
    (lambda: fp8.quantize_blockwise(torch.tensor([[1.0, float("inf")]])), r"NaN/inf"),
])
def test_fp8_shape_errors(call, match):
    with pytest.raises(QuantizationError, match=match):
        call()
