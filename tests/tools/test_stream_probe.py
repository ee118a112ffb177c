"""CI, no GPU: the streaming probe's kernels (tools/stream_probe.py) compile for sm_90a, so
a device call never spends its minutes on a compile error."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("cuda.bindings.nvrtc", reason="nvrtc extra not installed: pip install -e '.[nvrtc]'")

from tilewarp.runtime.nvrtc_build import compile_cubin  # noqa: E402

PROBE = Path(__file__).resolve().parents[2] / "tools" / "stream_probe.py"


def test_the_probe_kernels_compile_with_no_spills(tmp_path):
    spec = importlib.util.spec_from_file_location("stream_probe", PROBE)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    build = compile_cubin(probe.SRC, cache_dir=tmp_path, name="stream_probe")
    for kernel in ("k_cpasync", "k_bulk", "k_ldg"):
        k = build.report.kernel(kernel)
        assert k.spill_store_bytes == 0 and k.stack_frame_bytes == 0, k
