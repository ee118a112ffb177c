#!/usr/bin/env python
"""Average drafters that share a parent into one (a "model soup"), weight by weight.

    python -m examples.train.average_drafters models/stdlib-256/drafter /tmp/drafter-seed9 \\
        --out /tmp/drafter-soup

Why: warm starts from one drafter, each with its own seed and fresh generations, end in the
same basin, and session 12 found three of them level on validation (4.795-4.803) and on the
held-out prompts (4.398-4.408 per step): a plateau. Their mean sits inside that basin and
drafts better: with copy drafting, the soup of the session 11 and session 12 drafters
commits 4.504 per step on 200 valid prompts against 4.480 for the session 11 parent (what
chose it), and 4.536 on the 32 held-out prompts against 4.486 for either parent (drafter
alone: 4.442 against 4.408 and 4.398; `examples/train/README.md`, session 12). The mean is
taken in fp32 and rounded to bf16 once. Drafters of different configs (shapes, target
layers, block sizes) are refused: averaging them means nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import torch

from tilewarp.pipeline.dflash.checkpoint import load_draft_checkpoint, save_draft_checkpoint
from tilewarp.pipeline.dflash.weights import draft_tensor_specs
from tilewarp.pipeline.errors import CheckpointError


def average_drafters(dirs: Sequence[str | Path], out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the element-wise mean of the drafters in ``dirs`` (at least two, one config)."""
    if len(dirs) < 2:
        raise CheckpointError(f"averaging needs at least two drafters, got {len(dirs)}")
    drafters = [load_draft_checkpoint(d) for d in dirs]
    cfg = drafters[0].cfg
    for d, w in zip(dirs[1:], drafters[1:]):
        if w.cfg.to_hf_dict() != cfg.to_hf_dict():
            raise CheckpointError(f"{d}: its config differs from {dirs[0]}'s; only drafters of one config average")
    tensors = []
    for spec in draft_tensor_specs(cfg):
        total = sum(w.get(spec.name).float() for w in drafters)
        tensors.append((spec.name, (total / len(drafters)).to(torch.bfloat16)))
    return save_draft_checkpoint(cfg, tensors, out, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("drafters", nargs="+", help="drafter checkpoint directories (one config)")
    ap.add_argument("--out", required=True, help="directory for the averaged drafter")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    path = average_drafters(args.drafters, args.out, overwrite=args.overwrite)
    print(f"[average] {len(args.drafters)} drafters -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
