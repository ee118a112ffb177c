"""`tilewarp bench`: one model, one run, the baselines and the megakernel side by side.

Rows (each for T = 1 decode and T = 8 verify):

* ``eager``      the gpt-fast-style PyTorch decoder (`baselines.torch_decoder`), eagerly;
* ``graph``      the same step captured once in a CUDA graph and replayed;
* ``compile``    the step compiled by torch.compile, then captured in a CUDA graph;
* ``megakernel`` tilewarp: the lowered decode program (T = 1, `chain` steps chained per
  launch) or verify program (T = 8, one launch per step) in `MegakernelRunner`.

Every row reports ms per step (median, p10, p90 from CUDA events after warm-up), tokens/s
(T / median step time), the bytes the step must read at least (`config.step_bytes`:
weights in their stored precision, MXFP4 experts, the KV cache actually used), the floor
= those bytes / the device bandwidth measured in the same run (a large device-to-device
copy), and the floor as a % of the measured time. The PyTorch rows also show the bytes
*they* read (bf16 experts, the whole static cache: `baseline_step_bytes`) and the
bandwidth that implies, so a row far from the floor can be told apart from a row that
simply has more to read.

The context is set up without a prefill: random bf16 K/V are written straight into every
cache slot and the length is set to `context` (prefilling ~4000 tokens through the
reference takes minutes and measures nothing here). Every timed step runs at position
`context`, rewriting the same slots, so the context stays fixed while steps repeat.

A row that fails (megakernel build or launch error, compile error or timeout, out of
memory) is recorded with its error and the run goes on. `dry_run` needs no GPU: it prints
the byte floors at a nominal (datasheet) bandwidth and the plan, for any preset.
"""

from __future__ import annotations

import datetime
import logging
import platform
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from tilewarp.pipeline.config import ModelConfig, param_counts, step_bytes
from tilewarp.pipeline.errors import DeviceError, InputError
from tilewarp.pipeline.graph.step import MAX_STEPS_PER_LAUNCH
from tilewarp.pipeline.kv_cache import MAX_STEP_TOKENS, KVCache
from tilewarp.pipeline.presets import PRESETS, preset
from tilewarp.pipeline.random_model import random_weights

from .baselines.modes import ModeUnavailable, make_stepper
from .baselines.params import BaselineParams
from .baselines.torch_decoder import TorchDecoder, baseline_step_bytes
from .bench_timing import NOMINAL_BANDWIDTH, Bandwidth, StepTimes, measure_bandwidth, time_calls

log = logging.getLogger("tilewarp.bench")

ROWS = ("eager", "graph", "compile", "megakernel")
LABELS = {"eager": "PyTorch eager", "graph": "PyTorch + CUDA graph", "compile": "torch.compile + CUDA graph",
          "megakernel": "tilewarp megakernel"}
TORCH_MODES = {"eager": "eager", "graph": "cuda_graph", "compile": "compile"}
KV_FILL = "random bf16 K/V written directly into every cache slot, length set to the context (no prefill)"


@dataclass(frozen=True)
class BenchPlan:
    """What one run measures. `capacity` leaves room past the context for the steps."""

    preset: str
    rows: tuple[str, ...] = ROWS
    tokens: tuple[int, ...] = (1, 8)
    context: int = 4096
    steps: int = 200
    warmup: int = 10
    chain: int = 16
    seed: int = 0
    compile_mode: str = "max-autotune-no-cudagraphs"
    compile_timeout_s: float = 300.0
    bw_bytes: int = 2 << 30

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InputError(f"--preset {self.preset!r}: choose one of {sorted(PRESETS)}")
        bad = [r for r in self.rows if r not in ROWS]
        if bad or not self.rows:
            raise InputError(f"--rows: {bad or 'none given'}; choose from {','.join(ROWS)}")
        if not self.tokens or any(not 1 <= t <= MAX_STEP_TOKENS for t in self.tokens):
            raise InputError(f"--tokens {list(self.tokens)}: each must be in 1..{MAX_STEP_TOKENS}")
        if not 1 <= self.chain <= MAX_STEPS_PER_LAUNCH:
            raise InputError(f"--chain {self.chain}: must be in 1..{MAX_STEPS_PER_LAUNCH}")
        if self.steps < 1 or self.warmup < 0:
            raise InputError(f"--steps {self.steps} / --warmup {self.warmup}: need steps >= 1, warmup >= 0")
        if self.context < 1:
            raise InputError(f"--context {self.context}: need at least 1 cached token")
        if self.capacity > self.cfg.max_position:
            raise InputError(f"--context {self.context}: with room for the steps the KV cache needs {self.capacity} "
                             f"positions, past {self.preset}'s max_position {self.cfg.max_position}")

    @property
    def cfg(self) -> ModelConfig:
        return preset(self.preset)

    @property
    def capacity(self) -> int:
        return self.context + _room(self.rows, self.tokens, self.chain)

    @classmethod
    def fitted(cls, preset_name: str, **kw) -> "BenchPlan":
        """A plan for `preset_name` whose context is cut to what its max_position holds
        (``--preset all`` gives one context to presets as small as `tiny`)."""
        room = _room(kw.get("rows", ROWS), kw.get("tokens", (1, 8)), kw.get("chain", 16))
        limit = preset(preset_name).max_position - room
        kw["context"] = max(1, min(kw.get("context", 4096), limit))
        return cls(preset=preset_name, **kw)


