"""tools/ab_defines.py: variants are "name=DEFINES" items separated by ';' (DEFINES may
be empty: the baseline), and a malformed item stops the tool before any GPU work."""

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
