"""CI, no GPU: the megakernel refuses a router its ROUTE op cannot run, before any upload,
and every shipped preset fits it."""

import dataclasses
import re

import pytest

from tilewarp.pipeline.errors import DeviceError
from tilewarp.pipeline.presets import PRESETS, preset
from tilewarp.runtime.megakernel import ROUTE_REGISTER_EXPERTS, check_router, max_route_experts
from tilewarp.runtime.nvrtc_build import csrc_dir


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_router_fits_the_megakernel(name):
    check_router(preset(name))


def test_more_experts_than_the_lanes_hold_in_registers_are_refused():
    cfg = dataclasses.replace(preset("mimo-v2.5-pro"), num_experts=ROUTE_REGISTER_EXPERTS + 32)
    with pytest.raises(DeviceError, match=rf"at most {max_route_experts()} experts.*got 416 experts"):
        check_router(cfg)


def test_top_k_over_8_and_group_limited_routing_are_refused():
    with pytest.raises(DeviceError, match="top-k <= 8"):
        check_router(dataclasses.replace(preset("mimo-mini"), top_k=9))
    with pytest.raises(DeviceError, match="n_group > 1"):
        check_router(dataclasses.replace(preset("mimo-mini"), n_group=2, topk_group=1))


def test_the_register_limit_mirrors_the_device_code():
    src = (csrc_dir() / "ops" / "route.cuh").read_text()
    assert int(re.search(r"#define TW_ROUTE_MAX_EXPERTS (\d+)", src).group(1)) == ROUTE_REGISTER_EXPERTS
    assert ROUTE_REGISTER_EXPERTS % 32 == 0
