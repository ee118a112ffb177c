"""The generated descriptor header compiles under NVRTC for sm_90a, and its static
asserts really pin the layout: a header whose offsets disagree with DESC_DTYPE fails to
build. (No GPU needed; about 0.1 s per compile.)"""

from __future__ import annotations

import pytest

pytest.importorskip("cuda.bindings.nvrtc", reason="NVRTC is not installed: pip install 'tilewarp[nvrtc]'")

from tilewarp.pipeline.c_headers import generated_headers  # noqa: E402
from tilewarp.runtime.nvrtc_build import run_nvrtc  # noqa: E402

KERNEL = r"""
extern "C" __global__ void tw_desc_probe(const TwDesc* d, int* out) {
    out[0] = d->op + d->n_wait + d->args[TW_LINEAR_N1] + TW_OP_SAMPLE + TW_DESC_BYTES;
}
"""
OPTS = ["-arch=sm_90a", "-std=c++17", "-default-device"]


def test_the_generated_header_compiles_and_its_layout_asserts_hold():
    out = run_nvrtc(generated_headers()["generated/ops.h"] + KERNEL, "probe.cu", OPTS, want_ptx=False)
    assert out.ok, out.log


def test_a_header_with_a_wrong_offset_does_not_compile():
    text = generated_headers()["generated/ops.h"].replace("unsigned char pad;", "unsigned short pad;")
    out = run_nvrtc(text + KERNEL, "probe.cu", OPTS, want_ptx=False)
    assert not out.ok and "TwDesc" in out.log
