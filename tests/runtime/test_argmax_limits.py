"""CI, no GPU: SAMPLE and ARGMAX_ROWS reduce the LM head tiles' (max, argmax) pairs in
shared memory (csrc/ops/sample.cuh), so a program whose pairs do not fit the stage is refused
before any upload; the default tiling of every preset fits."""

import dataclasses
import re

import pytest

from tilewarp.pipeline.errors import GraphError
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.graph.tiling import TilePolicy
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import schedule
from tilewarp.runtime.megakernel import SCRATCH_FLOATS, STAGE_FLOATS, check_argmax_tiles
from tilewarp.runtime.nvrtc_build import csrc_dir


def program(cfg, tokens, policy=None):
    return lower(schedule(build_step(cfg, tokens, kind="verify" if tokens > 1 else "decode", capacity=64,
                                     policy=policy)))


@pytest.mark.parametrize("tokens", [1, 16])
def test_the_default_tiling_fits_the_stage(tokens):
    check_argmax_tiles(program(preset("tiny"), tokens))


def test_more_lm_head_tiles_than_the_stage_holds_are_refused():
    cfg = dataclasses.replace(preset("tiny"), vocab_size=32768)
    fine = TilePolicy(workers=100_000, min_task_bytes=1, max_tiles=100_000)   # 4096 tiles of 8 rows
    with pytest.raises(GraphError, match=r"SAMPLE.*4096 LM head tiles of 16 rows give 131072 floats.*at most 45056"):
        check_argmax_tiles(program(cfg, 16, fine))


def test_the_shared_memory_sizes_mirror_the_device_code():
    stage = (csrc_dir() / "core" / "rows.cuh").read_text()
    scratch = (csrc_dir() / "core" / "context.cuh").read_text()
    assert eval(re.search(r"#define TW_STAGE_FLOATS \(([\d *]+)\)", stage).group(1)) == STAGE_FLOATS
    assert eval(re.search(r"#define TW_SCRATCH_FLOATS \(([\d *]+)\)", scratch).group(1)) == SCRATCH_FLOATS