def _room(rows: tuple[str, ...], tokens: tuple[int, ...], chain: int) -> int:
    """KV slots past the context: one step of T tokens, or a megakernel chain of decode steps."""
    chained = chain if "megakernel" in rows and 1 in tokens else 0
    return max(max(tokens, default=1), chained)


@dataclass
class RowResult:
    row: str
    tokens: int
    status: str                       # "ok", "error" or "skipped"
    note: str
    floor_bytes: float
    impl_bytes: float | None          # what this implementation reads per step, where known
    bandwidth: float
    times: StepTimes | None = None
    build_s: float = 0.0

    def as_dict(self) -> dict:
        d = {"row": self.row, "label": LABELS[self.row], "tokens": self.tokens, "status": self.status,
             "note": self.note, "floor_bytes": self.floor_bytes, "impl_bytes": self.impl_bytes,
             "floor_ms": self.floor_bytes / self.bandwidth * 1e3, "build_s": self.build_s}
        if self.times is not None:
            med = self.times.median
            d.update(ms_median=med, ms_p10=self.times.p10, ms_p90=self.times.p90, steps_timed=self.times.steps,
                     tokens_per_s=self.tokens / (med / 1e3), pct_of_floor=100 * d["floor_ms"] / med,
                     impl_GB_per_s=None if self.impl_bytes is None else self.impl_bytes / (med / 1e3) / 1e9,
                     samples_ms=list(self.times.per_step_ms))
        return d


# ======================================================================= dry run
def dry_run(plans: list[BenchPlan], bandwidth: Bandwidth = NOMINAL_BANDWIDTH) -> dict:
    """The plan and byte floors of each preset, at a nominal bandwidth; needs no GPU."""
    out = {"mode": "dry-run", "bandwidth": bandwidth.as_dict(), "presets": []}
    for p in plans:
        cfg = p.cfg
        entry = {"preset": p.preset, "plan": _plan_dict(p), "baseline_weight_bytes": baseline_weight_bytes(cfg),
                 "rows": []}
        for t in p.tokens:
            floor = step_bytes(cfg, t, p.context).total
            for row in p.rows:
                entry["rows"].append({
                    "row": row, "label": LABELS[row], "tokens": t, "what": _row_plan(row, t, p),
                    "floor_bytes": floor, "floor_ms": floor / bandwidth.bytes_per_s * 1e3,
                    "floor_tokens_per_s": t / (floor / bandwidth.bytes_per_s),
                    "impl_bytes": None if row == "megakernel" else _impl_bytes(cfg, t, p.capacity)})
        out["presets"].append(entry)
    return out


def _row_plan(row: str, tokens: int, plan: BenchPlan) -> str:
    if row == "megakernel":
        if tokens == 1:
            return f"decode program, {plan.chain} steps chained per launch"
        return f"verify program (T={tokens}), one launch per step"
    mode = {"eager": "eager", "graph": "CUDA graph replay",
            "compile": f"torch.compile(mode={plan.compile_mode!r}) + CUDA graph, "
                       f"skipped past {plan.compile_timeout_s:.0f} s"}[row]
    return f"bf16 decoder, {mode}"


def baseline_weight_bytes(cfg: ModelConfig) -> float:
    """Device bytes of the baseline's weights (all bf16, router fp32): does it fit one GPU?"""
    pc = param_counts(cfg)
    return 2.0 * (pc.total - pc.router - pc.norms) + 4.0 * (pc.router + pc.norms)


def _impl_bytes(cfg: ModelConfig, tokens: int, capacity: int) -> float:
    return sum(baseline_step_bytes(cfg, tokens, capacity).values())


def _plan_dict(plan: BenchPlan) -> dict:
    d = asdict(plan)
    d.update(rows=list(plan.rows), tokens=list(plan.tokens), capacity=plan.capacity, kv_fill=KV_FILL)
    return d


