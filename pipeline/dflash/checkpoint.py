"""Drafter checkpoints on disk: ``config.json`` + safetensors, written and read with the
target's checkpoint code (``pipeline/checkpoint.py``), so sharding, the index, atomic
writes and the no-pickle rule are the same for both. Only the config and the tensor
table differ."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from ..checkpoint import CONFIG, Progress, SafetensorsSource, save_checkpoint
from ..errors import CheckpointError
from .config import DraftConfig
from .weights import DraftWeights, random_draft_tensors


def save_draft_checkpoint(dcfg: DraftConfig, tensors: Iterable[tuple[str, torch.Tensor]], out_dir: str | Path, *,
                          max_shard_bytes: int = 2 << 30, progress: Progress | None = None,
                          overwrite: bool = False) -> Path:
    """Write a drafter. Like ``save_checkpoint``, tensors are not checked here (the loader
    checks them), so tests can write deliberately bad drafters."""
    # save_checkpoint needs only `name` and `to_hf_dict()` of the config it is given.
    return save_checkpoint(dcfg, tensors, out_dir, max_shard_bytes=max_shard_bytes,   # type: ignore[arg-type]
                           progress=progress, overwrite=overwrite)


def load_draft_checkpoint(path: str | Path) -> DraftWeights:
    """Open a drafter directory: config parsed, tensors checked structurally, data lazy."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a drafter checkpoint directory")
    dcfg = DraftConfig.from_json(path / CONFIG)
    return DraftWeights(dcfg, SafetensorsSource(path), where=str(path))


def make_draft_checkpoint(dcfg: DraftConfig, out_dir: str | Path, *, seed: int = 0,
                          overwrite: bool = False) -> Path:
    """Write a random drafter of ``dcfg``."""
    return save_draft_checkpoint(dcfg, random_draft_tensors(dcfg, seed), out_dir, overwrite=overwrite)
