"""examples/train/average_drafters.py: the element-wise mean of drafters of one config
(fp32 mean, one bf16 rounding), a drafter averaged with itself is itself, and drafters that
cannot be averaged are refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from examples.train.average_drafters import average_drafters, main
from tilewarp.pipeline.dflash.checkpoint import load_draft_checkpoint, make_draft_checkpoint
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.errors import CheckpointError
from tilewarp.pipeline.presets import preset

DCFG = tiny_drafter(preset("tiny"))


@pytest.fixture
def pair(tmp_path: Path) -> list[Path]:
    return [make_draft_checkpoint(DCFG, tmp_path / f"d{seed}", seed=seed) for seed in (0, 1)]


def test_the_average_is_the_element_wise_mean_rounded_once(pair, tmp_path):
    assert main([str(p) for p in pair] + ["--out", str(tmp_path / "soup")]) == 0
    a, b, soup = (load_draft_checkpoint(p) for p in pair + [tmp_path / "soup"])
    assert soup.cfg.to_hf_dict() == DCFG.to_hf_dict()
    for name in soup.specs:
        want = ((a.get(name).float() + b.get(name).float()) / 2).to(torch.bfloat16)
        assert torch.equal(soup.get(name), want), name
    assert not torch.equal(soup.get("fc.weight"), a.get("fc.weight"))


def test_a_drafter_averaged_with_itself_is_itself(pair, tmp_path):
    same = load_draft_checkpoint(average_drafters([pair[0], pair[0]], tmp_path / "same"))
    first = load_draft_checkpoint(pair[0])
    assert all(torch.equal(same.get(n), first.get(n)) for n in first.specs)


def test_drafters_of_different_configs_or_too_few_are_refused(pair, tmp_path):
    deeper = make_draft_checkpoint(replace(DCFG, num_layers=DCFG.num_layers + 1), tmp_path / "deeper")
    with pytest.raises(CheckpointError, match="config differs"):
        average_drafters([pair[0], deeper], tmp_path / "bad")
    with pytest.raises(CheckpointError, match="at least two"):
        average_drafters([pair[0]], tmp_path / "one")
