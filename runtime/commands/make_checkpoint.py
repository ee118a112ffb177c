"""`tilewarp make-checkpoint`: write a random checkpoint in the published MiMo layout."""

from __future__ import annotations

import argparse
import sys

from tilewarp.pipeline.checkpoint import make_checkpoint
from tilewarp.pipeline.presets import PRESETS

from ..engine import check_allocatable


def add_parser(sub: argparse._SubParsersAction) -> str:
    p = sub.add_parser("make-checkpoint", help="write a random checkpoint (MXFP4 experts) of a preset shape")
    p.add_argument("out", help="output directory")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-shard-gb", type=float, default=2.0)
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in OUT")
    return "make-checkpoint"


def run(args: argparse.Namespace) -> int:
    check_allocatable(args.preset)   # before anything is written to OUT
    path = make_checkpoint(args.preset, args.out, seed=args.seed, max_shard_bytes=int(args.max_shard_gb * (1 << 30)),
                           overwrite=args.overwrite, progress=lambda m: print(m, file=sys.stderr))
    print(path)
    return 0
