"""tools/ab_defines.py: variants are "name=DEFINES[@POLICY]" items separated by ';' (either
may be empty: the baseline), and a malformed item stops the tool before any GPU work."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "ab_defines.py"
spec = importlib.util.spec_from_file_location("ab_defines", TOOL)
ab_defines = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ab_defines)


def test_variants_are_named_define_strings_and_the_first_is_the_baseline():
    got = ab_defines.parse_variants("base=; d2=TW_MMA_MAX_DEPTH=2;both=A=1,B=2;")
    assert got == [("base", ""), ("d2", "TW_MMA_MAX_DEPTH=2"), ("both", "A=1,B=2")]


@pytest.mark.parametrize("bad", ["nameonly", "=X=1"])
def test_a_malformed_variant_is_refused(bad):
    with pytest.raises(SystemExit, match="is not name=DEFINES"):
        ab_defines.parse_variants(bad)


def test_a_variant_may_plan_the_step_with_other_tile_policy_fields():
    """After '@': TilePolicy fields, on top of the step's default policy (row_align 8 at T = 1,
    16 at T > 1); without '@' the step keeps the default plan (None)."""
    from tilewarp.pipeline.graph.tiling import default_policy

    assert ab_defines.variant_policy("TW_A=1", 1) == ("TW_A=1", None)
    defines, pol = ab_defines.variant_policy("TW_A=1@swa_min_chunk=8,min_task_bytes=4096", 8)
    assert defines == "TW_A=1"
    assert (pol.swa_min_chunk, pol.min_task_bytes, pol.row_align) == (8, 4096, default_policy(8).row_align)


def test_an_unknown_policy_field_is_refused():
    with pytest.raises(SystemExit, match="'chunk' is not a TilePolicy field"):
        ab_defines.variant_policy("@chunk=8", 1)
