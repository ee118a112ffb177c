"""CI, no GPU: the whole megakernel compiles for sm_90a through NVRTC, and its hot
kernel has no register spills and no stack frame."""

import pytest

pytest.importorskip("cuda.bindings.nvrtc", reason="nvrtc extra not installed: pip install -e '.[nvrtc]'")

from tilewarp.runtime.megakernel import SMEM_BYTES, build_megakernel  # noqa: E402


@pytest.mark.slow
# Every bucket the runtime builds: decode (T = 1), the DFlash verify block (T = 8) and the
# largest step (T = 16).
@pytest.mark.parametrize("tokens", [1, 8, 16])
def test_the_megakernel_compiles_for_sm90a_with_no_spills_and_no_stack(tmp_path, tokens):
    build = build_megakernel(tokens, cache_dir=tmp_path)
    k = build.report.kernel("tw_megakernel")
    assert build.cubin[:4] == b"\x7fELF"
    assert k.spill_store_bytes == 0 and k.spill_load_bytes == 0, k
    assert k.stack_frame_bytes == 0, k
    # 11 compute warps + the loader warp (csrc/core/util.cuh) share the SM's 64K registers.
    assert k.registers * 12 * 32 <= 65536, k
    # The runtime launches with the block size the build exports, not a constant of its own.
    assert b"tw_cta_threads" in build.cubin
    assert k.shared_bytes + SMEM_BYTES <= 227 * 1024, "static + dynamic shared memory must fit one SM"


def test_tilewarp_defines_add_csrc_macros_for_experiments(monkeypatch):
    from tilewarp.pipeline.errors import DeviceError
    from tilewarp.runtime.megakernel import extra_defines
    monkeypatch.setenv("TILEWARP_DEFINES", " TW_MMA_MAX_DEPTH=2, TW_FLAG ,")
    assert extra_defines() == {"TW_MMA_MAX_DEPTH": "2", "TW_FLAG": "1"}
    monkeypatch.setenv("TILEWARP_DEFINES", "")
    assert extra_defines() == {}
    monkeypatch.setenv("TILEWARP_DEFINES", "2BAD=1")
    with pytest.raises(DeviceError, match="'2BAD=1' is not NAME=VALUE"):
        extra_defines()



#: The A/B switches kept for a later run (docs/perf-notes.md, v16 and Next), each alone (the
#: kernel sits at its register cap, so some pairs spill and are checked when adopted), and
#: the v12 path of the GEMV rows: an experiment that no longer builds would cost a device
#: call to find out. TW_HOIST_LOADS spills 12 bytes at T = 8 beside the block copy loop
#: (TW_MMA_ISSUE_BLOCK), so it builds with the previous loop. TW_NORM_DEFERRED and
#: TW_TABLE_AHEAD (perf-notes Next 12, 13) are decode candidates and build at T = 1 as well.
EXPERIMENTS = ["TW_ROPE_STAGED=1", "TW_ROPE_STAGED=2", "TW_HOIST_LOADS=1,TW_MMA_ISSUE_BLOCK=0", "TW_E8M0_FOLD=0",
               "TW_MMA_ISSUE_BLOCK=0", "TW_NORM_DEFERRED=1", "TW_TABLE_AHEAD=1"]


@pytest.mark.slow
@pytest.mark.parametrize("defines,tokens", [(d, 8) for d in EXPERIMENTS] + [("TW_ROWS_ASYNC=0", 1),
                                                                              ("TW_NORM_DEFERRED=1", 1),
                                                                              ("TW_TABLE_AHEAD=1", 1)])
def test_each_experiment_switch_compiles_with_no_spills(tmp_path, monkeypatch, defines, tokens):
    monkeypatch.setenv("TILEWARP_DEFINES", defines)
    k = build_megakernel(tokens, cache_dir=tmp_path).report.kernel("tw_megakernel")
    assert k.spill_store_bytes == 0 and k.stack_frame_bytes == 0, k
