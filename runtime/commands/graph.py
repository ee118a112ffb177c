"""`tilewarp graph`: build, schedule and lower one step, and say what the device would run.

Prints the task mix, the sync groups (events) and waits, the arena, how evenly the
bytes spread over the workers, and the cost model's critical path and makespan next to
the step's byte floor (`config.step_bytes`), so a change to tiling or placement can be
judged without a GPU. `--json` writes the same summary plus one entry per task; `--dot`
writes the graph of sync groups (the task graph is far too large for Graphviz).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from tilewarp.pipeline.config import ModelConfig, human, step_bytes
from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.lower import Program, lower
from tilewarp.pipeline.presets import PRESETS, preset
from tilewarp.pipeline.schedule import DeviceModel, Schedule, schedule
from tilewarp.pipeline.validate import validate


def add_parser(sub: argparse._SubParsersAction) -> str:
    p = sub.add_parser("graph", help="build, schedule and lower one step; print its task graph summary")
    p.add_argument("--preset", choices=sorted(PRESETS), required=True)
    p.add_argument("--step", choices=("decode", "verify"), default="decode")
    p.add_argument("--tokens", type=int, help="tokens per step (decode: 1; verify: default 8)")
    p.add_argument("--capacity", type=int, help="KV-cache capacity (default: min(4096, max_position))")
    p.add_argument("--workers", type=int, default=DeviceModel().workers, help="SMs running tasks")
    p.add_argument("--json", type=Path, metavar="PATH", help="write a machine-readable summary")
    p.add_argument("--dot", type=Path, metavar="PATH", help="write the sync-group graph for Graphviz")
    p.add_argument("--validate", action="store_true", help="also validate the program (simulates the event protocol; slow for large steps)")
    return "graph"


def summarize(cfg: ModelConfig, s: Schedule, p: Program, model: DeviceModel) -> dict:
    """Everything `run` prints, as plain data."""
    waits = [len(w) for w in s.waits]
    wb = s.worker_bytes
    floor = step_bytes(cfg, p.tokens, p.capacity)
    return {
        "preset": cfg.name, "step": p.kind, "tokens": p.tokens, "capacity": p.capacity, "workers": p.workers,
        "tasks": p.n_tasks, "tasks_per_op": dict(Counter(t.op.name for t in s.graph.tasks)),
        "events": len(s.group_names), "waits_max": max(waits), "waits_mean": sum(waits) / len(waits),
        "arena_words": p.arena_words, "arena_bytes": 4 * p.arena_words,
        "worker_bytes": {"max": max(wb), "mean": sum(wb) / len(wb), "min": min(wb)},
        "graph_bytes": sum(wb), "step_bytes_floor": floor.total,
        "critical_path_s": s.critical_path, "makespan_s": s.makespan,
        "floor_time_s": floor.total / model.bandwidth,
        "groups": [{"name": n, "size": k} for n, k in zip(s.group_names, s.group_size)],
        "per_task": [{"op": t.op.name, "stage": t.stage, "worker": s.worker_of[t.index],
                      "waits": [[g, d] for g, d in s.waits[t.index]]} for t in s.graph.tasks],
    }


def render_text(d: dict, seconds: dict[str, float]) -> list[str]:
    us = lambda x: f"{x * 1e6:.1f} us"
    wb = d["worker_bytes"]
    lines = [f"{d['preset']} {d['step']} step: T={d['tokens']}, capacity {d['capacity']}, {d['workers']} workers",
             f"tasks: {d['tasks']}"]
    lines += [f"  {op:14s} {n:7d}" for op, n in d["tasks_per_op"].items()]
    lines += [
        f"events (sync groups): {d['events']}",
        f"waits per task: max {d['waits_max']}, mean {d['waits_mean']:.2f}",
        f"arena: {d['arena_words']} words ({human(d['arena_bytes'], 'B')})",
        f"bytes per worker: max {human(wb['max'], 'B')}, mean {human(wb['mean'], 'B')}, min {human(wb['min'], 'B')}"
        f" (max/mean {wb['max'] / max(wb['mean'], 1e-30):.2f})",
        f"bytes moved by the tasks: {human(d['graph_bytes'], 'B')}; step byte floor (config.step_bytes at "
        f"context {d['capacity']}): {human(d['step_bytes_floor'], 'B')}",
        f"cost model: critical path {us(d['critical_path_s'])}, makespan {us(d['makespan_s'])}; "
        f"floor at full bandwidth {us(d['floor_time_s'])}",
        "built in " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()),
    ]
    return lines


def render_dot(s: Schedule) -> str:
    """One node per sync group (label: name and task count); an edge g -> h when a task
    of h waits on g (dashed: on the previous step's g)."""
    edges: set[tuple[int, int, int]] = set()
    for t, waits in enumerate(s.waits):
        for g, delta in waits:
            edges.add((g, s.group_of[t], delta))
    out = ["digraph groups {", "  rankdir=TB;", '  node [shape=box, fontsize=10];']
    for i, (name, size) in enumerate(zip(s.group_names, s.group_size)):
        out.append(f'  g{i} [label="{name}\\n{size} task{"s" if size > 1 else ""}"];')
    for g, h, delta in sorted(edges):
        out.append(f"  g{g} -> g{h}" + (" [style=dashed];" if delta else ";"))
    out.append("}")
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    cfg = preset(args.preset)
    tokens = args.tokens if args.tokens is not None else (1 if args.step == "decode" else 8)
    capacity = args.capacity if args.capacity is not None else min(4096, cfg.max_position)
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    model = DeviceModel(workers=args.workers)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    g = build_step(cfg, tokens, kind=args.step, capacity=capacity)
    t1 = time.perf_counter()
    s = schedule(g, model)
    t2 = time.perf_counter()
    p = lower(s)
    t3 = time.perf_counter()
    seconds.update(build=t1 - t0, schedule=t2 - t1, lower=t3 - t2)
    if args.validate:
        report = validate(p)
        seconds["validate"] = time.perf_counter() - t3
    d = summarize(cfg, s, p, model)
    print("\n".join(render_text(d, seconds)))
    if args.validate:
        print(f"validation: ok ({report.hazards_checked} conflicting task pairs found ordered)")
    if args.json:
        args.json.write_text(json.dumps({**d, "seconds": seconds}, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.dot:
        args.dot.write_text(render_dot(s))
        print(f"wrote {args.dot}")
    return 0
