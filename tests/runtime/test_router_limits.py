"""CI, no GPU: the megakernel refuses a router its ROUTE op cannot run, and a program whose
expert tasks route for themselves in a step its build cannot route, before any upload;
every shipped preset fits it."""

import dataclasses
import re

import pytest

from tilewarp.pipeline.errors import DeviceError, GraphError
from tilewarp.pipeline.graph.ops import OPS, Op
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import PRESETS, preset
from tilewarp.pipeline.schedule import schedule
from tilewarp.runtime.megakernel import ROUTE_REGISTER_EXPERTS, check_router, check_routing, max_route_experts
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


def test_up_tasks_that_route_for_themselves_are_refused_outside_one_token_steps():
    """Only the T = 1 build compiles EXPERT_UP's own routing (csrc/ops/expert_up.cuh): a
    T = 3 program whose up task claims to route would read a table nobody wrote."""
    cfg = preset("tiny")
    check_routing(lower(schedule(build_step(cfg, 1, kind="decode", capacity=256))))
    p = lower(schedule(build_step(cfg, 3, kind="verify", capacity=256)))
    check_routing(p)
    up = int((p.desc["op"] == Op.EXPERT_UP).nonzero()[0][0])
    p.desc["args"][up, OPS[Op.EXPERT_UP].index("logits_off")] = 0
    with pytest.raises(GraphError, match=rf"task {up} .*EXPERT_UP routes for itself in a step of 3 tokens"):
        check_routing(p)
