"""The host<->device ABI has one definition (numpy dtypes in runtime/abi.py): the committed
C header is exactly what they render, and the status record matches csrc/core/status.cuh."""

from pathlib import Path

from tilewarp.runtime.abi import LAYER_DTYPE, PARAMS_DTYPE, STATUS_DTYPE, WEIGHT_DTYPE, render_abi_header

CSRC = Path(__file__).resolve().parents[2] / "csrc"


def test_the_committed_abi_header_is_what_the_dtypes_render():
    assert (CSRC / "generated" / "abi.h").read_text() == render_abi_header() + "\n", \
        "csrc/generated/abi.h is stale: run python tools/gen_headers.py"


def test_every_abi_struct_is_rendered_with_its_size():
    h = render_abi_header()
    for name, dt in (("TwWeight", WEIGHT_DTYPE), ("TwLayer", LAYER_DTYPE), ("TwParams", PARAMS_DTYPE)):
        assert f"struct {name} {{" in h and f"sizeof({name}) == {dt.itemsize}" in h


def test_the_status_record_matches_the_device_header():
    assert STATUS_DTYPE.itemsize == 40
    assert [STATUS_DTYPE.fields[f][1] for f in ("code", "sm", "task", "event", "seen", "needed", "op")] == \
        [0, 4, 8, 12, 16, 24, 32]
    assert "sizeof(TwStatus) == 40" in (CSRC / "core" / "status.cuh").read_text()