def format_dry_run(d: dict) -> str:
    bw = d["bandwidth"]
    lines = [f"tilewarp bench --dry-run: nothing is run; floors at {bw['GB_per_s']:.0f} GB/s ({bw['source']})"]
    for entry in d["presets"]:
        plan = entry["plan"]
        lines += ["", f"{entry['preset']}: context {plan['context']} (KV capacity {plan['capacity']}); "
                      f"{plan['steps']} timed steps per row after {plan['warmup']} warm-up calls; "
                      f"baseline bf16 weights {entry['baseline_weight_bytes'] / 1e9:.1f} GB",
                  f"  KV: {plan['kv_fill']}",
                  f"  {'T':>2}  {'floor MB':>9} {'floor ms':>9} {'max tok/s':>10} {'bf16 baseline MB':>17}"]
        by_t = {r["tokens"]: r for r in entry["rows"]}
        for t, r in by_t.items():
            impl = next((x["impl_bytes"] for x in entry["rows"] if x["tokens"] == t and x["impl_bytes"]), None)
            lines.append(f"  {t:>2}  {r['floor_bytes'] / 1e6:>9.1f} {r['floor_ms']:>9.3f} "
                         f"{r['floor_tokens_per_s']:>10.0f} "
                         f"{'-' if impl is None else f'{impl / 1e6:.1f}':>17}")
        lines.append("  rows that would run:")
        for r in entry["rows"]:
            lines.append(f"    T={r['tokens']:<2} {r['label']:<27} {r['what']}")
    return "\n".join(lines)


# ======================================================================= the run
def run_bench(plan: BenchPlan, progress: Callable[[str], None] = log.info) -> dict:
    """Measure every row of `plan` on the current CUDA device; failed rows are recorded."""
    if not torch.cuda.is_available():
        raise DeviceError("tilewarp bench needs a CUDA GPU; use --dry-run to see the plan and byte floors")
    dev = torch.device("cuda", torch.cuda.current_device())
    cfg = plan.cfg
    progress(f"measuring bandwidth ({plan.bw_bytes / 2 ** 30:.1f} GiB device-to-device copies)")
    bw = measure_bandwidth(dev, plan.bw_bytes)
    progress(f"bandwidth {bw.bytes_per_s / 1e9:.0f} GB/s; generating random {cfg.name} weights (seed {plan.seed})")
    weights = random_weights(cfg, plan.seed)
    cache = KVCache(cfg, plan.capacity, dev)
    fill_cache(cache, plan.context, plan.seed)
    params, params_error = None, ""
    if any(r in TORCH_MODES for r in plan.rows):
        progress("loading the bf16 baseline weights (experts decoded from MXFP4 once)")
        try:
            params = BaselineParams.load(weights, dev)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: the megakernel row can still run
            params_error = _error(e)
    start = torch.Generator().manual_seed(plan.seed)
    results: list[RowResult] = []
    for t in plan.tokens:
        first = torch.randint(0, cfg.vocab_size, (t,), generator=start).tolist()
        decoder = None
        for row in plan.rows:
            floor = step_bytes(cfg, t, plan.context).total
            impl = None if row == "megakernel" else _impl_bytes(cfg, t, plan.capacity)
            res = RowResult(row, t, "ok", "", floor, impl, bw.bytes_per_s)
            progress(f"T={t}: {LABELS[row]}")
            try:
                if row == "megakernel":
                    call, res.note, res.build_s, done = _megakernel_call(weights, cache, t, first, plan)
                else:
                    if params is None:
                        raise RuntimeError(f"baseline weights did not load: {params_error}")
                    decoder = decoder or TorchDecoder(params, cache, tokens=t)
                    call, res.note, res.build_s, done = _torch_call(decoder, row, first, plan)
                try:
                    res.times = time_calls(call, steps=plan.steps, warmup=plan.warmup)
                finally:
                    done()
            except Exception as e:  # noqa: BLE001 - one failed row must not end the run
                res.status = "skipped" if isinstance(e, ModeUnavailable) else "error"
                res.note = _error(e)
                log.debug("row %s T=%d failed", row, t, exc_info=True)
            cache.length = plan.context
            torch.cuda.empty_cache()
            results.append(res)
    return {"mode": "measured", "preset": cfg.name, "device": torch.cuda.get_device_name(dev),
            "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "bandwidth": bw.as_dict(), "plan": _plan_dict(plan), "rows": [r.as_dict() for r in results]}


def fill_cache(cache: KVCache, context: int, seed: int) -> None:
    """Random bf16 K/V in every slot, length = `context`: a context without a prefill."""
    g = torch.Generator(device=cache.k[0].device).manual_seed(seed)
    for t in cache.k + cache.v:
        t.normal_(generator=g)
    cache.length = context


Timed = tuple[Callable[[], int], str, float, Callable[[], None]]   # call, note, build seconds, release


def _torch_call(decoder: TorchDecoder, row: str, first: list[int], plan: BenchPlan) -> Timed:
    """A timed call running one baseline step, greedy tokens fed back on the device."""
    stepper = make_stepper(decoder, TORCH_MODES[row], compile_mode=plan.compile_mode,
                           compile_timeout_s=plan.compile_timeout_s)
    decoder.load(first, plan.context)   # after warm-up / capture, which ran steps of their own

    def call() -> int:
        stepper()
        return 1

    def done() -> None:
        nonlocal stepper
        stepper = None   # free the graph and its memory pool before the next row
    return call, stepper.note, stepper.build_s, done


def _megakernel_call(weights, cache: KVCache, tokens: int, first: list[int], plan: BenchPlan) -> Timed:
    """A timed call of the megakernel: `chain` chained decode steps, or one verify step.

    Imported here, inside the row's error handling: a megakernel that does not build or
    import (missing cuda-bindings, a broken op) fails its row, not the baselines."""
    from tilewarp.pipeline.graph.step import build_decode_step, build_verify_step
    from tilewarp.pipeline.lower import lower
    from tilewarp.pipeline.schedule import DeviceModel, schedule

    from .megakernel import MegakernelRunner

    t0 = time.perf_counter()
    cfg = weights.cfg
    sms = torch.cuda.get_device_properties(cache.k[0].device).multi_processor_count
    graph = (build_decode_step(cfg, capacity=cache.capacity) if tokens == 1
             else build_verify_step(cfg, tokens, capacity=cache.capacity))
    runner = MegakernelRunner(lower(schedule(graph, DeviceModel(workers=sms))), weights, cache)
    build_s = time.perf_counter() - t0
    state = {"token": first[0], "runner": runner}

    if tokens == 1:
        def call() -> int:
            cache.length = plan.context
            state["token"] = state["runner"].decode(state["token"], plan.chain)[-1]
            return plan.chain
        note = (f"decode program on {sms} SMs, {plan.chain} steps chained per launch; per step = launch / "
                f"{plan.chain}, host launch + status check included")
    else:
        def call() -> int:
            cache.length = plan.context
            state["runner"].verify(first)
            return 1
        note = f"verify program on {sms} SMs, one launch per step (host launch, logits copy-out included)"

    def done() -> None:
        state.clear()   # drop the runner and its device tables before the next row
    return call, note, build_s, done


def _error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {text[0][:300] if text else ''}"
    if not text:
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            msg += f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}"
    return msg


