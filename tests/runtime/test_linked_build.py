"""CI, no GPU: an op built as its own translation unit (TW_SEPARATE_MXFP4) links into the
megakernel with nvJitLink, so its machine code cannot change with edits elsewhere
(docs/perf-notes.md v16, the build lottery); a link that cannot complete says why."""

import sys

import pytest

pytest.importorskip("cuda.bindings.nvrtc", reason="nvrtc extra not installed: pip install -e '.[nvrtc]'")

from tilewarp.pipeline.errors import DeviceError  # noqa: E402
from tilewarp.runtime.linked_build import link_cubins  # noqa: E402
from tilewarp.runtime.megakernel import build_megakernel  # noqa: E402
from tilewarp.runtime.nvrtc_build import compile_cubin, csrc_dir  # noqa: E402

UNIT_SYMBOL = b"_Z24tw_gemv_mma_mxfp4_moduleRK5TwCtxRK6TwGemvPf"


@pytest.mark.slow
def test_the_mxfp4_gemv_links_in_as_its_own_unit(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEWARP_DEFINES", "TW_SEPARATE_MXFP4=1")
    build = build_megakernel(1, cache_dir=tmp_path)
    assert build.cubin[:4] == b"\x7fELF" and UNIT_SYMBOL in build.cubin
    k = build.report.kernel("tw_megakernel")
    # The call passes the task through the stack; the kernel itself does not spill.
    assert k.spill_store_bytes == 0 and k.registers * 12 * 32 <= 65536, k
    unit = build.report.functions[UNIT_SYMBOL.decode()]
    assert unit.spill_store_bytes <= 32 * 4, unit   # the callee-saved registers it uses, at most


@pytest.mark.slow
def test_a_unit_missing_from_the_link_is_named(tmp_path):
    main = csrc_dir() / "megakernel.cu"
    alone = compile_cubin(main, name=str(main), cache_dir=tmp_path, extra_opts=["-rdc=true"],
                          defines={"TW_MAX_T": 1, "TW_SEPARATE_MXFP4": 1})
    with pytest.raises(DeviceError, match="Undefined reference to '_Z24tw_gemv_mma_mxfp4_module"):
        link_cubins([("megakernel.cu", alone.cubin)], "sm_90a")


def test_no_nvjitlink_is_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bindings.nvjitlink", None)
    with pytest.raises(DeviceError, match="pip install 'tilewarp\\[nvrtc\\]'"):
        link_cubins([("a", b"")], "sm_90a")
