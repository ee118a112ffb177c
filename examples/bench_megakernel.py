"""Time the megakernel's decode on a random model: ms per token for chained steps in one
launch, at a given context, next to the byte floor from the model config.

    python examples/bench_megakernel.py --preset mimo-mini --context 4096 --steps 128
"""

from __future__ import annotations

import argparse
import time

import torch

from tilewarp.pipeline.config import ModelConfig, step_bytes
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.graph.tiling import TilePolicy
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.schedule import DeviceModel, schedule
from tilewarp.pipeline.weights import Weights
from tilewarp.runtime.megakernel import MegakernelRunner
from tilewarp.runtime.trace import op_summary, stage_floor_summary, write_trace


def copy_bandwidth(nbytes: int = 2 << 30) -> float:
    """Device-to-device copy, bytes read + written per second (median of 10)."""
    a = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    times = []
    for _ in range(12):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); b.copy_(a); e.record(); torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    times.sort()
    return nbytes / times[len(times) // 2]


class DecodeBench:
    """A random model of `cfg` (or the given `weights`), its program (decode at `tokens` = 1,
    else verify of `tokens`) and a KV cache of `context` slots filled to `context - room`
    tokens: what every megakernel timing of this shape shares."""

    def __init__(self, cfg: ModelConfig, context: int, room: int, tokens: int = 1,
                 weights: Weights | None = None) -> None:
        if weights is None:
            t0 = time.time()
            weights = random_weights(cfg, 0)
            print(f"random weights: {time.time() - t0:.1f} s")
        self.weights = weights
        self.cfg, self.tokens, self.context = cfg, tokens, context
        self.sms = torch.cuda.get_device_properties(0).multi_processor_count
        self.graph = build_step(cfg, tokens, kind="decode" if tokens == 1 else "verify", capacity=context)
        self.prog = lower(schedule(self.graph, DeviceModel(workers=self.sms)))
        self._plans: dict[TilePolicy | None, tuple] = {None: (self.graph, self.prog)}
        self.ref = ReferenceModel(self.weights, capacity=context, device="cuda")
        # Random cache contents, length set (prefill cost is not measured here).
        for k, v in zip(self.ref.cache.k, self.ref.cache.v):
            k.normal_(0, 1)
            v.normal_(0, 1)
        self.start = context - room
        self.ref.cache.length = self.start

    def plan(self, policy: TilePolicy | None) -> None:
        """Re-plan the step with another tile policy (graph-level A/Bs: tools/ab_defines.py);
        None: the default policy."""
        if policy not in self._plans:
            graph = build_step(self.cfg, self.tokens, kind="decode" if self.tokens == 1 else "verify",
                               capacity=self.context, policy=policy)
            self._plans[policy] = graph, lower(schedule(graph, DeviceModel(workers=self.sms)))
        self.graph, self.prog = self._plans[policy]

    def runner(self, trace_cap: int = 0) -> MegakernelRunner:
        """A runner on the shared weights and cache (the cache rewound to its start length)."""
        self.ref.cache.length = self.start
        runner = MegakernelRunner(self.prog, self.weights, self.ref.cache, trace_cap=trace_cap)
        runner.tracing = False
        return runner


def one_step(runner: MegakernelRunner) -> None:
    """One step of the runner's program: a decode step, or a verify step of its T tokens."""
    if runner.p.tokens == 1:
        runner.decode(1, 1)
    else:
        runner.verify(list(range(5, 5 + runner.p.tokens)))


def time_decode(runner: MegakernelRunner, steps: int, repeats: int) -> list[float]:
    """ms per step, sorted, of `repeats` runs of `steps` steps (one untimed run first:
    module load, caches). A decode program chains its steps in one launch; a verify
    program of T tokens is one launch per step, each at the same cache length."""
    if runner.p.tokens == 1:
        def run() -> None:
            runner.decode(1, steps)
    else:
        start = runner.cache.length

        def run() -> None:
            for _ in range(steps):
                runner.cache.length = start
                one_step(runner)
    run()
    times = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        run()
        e.record(); torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / steps)
    return sorted(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mimo-mini")
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--trace", default=None, help="write a Perfetto trace of one step here, and per-op times")
    args = ap.parse_args()
    cfg = preset(args.preset)
    bench = DecodeBench(cfg, args.context, args.steps * (args.repeats + 1) + 8)
    runner = bench.runner(trace_cap=256 if args.trace else 0)
    times = time_decode(runner, args.steps, args.repeats)
    prog, graph = bench.prog, bench.graph
    bw = copy_bandwidth()
    floor = step_bytes(cfg, 1, args.context).total / bw * 1e3
    ms = times[len(times) // 2]
    print(f"{cfg.name} T=1 ctx~{args.context}: {ms:.3f} ms/token (min {times[0]:.3f}, max {times[-1]:.3f}); "
          f"{prog.n_tasks} tasks on {prog.workers} workers; registers {runner.registers}, local {runner.local_bytes} B")
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s; byte floor {floor:.3f} ms; {floor / ms * 100:.1f}% of floor")
    if args.trace:
        runner.tracing = True
        runner.decode(1, 1)
        recs = runner.trace_records()
        write_trace(args.trace, recs, prog)
        span = (max(r.done for r in recs) - min(r.fetched for r in recs)) / 1e3
        print(f"traced step: {span:.1f} us, {len(recs)} task records -> {args.trace}")
        summary = sorted(op_summary(recs, prog).items(), key=lambda kv: -kv[1]["busy_us"])
        print(f"{'op':15s} {'count':>6s} {'mean us':>8s} {'busy us (sum)':>14s} {'wait us (sum)':>14s} "
              f"{'prologue us':>12s}")
        for op, st in summary:
            print(f"{op:15s} {st['count']:6d} {st['mean_us']:8.2f} {st['busy_us']:14.1f} {st['wait_us']:14.1f} "
                  f"{st['prologue_us']:12.1f}")
        # Each op as its own micro-benchmark: its stages' wall time against its byte floor.
        stages = stage_floor_summary(recs, prog, [t.cost.bytes for t in graph.tasks], bw)
        print(f"{'op':15s} {'stages':>6s} {'wall us':>9s} {'MB':>8s} {'floor us':>9s} {'% floor':>8s}")
        for op, st in sorted(stages.items(), key=lambda kv: -kv[1]["wall_us"]):
            print(f"{op:15s} {st['stages']:6d} {st['wall_us']:9.1f} {st['bytes'] / 1e6:8.2f} {st['floor_us']:9.1f} "
                  f"{st['pct_floor']:7.1f}%")


if __name__ == "__main__":
    main()
