"""A/B the megakernel under csrc macro variants, in one process on one random model:
ms per token and, from one traced step, the chosen ops' mean task time and prologue and
every op's stage walls.

    tools/gpu_py.sh tools/ab_defines.py --variants "base=;depth2=TW_MMA_MAX_DEPTH=2" --ops EXPERT_UP,LINEAR

Each variant is a name and a TILEWARP_DEFINES string (runtime/megakernel.py
`extra_defines`), optionally followed by `@field=value,...`: TilePolicy fields the step is
planned with (graph-level changes, e.g. "swa8=@swa_min_chunk=8"; `default_policy`
otherwise). Why one process: the random weights take ~40 s to make, a variant's build
~2 s and its timing ~1 s, so a device call can compare a dozen variants on the same
weights, cache and program, interleaved so that clock drift hits every variant alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

from examples.bench_megakernel import DecodeBench, one_step, time_decode
from tilewarp.pipeline.errors import TilewarpError
from tilewarp.pipeline.graph.tiling import TilePolicy, default_policy
from tilewarp.pipeline.presets import preset
from tilewarp.runtime.trace import op_summary, stage_floor_summary, stage_kind
from tools.variants import kernel_defines, parse_variants


def variant_policy(spec: str, tokens: int) -> tuple[str, TilePolicy | None]:
    """"DEFINES@field=value,..." -> (DEFINES, the default policy with those fields, or None)."""
    defines, _, fields = spec.partition("@")
    if not fields:
        return defines, None
    changes = {}
    for item in fields.split(","):
        key, _, value = item.partition("=")
        if key not in TilePolicy.__dataclass_fields__:
            raise SystemExit(f"--variants: {key!r} is not a TilePolicy field")
        changes[key] = type(getattr(TilePolicy(), key))(int(value))
    return defines, dataclasses.replace(default_policy(tokens), **changes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", required=True, help='"name=NAME=V,NAME=V;name2=..." (first is the baseline)')
    ap.add_argument("--preset", default="mimo-mini")
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=1, help="1: chained decode steps; T > 1: verify steps of T tokens")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the variants (interleaved)")
    ap.add_argument("--ops", default="EXPERT_UP,EXPERT_DOWN,LINEAR", help="ops whose task times to print")
    ap.add_argument("--by-stage", action="store_true",
                    help="rows per op and stage kind (LINEAR:qkv, LINEAR:o, ...), not per op")
    args = ap.parse_args()
    variants = parse_variants(args.variants)
    ops = args.ops.split(",")
    bench = DecodeBench(preset(args.preset), args.context, args.steps * (args.repeats + 1) + 8 + args.tokens,
                        tokens=args.tokens)
    ms: dict[str, list[float]] = {name: [] for name, _ in variants}
    per_op: dict[str, dict] = {}
    walls: dict[str, dict] = {}   # variant -> op -> summed stage wall time of the traced step
    failed: dict[str, str] = {}
    for rnd in range(args.rounds):
        for name, spec in variants:
            defines, policy = variant_policy(spec, args.tokens)
            with kernel_defines(defines):
                try:
                    bench.plan(policy)
                    runner = bench.runner(trace_cap=256)
                    ms[name] += time_decode(runner, args.steps, args.repeats)
                    if rnd == 0:
                        runner.tracing = True
                        one_step(runner)
                        recs = runner.trace_records()
                        label = stage_kind if args.by_stage else None
                        per_op[name] = op_summary(recs, bench.prog, label)
                        task_bytes = [t.cost.bytes for t in bench.graph.tasks]
                        walls[name] = stage_floor_summary(recs, bench.prog, task_bytes, 1.0, label)
                        span = (max(r.done for r in recs) - min(r.fetched for r in recs)) / 1e3
                        walls[name]["(traced step)"] = {"wall_us": span}
                except TilewarpError as e:   # a variant that breaks the kernel is a result too
                    failed[name] = str(e)
            print(f"round {rnd} {name}: {ms[name][-1] if ms[name] else float('nan'):.3f} ms/step", flush=True)
            runner = None
    base = statistics.median(ms[variants[0][0]] or [float("nan")])
    head = f"{'variant':12s} {'ms/step':>9s} {'vs base':>8s}" + "".join(f" {o[:14]:>14s} mean/prol" for o in ops)
    print(head)
    for name, defines in variants:
        if name in failed:
            print(f"{name:12s} failed: {failed[name]}   [{defines}]")
            continue
        m = statistics.median(ms[name])
        cols = ""
        for o in ops:
            st = per_op[name].get(o)
            cols += (f" {st['mean_us']:14.2f} {st['prologue_us'] / st['count']:9.2f}" if st else f" {'-':>14s} {'-':>9s}")
        print(f"{name:12s} {m:9.3f} {m / base:7.3f}x{cols}   [{defines}]")
    # Where a step's time goes: per op, the wall time of its stages (first start to last
    # finish) summed over the traced step; the rows are the baseline's heaviest ops.
    names = [n for n, _ in variants if n in walls]
    if names:
        rows = sorted(walls[names[0]], key=lambda o: -walls[names[0]][o]["wall_us"])
        print("stage walls (us, one traced step): " + " ".join(f"{n:>10s}" for n in names))
        for o in rows:
            print(f"  {o:31s} " + " ".join(f"{walls[n].get(o, {}).get('wall_us', 0.0):10.1f}" for n in names))


if __name__ == "__main__":
    main()
