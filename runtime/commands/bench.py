"""`tilewarp bench`: PyTorch eager, CUDA graphs, torch.compile and the megakernel on one
model, side by side, against the byte floor at the bandwidth measured in the same run.
`--dry-run` needs no GPU: the plan and the byte floors at a nominal bandwidth."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.presets import PRESETS

from ..baselines.modes import COMPILE_MODES
from ..bench import ROWS, BenchPlan, dry_run, format_dry_run, format_table, run_bench


def add_parser(sub: argparse._SubParsersAction) -> str:
    p = sub.add_parser("bench", help="time the PyTorch baselines and the megakernel against the byte floor")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS) + ["all"],
                   help="model shape (random weights); 'all' only with --dry-run")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--tokens", default="1,8", help="tokens per step to measure, e.g. 1,8 (1 = decode, 8 = verify)")
    p.add_argument("--context", type=int, default=4096, help="tokens already in the KV cache (default 4096)")
    p.add_argument("--steps", type=int, default=200, help="timed steps per row (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing (default 10)")
    p.add_argument("--chain", type=int, default=16, help="megakernel decode steps chained per launch (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights, KV and first tokens")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs", choices=COMPILE_MODES)
    p.add_argument("--compile-timeout", type=float, default=300.0, metavar="S",
                   help="skip the compile row when compiling one T takes longer (default 300 s)")
    p.add_argument("--bw-gib", type=float, default=2.0, help="size of the bandwidth-test copy in GiB (default 2)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write every number (and raw samples) as JSON")
    p.add_argument("--png", type=Path, metavar="PATH", help="write a bar chart (needs matplotlib)")
    p.add_argument("--dry-run", action="store_true", help="no GPU: print the plan and byte floors at a nominal "
                   "bandwidth (H100 SXM datasheet)")
    return "bench"


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{flag} {text!r}: need comma-separated integers") from None


def run(args: argparse.Namespace) -> int:
    all_presets = args.preset == "all"
    if all_presets and not args.dry_run:
        raise InputError("--preset all: a measured run takes one model; use it with --dry-run")
    kw = dict(rows=tuple(r.strip() for r in args.rows.split(",") if r.strip()), tokens=_ints(args.tokens, "--tokens"),
              context=args.context, steps=args.steps, warmup=args.warmup, chain=args.chain, seed=args.seed,
              compile_mode=args.compile_mode, compile_timeout_s=args.compile_timeout,
              bw_bytes=int(args.bw_gib * 2 ** 30))
    if args.dry_run:
        if args.png:
            raise InputError("--png draws measured results; a --dry-run measures nothing")
        plans = ([BenchPlan.fitted(name, **kw) for name in PRESETS] if all_presets
                 else [BenchPlan(preset=args.preset, **kw)])
        result = dry_run(plans)
        print(format_dry_run(result))
    else:
        plan = BenchPlan(preset=args.preset, **kw)
        result = run_bench(plan, progress=lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
        print(format_table(result))
        if args.png:
            from ..bench_chart import write_png
            write_png(result, args.png)
            print(f"wrote {args.png}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
