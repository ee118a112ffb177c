"""Per-op micro-benchmarks inside the real step: the MXFP4 expert GEMV/GEMM at 1..16
tokens, the bf16 GEMVs, and attention of global and of sliding-window layers at several
contexts, each against its own byte floor.

    python examples/bench_ops.py --preset mimo-mini --tokens 1,2,4,8,16 --contexts 4096,32768

Why inside the step and not as standalone kernels: an op of a resident megakernel never
runs alone; what a user pays for is its stage between two dependency points, with its
neighbours' caches and code around it. Each (context, T) runs its decode (T = 1) or
verify program with the in-kernel trace on; per op (attention split by layer kind), the
summed wall time of its stages is set against the bytes its tasks must read (the cost
model's) at the copy bandwidth measured in the same run (`trace.stage_floor_summary`).
Medians over `--repeats` traced steps.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from tilewarp.pipeline.config import GLOBAL
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.runtime.trace import stage_floor_summary

from examples.bench_megakernel import DecodeBench, copy_bandwidth, one_step

#: Rows of the table: ops as named in the trace, attention split by layer kind.
ATTENTION = ("ATTN_PARTIAL", "ATTN_MERGE")


def layer_kind_label(cfg):
    """`stage_floor_summary` label: attention ops carry their layer's kind (stage "L3.attn")."""
    def label(op: str, stage: str) -> str:
        if op in ATTENTION and stage.startswith("L"):
            layer = int(stage[1:].split(".")[0])
            return f"{op} ({'global' if cfg.layer_kinds[layer] == GLOBAL else 'swa'})"
        return op
    return label


def run_case(cfg, weights, tokens: int, context: int, repeats: int, bw: float) -> dict[str, dict[str, float]]:
    """Median per-op rows of `repeats` traced steps of T = `tokens` at `context` cached tokens."""
    bench = DecodeBench(cfg, context + 64, 64, tokens, weights=weights)
    runner = bench.runner(trace_cap=256)
    label = layer_kind_label(cfg)
    samples: dict[str, list[dict[str, float]]] = {}
    for i in range(repeats + 1):   # the first step warms up (module load, caches)
        bench.ref.cache.length = bench.start
        runner.tracing = i > 0
        one_step(runner)
        if i == 0:
            continue
        rows = stage_floor_summary(runner.trace_records(), bench.prog, [t.cost.bytes for t in bench.graph.tasks], bw,
                                   label)
        for op, row in rows.items():
            samples.setdefault(op, []).append(row)
    return {op: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for op, rs in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mimo-mini")
    ap.add_argument("--tokens", default="1,2,4,8,16", help="tokens per step, comma-separated")
    ap.add_argument("--contexts", default="4096,32768", help="cached tokens, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cfg = preset(args.preset)
    weights = random_weights(cfg, 0)
    bw = copy_bandwidth()
    print(f"{cfg.name} on {torch.cuda.get_device_name(0)}; copy bandwidth {bw / 1e12:.2f} TB/s; "
          f"medians of {args.repeats} traced steps")
    print(f"{'context':>7s} {'T':>3s}  {'op':26s} {'stages':>6s} {'wall us':>9s} {'MB':>8s} {'floor us':>9s} "
          f"{'% floor':>8s}")
    for context in (int(c) for c in args.contexts.split(",")):
        for tokens in (int(t) for t in args.tokens.split(",")):
            rows = run_case(cfg, weights, tokens, context, args.repeats, bw)
            for op, r in sorted(rows.items(), key=lambda kv: -kv[1]["wall_us"]):
                print(f"{context:7d} {tokens:3d}  {op:26s} {r['stages']:6.0f} {r['wall_us']:9.1f} "
                      f"{r['bytes'] / 1e6:8.2f} {r['floor_us']:9.1f} {r['pct_floor']:7.1f}%")


if __name__ == "__main__":
    main()
