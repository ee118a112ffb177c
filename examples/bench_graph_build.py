#!/usr/bin/env python
"""How long building, scheduling and lowering one step takes on this machine.

The program for a step shape is built once (at start-up, or when a new shape is first
needed), so this is start-up latency, not per-token cost; the target is under 2 s for a
`mimo-v2.5-pro` verify step (T = 8, 70 layers, 384 experts, 132 workers) on 2 cores.

    python examples/bench_graph_build.py            # mimo-mini decode + mimo-v2.5-pro verify
    python examples/bench_graph_build.py --repeat 3 --case mimo-v2-flash:verify:8
    python examples/bench_graph_build.py --profile  # cProfile of the last case, top 25
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.schedule import DeviceModel, schedule

DEFAULT_CASES = ("mimo-mini:decode:1", "mimo-v2.5-pro:verify:8")


def run_case(name: str, kind: str, tokens: int, capacity: int, workers: int) -> dict[str, float]:
    cfg = preset(name)
    t0 = time.perf_counter()
    g = build_step(cfg, tokens, kind=kind, capacity=capacity)
    t1 = time.perf_counter()
    s = schedule(g, DeviceModel(workers=workers))
    t2 = time.perf_counter()
    p = lower(s)
    t3 = time.perf_counter()
    return {"tasks": len(g.tasks), "events": len(s.group_names), "build": t1 - t0, "schedule": t2 - t1,
            "lower": t3 - t2, "total": t3 - t0, "arena_words": p.arena_words}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", help="preset:step:tokens (repeatable)")
    ap.add_argument("--capacity", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=132)
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the best is reported")
    ap.add_argument("--profile", action="store_true", help="profile the last case and print the top functions")
    args = ap.parse_args()
    cases = args.case or list(DEFAULT_CASES)
    print(f"{'case':28s} {'tasks':>7s} {'events':>7s} {'build':>7s} {'sched':>7s} {'lower':>7s} {'total':>7s}")
    for case in cases:
        name, kind, tokens = case.split(":")
        runs = [run_case(name, kind, int(tokens), args.capacity, args.workers) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["total"])
        print(f"{case:28s} {best['tasks']:7d} {best['events']:7d} {best['build']:6.2f}s {best['schedule']:6.2f}s "
              f"{best['lower']:6.2f}s {best['total']:6.2f}s")
    if args.profile:
        name, kind, tokens = cases[-1].split(":")
        prof = cProfile.Profile()
        prof.runcall(run_case, name, kind, int(tokens), args.capacity, args.workers)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