# ================================================================== reporting
def format_table(result: dict) -> str:
    """The terminal table of a measured run."""
    bw = result["bandwidth"]
    plan = result["plan"]
    head = [f"tilewarp bench: {result['preset']} on {result['device']} "
            f"(torch {result['torch']}, CUDA {result['cuda']})",
            f"context {plan['context']} (KV: {plan['kv_fill']}); {plan['steps']} timed steps after {plan['warmup']} "
            f"warm-up",
            f"bandwidth {bw['GB_per_s']:.0f} GB/s ({bw['source']})",
            "floor = step_bytes (stored precision, MXFP4 experts) / bandwidth; impl = bytes that row itself reads",
            ""]
    cols = (f"{'T':>2}  {'row':<27} {'ms/step':>8} {'p10':>8} {'p90':>8} {'tok/s':>8} {'floor MB':>9} "
            f"{'floor ms':>9} {'% floor':>8} {'impl GB/s':>10}  note")
    lines = head + [cols, "-" * len(cols)]
    for r in result["rows"]:
        if r["status"] == "ok":
            impl = "-" if r["impl_GB_per_s"] is None else f"{r['impl_GB_per_s']:.0f}"
            lines.append(f"{r['tokens']:>2}  {r['label']:<27} {r['ms_median']:>8.3f} {r['ms_p10']:>8.3f} "
                         f"{r['ms_p90']:>8.3f} {r['tokens_per_s']:>8.0f} {r['floor_bytes'] / 1e6:>9.1f} "
                         f"{r['floor_ms']:>9.3f} {r['pct_of_floor']:>7.1f}% {impl:>10}  {r['note']}")
        else:
            lines.append(f"{r['tokens']:>2}  {r['label']:<27} {'-':>8} {'-':>8} {'-':>8} {'-':>8} "
                         f"{r['floor_bytes'] / 1e6:>9.1f} {r['floor_ms']:>9.3f} {'-':>8} {'-':>10}  "
                         f"{r['status'].upper()}: {r['note']}")
    return "\n".join(lines)
