"""How the baseline decoder's step is executed: eagerly, replayed from a CUDA graph, or
compiled by torch.compile (then also replayed from a CUDA graph, as gpt-fast decodes).

Every mode runs `TorchDecoder.step` over the decoder's static input buffers and returns
its logits tensor. A CUDA graph records the step once (after a warm-up on a side stream,
so lazy initialisation and allocator growth happen outside the capture) and each call
replays it: inputs must be copied into `decoder.tokens` / `decoder.pos` beforehand, and
the returned logits tensor is the same static output every time.

torch.compile can take minutes (``max-autotune`` benchmarks kernels); compiling is given
a deadline, and a compile that fails or runs past it raises `ModeUnavailable` with the
reason, so a benchmark records the row as skipped instead of hanging.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

import torch

from tilewarp.pipeline.errors import TilewarpError

from .torch_decoder import TorchDecoder

log = logging.getLogger("tilewarp.baselines")

MODES = ("eager", "cuda_graph", "compile")
#: Inductor modes that leave CUDA graphs to us (the compiled step is captured like the eager one).
COMPILE_MODES = ("max-autotune-no-cudagraphs", "default")

StepFn = Callable[[], torch.Tensor]


class ModeUnavailable(TilewarpError, RuntimeError):
    """A mode cannot run here (no GPU, compile failed or timed out); the message says why."""


class Stepper:
    """A step callable plus what was done to build it (shown next to the timing)."""

    def __init__(self, mode: str, fn: StepFn, note: str, build_s: float = 0.0):
        self.mode, self._fn, self.note, self.build_s = mode, fn, note, build_s

    def __call__(self) -> torch.Tensor:
        return self._fn()


def make_stepper(decoder: TorchDecoder, mode: str, *, compile_mode: str = "max-autotune-no-cudagraphs",
                 compile_timeout_s: float = 300.0, warmup: int = 3) -> Stepper:
    """A `Stepper` running `decoder.step` in `mode` (one of `MODES`).

    Warm-up and compiling run real steps, which write K/V at the current position and
    feed tokens back: reload the inputs (`decoder.load`) before using the stepper.
    """
    if mode == "eager":
        return Stepper(mode, decoder.step, "eager PyTorch, one launch per op")
    on_gpu = decoder.p.device.type == "cuda"
    if mode == "cuda_graph":
        if not on_gpu:
            raise ModeUnavailable("cuda_graph needs the decoder on a CUDA device")
        t0 = time.perf_counter()
        fn = graphed(decoder.step, warmup=warmup)
        return Stepper(mode, fn, "one CUDA graph per step, replayed", time.perf_counter() - t0)
    if mode == "compile":
        return _compiled(decoder, compile_mode, compile_timeout_s, warmup, on_gpu)
    raise ValueError(f"mode {mode!r} not in {MODES}")


def graphed(fn: StepFn, *, warmup: int = 3) -> "GraphedStep":
    """Capture `fn` in a CUDA graph, after `warmup` calls on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    torch.cuda.synchronize()
    return GraphedStep(graph, out)


class GraphedStep:
    """Replays a captured step; returns its static output (overwritten by the next replay)."""

    def __init__(self, graph: torch.cuda.CUDAGraph, out: torch.Tensor):
        self.graph, self.out = graph, out   # the graph keeps its memory pool alive

    def __call__(self) -> torch.Tensor:
        self.graph.replay()
        return self.out


def _compiled(decoder: TorchDecoder, compile_mode: str, timeout_s: float, warmup: int, on_gpu: bool) -> Stepper:
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {compile_mode!r} not in {COMPILE_MODES}")
    t0 = time.perf_counter()
    fn = torch.compile(decoder.step, mode=None if compile_mode == "default" else compile_mode, fullgraph=True,
                       dynamic=False)
    what = f"torch.compile(mode={compile_mode!r})"
    timer = Deadline(timeout_s)
    try:
        # As gpt-fast compiles its decode step: coordinate-descent tuning of the generated kernels.
        with torch._inductor.config.patch(coordinate_descent_tuning=True), timer:
            for _ in range(2):   # the first call compiles; the second proves nothing is left to compile
                fn()
            if on_gpu:
                torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - any compiler failure is reported, not fatal
        if timer.fired:       # the compiler may have wrapped our timeout in its own exception
            raise ModeUnavailable(f"{what} took longer than {timeout_s:.0f} s; skipped") from None
        raise ModeUnavailable(f"{what} failed: {type(e).__name__}: {_first_line(e)}") from e
    compile_s = time.perf_counter() - t0
    note = f"torch.compile(mode={compile_mode!r}, coordinate descent) in {compile_s:.0f} s"
    if not on_gpu:
        return Stepper("compile", fn, note, compile_s)
    try:
        step = graphed(fn, warmup=warmup)
    except Exception as e:  # noqa: BLE001 - fall back to the compiled step without a graph
        log.warning("capturing the compiled step in a CUDA graph failed (%s); timing it uncaptured", e)
        return Stepper("compile", fn, note + f"; not graph-captured ({type(e).__name__}: {_first_line(e)})",
                       compile_s)
    return Stepper("compile", step, note + " + one CUDA graph per step", time.perf_counter() - t0)


class Deadline:
    """Interrupt the main thread (an exception raised where it stands) after `seconds`.

    Uses SIGALRM, so a long compile is stopped rather than left running in a background
    thread, where it would disturb every measurement after it. `fired` says whether it
    went off (compilers may catch and wrap the exception). Off the main thread, or where
    SIGALRM does not exist, the block runs without a deadline.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.fired = False
        self._armed = (seconds > 0 and hasattr(signal, "SIGALRM")
                       and threading.current_thread() is threading.main_thread())
        self._previous = None

    def _expire(self, signum, frame) -> None:
        self.fired = True
        raise TimeoutError(f"deadline of {self.seconds:.0f} s passed")

    def __enter__(self) -> "Deadline":
        if self._armed:
            self._previous = signal.signal(signal.SIGALRM, self._expire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""
