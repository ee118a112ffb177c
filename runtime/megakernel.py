"""Running a `Program` on the GPU in the resident megakernel.

`MegakernelRunner` compiles `csrc/megakernel.cu` (NVRTC, cached), uploads the program,
the weight table and the layer table (whose KV pointers are the torch tensors of a
`KVCache` on the GPU, so a PyTorch prefill fills exactly what the kernel reads), and
launches one cooperative grid of `program.workers` CTAs per host call. Event counters
live on the device and are never reset: each launch passes the number of steps already
run as its base. After every launch the error record is read; a wait that timed out
becomes a `DeviceTimeoutError` naming the worker, task, op, event and counts.

DFlash programs (draft and chained dflash steps, which also need the drafter's weights
and context cache) run in `megakernel_dflash.MegakernelDFlashRunner`, a subclass that
extends the weight and layer tables through `_weight_entries` / `_layer_rows`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from tilewarp.pipeline.config import ModelConfig
from tilewarp.pipeline.errors import DeviceError, DeviceTimeoutError, GraphError, InputError, nonfinite_message
from tilewarp.pipeline.graph.ops import STATE_INV_TEMP, STATE_POS, STATE_SEED, STATE_STEP, Op
from tilewarp.pipeline.graph.step import build_decode_step
from tilewarp.pipeline.kv_cache import KVCache
from tilewarp.pipeline.lower import Program, lower
from tilewarp.pipeline.schedule import DeviceModel, schedule
from tilewarp.pipeline.weight_table import weight_table
from tilewarp.pipeline.weights import Weights

from .abi import LAYER_DTYPE, PARAMS_DTYPE, STATUS_CODES, STATUS_DTYPE, WEIGHT_DTYPE, WEIGHT_KINDS
from .nvrtc_build import compile_cubin, csrc_dir
from .mxfp4_mma import pack_codes, pack_scales
from .trace import TRACE_WORDS, TraceRecord, records

log = logging.getLogger("tilewarp.megakernel")

#: Ops with a device implementation in csrc/ops (dispatched in csrc/megakernel.cu).
GPU_OPS = frozenset({Op.EMBED, Op.LINEAR, Op.LINEAR_SWIGLU, Op.ROPE_KV, Op.ATTN_PARTIAL, Op.ATTN_MERGE, Op.ROUTE,
                     Op.EXPERT_UP, Op.EXPERT_DOWN, Op.MOE_COMBINE, Op.LM_HEAD, Op.SAMPLE, Op.DRAFT_EMBED,
                     Op.DRAFT_ROPE_KV, Op.DRAFT_ATTN, Op.EXPORT_HIDDEN, Op.ARGMAX_ROWS, Op.ACCEPT,
                     Op.COPY_DRAFT})
SCRATCH_FLOATS = 12 * 1024   # mirrors TW_SCRATCH_FLOATS in csrc/core/context.cuh
STAGE_FLOATS = 44 * 1024   # mirrors TW_STAGE_FLOATS in csrc/core/rows.cuh
SMEM_BYTES = (2 * 16 + STAGE_FLOATS + SCRATCH_FLOATS) * 4   # mirrors TW_SMEM_BYTES in csrc/core/context.cuh
DEFAULT_WAIT_BOUND_S = 2.0
MAX_MERGE_V_DIM = 128   # mirrors TW_MERGE_DIMS * 32 in csrc/ops/attn_merge.cuh


#: Most tokens per step of a build that carries COPY_DRAFT (TW_COPY_DRAFT_MAX_T in
#: csrc/ops/copy_draft.cuh: the 16-token build has no registers to spare for it).
COPY_DRAFT_MAX_T = 8


def check_gpu_ops(program: Program) -> None:
    """Refuse, before any upload, a program with an op that its build has no device code for."""
    ops = {Op(int(o)) for o in np.unique(program.desc["op"])}
    missing = {o.name for o in ops - GPU_OPS}
    if missing:
        raise DeviceError(f"the megakernel has no device code yet for op(s) {sorted(missing)}")
    if program.tokens > 16:
        raise GraphError("the megakernel takes at most 16 tokens per step")
    if Op.COPY_DRAFT in ops and max_t_bucket(program.tokens) > COPY_DRAFT_MAX_T:
        raise DeviceError(f"copy drafting (COPY_DRAFT) runs in builds of at most {COPY_DRAFT_MAX_T} tokens per step; "
                          f"this DFlash program has blocks of {program.tokens}: build it with copy=None")
    check_argmax_tiles(program)


def check_argmax_tiles(program: Program) -> None:
    """SAMPLE and ARGMAX_ROWS stage every LM head tile's (max, argmax) pair of every row in
    shared memory (csrc/ops/sample.cuh tw_tiles_argmax_all): refuse a program with more."""
    for task in np.flatnonzero(np.isin(program.desc["op"], [int(Op.SAMPLE), int(Op.ARGMAX_ROWS)])):
        floats = program.arg(int(task), "n_tiles") * program.arg(int(task), "t") * 2
        if floats > STAGE_FLOATS:
            raise GraphError(f"{program.describe(int(task))}: {program.arg(int(task), 'n_tiles')} LM head tiles of "
                             f"{program.arg(int(task), 't')} rows give {floats} floats of (max, argmax) pairs; the "
                             f"megakernel stages at most {STAGE_FLOATS}: cut the LM head into fewer tiles "
                             f"(TilePolicy.max_tiles)")


def route_scratch_floats(experts: int, tokens: int = 16) -> int:
    """Shared scratch ROUTE needs (csrc/ops/route.cuh): chosen ids and weights, used flags,
    the bias, the scores of every token and the used-expert ballots."""
    return 2 * 16 * 8 + 2 * experts + tokens * experts + 32


#: Mirrors TW_ROUTE_MAX_EXPERTS in csrc/ops/route.cuh: the choice holds 12 candidates per
#: lane in registers (more spilled the T = 8 / 16 builds).
ROUTE_REGISTER_EXPERTS = 384


def max_route_experts() -> int:
    scratch = (SCRATCH_FLOATS - route_scratch_floats(0)) // (route_scratch_floats(1) - route_scratch_floats(0))
    return min(scratch, ROUTE_REGISTER_EXPERTS)


def check_router(cfg: ModelConfig) -> None:
    """Refuse a router the megakernel's ROUTE cannot run, before anything is uploaded."""
    if cfg.top_k > 8 or cfg.num_experts > max_route_experts():
        raise DeviceError(f"the megakernel's router handles top-k <= 8 and at most {max_route_experts()} experts "
                          f"(registers and shared scratch), got {cfg.num_experts} experts / top-{cfg.top_k}")
    if cfg.n_group > 1:
        raise DeviceError("group-limited routing (n_group > 1) is not implemented in the megakernel")


def _cu():
    try:
        from cuda.bindings import driver as cu
    except ImportError as e:
        raise DeviceError("cuda-bindings is not installed: pip install 'tilewarp[cuda13]' (or [cuda12])") from e
    return cu


def _check(res):
    cu = _cu()
    err = res[0] if isinstance(res, tuple) else res
    if err != cu.CUresult.CUDA_SUCCESS:
        raise DeviceError(f"CUDA driver call failed: {cu.cuGetErrorName(err)[1].decode()}")
    if isinstance(res, tuple):
        return res[1] if len(res) == 2 else res[1:]
    return None


def max_t_bucket(tokens: int) -> int:
    """TW_MAX_T for a program of `tokens` tokens: the next power of two (1, 2, 4, 8, 16)."""
    b = 1
    while b < tokens:
        b *= 2
    return b


def build_megakernel(tokens: int = 16, cache_dir: str | Path | None = None):
    """Compile the whole megakernel for sm_90a and steps of up to `tokens` tokens (one
    cubin per power-of-two bucket, cached); returns the BuildResult."""
    # The absolute path as the program name: -lineinfo records it, so Nsight Compute's
    # source view finds megakernel.cu itself (the headers are found through -I already).
    main = csrc_dir() / "megakernel.cu"
    return compile_cubin(main, name=str(main), cache_dir=cache_dir,
                         defines={"TW_MAX_T": max_t_bucket(tokens), **extra_defines()})


def extra_defines() -> dict[str, str]:
    """csrc tuning macros from TILEWARP_DEFINES ("NAME=VALUE,NAME=VALUE"): for kernel
    experiments (tools/ab_defines.py) without editing the sources; part of the cache key."""
    text = os.environ.get("TILEWARP_DEFINES", "").strip()
    out: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        if not name.isidentifier():
            raise DeviceError(f"TILEWARP_DEFINES: {item!r} is not NAME=VALUE")
        out[name] = value or "1"
    return out


# The largest E8M0 scale byte the expert GEMV takes (csrc/ops/gemv_mxfp4.cuh
# tw_e8m0_unscaled): it folds 2^(s - 127) and its fixed 2^16 into one fp32 exponent
# field, s + 16, which must stay below 255. A larger byte (a block scale of 2^112 or more,
# whose products overflow fp32 anyway) would wrap into the sign bit: refused at upload.
E8M0_MAX_FOLDED = 238


def check_folded_scales(scales: torch.Tensor, where: tuple[int, ...]) -> None:
    big = scales > E8M0_MAX_FOLDED
    if bool(big.any()):
        idx = tuple(int(i) for i in big.nonzero()[0])
        raise DeviceError(f"MXFP4 expert bank {where}: E8M0 scale byte {int(scales[idx])} (2^{int(scales[idx]) - 127}) "
                          f"at {idx} is beyond the megakernel's range (at most {E8M0_MAX_FOLDED}: 2^111)")


# The tensor-core GEMV's copies address a weight matrix (a bf16 matrix, one expert of an
# MXFP4 bank) with 32-bit byte offsets (csrc/ops/gemv_*.cuh issue_block).
MAX_MATRIX_BYTES = 1 << 32


def check_matrix_bytes(kind: str, shapes: dict[str, tuple[int, ...]]) -> None:
    if kind == "mxfp4_bank":
        name, size = "one expert's codes", math.prod(shapes["codes"][1:])
    elif kind == "bf16":
        name, size = "the matrix", 2 * math.prod(shapes["w"])
    else:
        return
    if size >= MAX_MATRIX_BYTES:
        raise DeviceError(f"{kind} weight {shapes}: {name} take {size} bytes; the megakernel addresses a matrix "
                          f"with 32-bit offsets (at most {MAX_MATRIX_BYTES - 1} bytes)")


def device_layout(kind: str, entry: dict[str, torch.Tensor], device: torch.device | str = "cpu",
                  ) -> dict[str, torch.Tensor]:
    """A weight as the megakernel reads it, on `device`: MXFP4 expert banks in the tensor-
    core fragment order (runtime/mxfp4_mma.py, repacked after the copy, on the device; rows
    n0:n1 keep their byte ranges, so descriptors and prefetches are unchanged), everything
    else as the weight table gives it."""
    check_matrix_bytes(kind, {k: tuple(v.shape) for k, v in entry.items()})
    moved = {k: v.to(device).contiguous() for k, v in entry.items()}
    if kind != "mxfp4_bank":
        return moved
    check_folded_scales(entry["scales"], tuple(entry["codes"].shape))
    try:
        return {"codes": pack_codes(moved["codes"]), "scales": pack_scales(moved["scales"])}
    except ValueError as e:
        raise DeviceError(f"MXFP4 expert bank {tuple(entry['codes'].shape)}: {e}") from e


def _layer_table(cfg: ModelConfig, cache: KVCache) -> np.ndarray:
    """The target's rows of the layer table (ids 0 .. num_layers - 1)."""
    t = np.zeros(cfg.num_layers, dtype=LAYER_DTYPE)
    for i in range(cfg.num_layers):
        s = cfg.attn(i)
        t[i] = (cache.k[i].data_ptr(), cache.v[i].data_ptr(), cache.slots(i), s.num_kv_heads, s.num_heads,
                s.head_dim, s.v_head_dim, cfg.rotary_dim(s), -1 if s.window is None else s.window, cfg.value_scale)
    return t


class MegakernelRunner:
    def __init__(self, program: Program, weights: Weights, cache: KVCache, *,
                 wait_bound_s: float = DEFAULT_WAIT_BOUND_S, device: int = 0, trace_cap: int = 0):
        cfg = weights.cfg
        if not torch.cuda.is_available():
            raise DeviceError("no CUDA device: the megakernel backend needs a GPU")
        if program.model != cfg.name or program.capacity != cache.capacity:
            raise GraphError("program, weights and KV cache do not belong together")
        if cache.k[0].device.type != "cuda":
            raise DeviceError("the KV cache must live on the GPU (build the reference model with device='cuda')")
        check_router(cfg)
        check_gpu_ops(program)
        self._check_drafter(program)
        self.p, self.cfg, self.cache = program, cfg, cache
        self.dev = torch.device("cuda", device)
        cu = _cu()
        torch.cuda.init()
        _check(cu.cuInit(0))
        cudev = _check(cu.cuDeviceGet(device))
        self._ctx = _check(cu.cuDevicePrimaryCtxRetain(cudev))
        _check(cu.cuCtxSetCurrent(self._ctx))
        sms = torch.cuda.get_device_properties(self.dev).multi_processor_count
        if program.workers > sms:
            raise GraphError(f"program has {program.workers} workers but the GPU has {sms} SMs; "
                             "a resident kernel needs one SM per worker")
        build = build_megakernel(program.tokens)
        self._image = np.frombuffer(build.cubin, dtype=np.uint8).copy()
        self._module = _check(cu.cuModuleLoadData(self._image.ctypes.data))
        self._fn = _check(cu.cuModuleGetFunction(self._module, b"tw_megakernel"))
        # The block size is the build's (TW_CTA_THREADS: compute warps + the loader warp).
        ptr, size = _check(cu.cuModuleGetGlobal(self._module, b"tw_cta_threads"))
        threads = np.zeros(1, np.int32)
        _check(cu.cuMemcpyDtoH(threads.ctypes.data, ptr, size))
        self.threads = int(threads[0])
        attr = cu.CUfunction_attribute
        # What the driver reports for the loaded kernel (not every NVRTC prints ptxas -v).
        self.registers = _check(cu.cuFuncGetAttribute(attr.CU_FUNC_ATTRIBUTE_NUM_REGS, self._fn))
        self.local_bytes = _check(cu.cuFuncGetAttribute(attr.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, self._fn))
        _check(cu.cuFuncSetAttribute(self._fn, cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                     SMEM_BYTES))

        up = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.dev)
        self.desc = up(program.desc.view(np.uint8))
        self.queue = up(program.queue.astype(np.int32))
        self.queue_start = up(program.queue_start.astype(np.int32))
        self.counters = torch.zeros(len(program.event_need), dtype=torch.int64, device=self.dev)
        self.arena = torch.zeros(program.arena_words, dtype=torch.float32, device=self.dev)
        self.status = torch.zeros(STATUS_DTYPE.itemsize, dtype=torch.uint8, device=self.dev)
        self.abort = torch.zeros(1, dtype=torch.int32, device=self.dev)
        # trace_cap > 0: every worker can record its first trace_cap task instances per
        # launch; `tracing` switches recording on and off between launches.
        self.trace_cap = trace_cap
        self.tracing = trace_cap > 0
        self.trace = torch.zeros(max(1, program.workers * trace_cap * TRACE_WORDS), dtype=torch.int64, device=self.dev)
        decls = sorted(program.weights, key=lambda d: d.index)
        self.tables = [device_layout(d.kind, entry, self.dev)
                       for d, entry in zip(decls, self._weight_entries(program, weights))]
        wt = np.zeros(len(program.weights), dtype=WEIGHT_DTYPE)
        for w in program.weights:
            entry = self.tables[w.index]
            a = entry.get("w", entry.get("codes", entry.get("cos")))
            b = entry.get("scales", entry.get("sin"))
            if w.kind == "mxfp4_bank" and (a.data_ptr() | b.data_ptr()) & 15:
                raise DeviceError(f"MXFP4 bank {w.name!r}: codes and scales must be 16-byte aligned "
                                  "(the expert GEMV copies them with 16-byte cp.async)")
            wt[w.index] = (a.data_ptr(), 0 if b is None else b.data_ptr(), w.detail.get("rows", a.shape[0]),
                           w.detail.get("cols", w.detail.get("size", a.shape[-1])), w.detail.get("experts", 0),
                           WEIGHT_KINDS[w.kind])
        self.weight_ptrs = up(wt.view(np.uint8))
        layers = self._layer_rows(cfg, cache)   # the target's layers, and a drafter's
        if layers["v_dim"].max() > MAX_MERGE_V_DIM:
            raise DeviceError(f"the megakernel's attention merge handles v_head_dim <= {MAX_MERGE_V_DIM}, got "
                              f"{int(layers['v_dim'].max())} (csrc/ops/attn_merge.cuh: TW_MERGE_DIMS x 32)")
        self.layers = up(layers.view(np.uint8))
        self.wait_bound_ns = int(wait_bound_s * 1e9)
        self.steps_done = 0
        self._state = program.buffer("state").offset
        self._tokens = program.buffer("tokens").offset
        self._out = program.buffer("out_tokens") if any(b.name == "out_tokens" for b in program.buffers) else None
        log.info("megakernel ready: %d tasks on %d workers, %d registers, arena %.1f MB", program.n_tasks,
                 program.workers, self.registers, program.arena_words * 4 / 1e6)

    # ------------------------------------------------------------ tables
    # Hooks for MegakernelDFlashRunner, which adds the drafter's weights and layers.
    def _check_drafter(self, program: Program) -> None:
        """A program that runs a drafter needs the DFlash runner."""
        if program.meta.get("drafter") is not None:
            raise GraphError(f"this {program.kind} program runs drafter {program.meta['drafter']!r}: run it in "
                             "megakernel_dflash.MegakernelDFlashRunner, with the drafter's weights and context cache")

    def _weight_entries(self, program: Program, weights: Weights) -> list[dict[str, torch.Tensor]]:
        return weight_table(program.weights, weights)

    def _layer_rows(self, cfg: ModelConfig, cache: KVCache) -> np.ndarray:
        return _layer_table(cfg, cache)

    # ------------------------------------------------------------------ run
    def _params(self, steps: int) -> torch.Tensor:
        p = np.zeros(1, dtype=PARAMS_DTYPE)
        c = self.cfg
        p[0] = (self.desc.data_ptr(), self.queue.data_ptr(), self.queue_start.data_ptr(), self.counters.data_ptr(),
                self.arena.data_ptr(), self.weight_ptrs.data_ptr(), self.layers.data_ptr(), self.status.data_ptr(),
                self.abort.data_ptr(), self.trace.data_ptr() if self.tracing else 0, self.p.n_tasks,
                self.p.workers, steps, self.steps_done, self.wait_bound_ns, c.rms_eps, c.value_scale,
                c.routed_scaling, c.num_experts, c.top_k, int(c.norm_topk_prob),
                self.trace_cap if self.tracing else 0, 0)
        return torch.from_numpy(p.view(np.uint8).copy()).to(self.dev)

    def launch(self, steps: int) -> None:
        cu = _cu()
        params = self._params(steps)
        if self.tracing:
            self.trace.zero_()
        torch.cuda.nvtx.range_push(f"tilewarp {self.p.kind} x{steps}")
        arg = np.array([params.data_ptr()], dtype=np.uint64)
        argv = np.array([arg.ctypes.data], dtype=np.uint64)
        stream = torch.cuda.current_stream(self.dev).cuda_stream
        _check(cu.cuLaunchCooperativeKernel(self._fn, self.p.workers, 1, 1, self.threads, 1, 1, SMEM_BYTES, stream,
                                            argv.ctypes.data))
        torch.cuda.synchronize(self.dev)
        torch.cuda.nvtx.range_pop()
        self.steps_done += steps
        self._raise_on_error()

    def trace_records(self) -> list[TraceRecord]:
        """The last launch's trace (runtime/trace.py)."""
        return records(self.trace.cpu().numpy().view(np.uint64), self.p.workers, self.trace_cap)

    def _raise_on_error(self) -> None:
        st = np.frombuffer(self.status.cpu().numpy().tobytes(), dtype=STATUS_DTYPE)[0]
        code = int(st["code"])
        if code == 0:
            return
        self.steps_done = -1   # counters are inconsistent now; this runner cannot be reused
        task = int(st["task"])
        what = self.p.describe(task) if 0 <= task < self.p.n_tasks else f"task {task}"
        msg = (f"megakernel: {STATUS_CODES.get(code, f'error {code}')} on worker {int(st['sm'])} at {what}, "
               f"op {Op(int(st['op'])).name if int(st['op']) in {int(o) for o in Op} else int(st['op'])}")
        if code == 1:
            raise DeviceTimeoutError(f"{msg}: event {int(st['event'])} reached {int(st['seen'])} of "
                                     f"{int(st['needed'])} within {self.wait_bound_ns / 1e9:.2f} s")
        if code == 4:
            what = "router scores" if int(st["op"]) == Op.ROUTE else "logits"
            raise DeviceError(f"{msg}: {nonfinite_message(what, int(st['seen']))}")
        raise DeviceError(msg)

    def _begin(self, tokens: list[int], position: int | None = None, temperature: float = 0.0,
               sample_seed: int = 0) -> None:
        """As the CPU executor's: tokens into the head of the token buffer; the position
        (default: the cache's length), a zero step count and the sampling parameters
        (`counter_rng`: seed, 1 / temperature, 0 = greedy) into the state block."""
        if self.steps_done < 0:
            raise DeviceError("this megakernel runner stopped on an error; build a new one")
        bad = [x for x in tokens if not 0 <= x < self.cfg.vocab_size]
        if bad or not 1 <= len(tokens) <= self.p.tokens:
            raise InputError(f"tokens {tokens}: need {self.p.tokens} ids in [0, {self.cfg.vocab_size})")
        if not (math.isfinite(temperature) and temperature >= 0):
            raise InputError(f"temperature={temperature!r} is invalid: allowed a finite number >= 0 (0 = greedy)")
        ints = self.arena.view(torch.int32)
        ints[self._tokens:self._tokens + len(tokens)] = torch.tensor(tokens, dtype=torch.int32, device=self.dev)
        ints[self._state + STATE_POS] = self.cache.length if position is None else position
        ints[self._state + STATE_STEP] = 0
        ints[self._state + STATE_SEED] = (sample_seed & 0xFFFFFFFF) - ((sample_seed & 0x80000000) << 1)
        self.arena[self._state + STATE_INV_TEMP] = 1.0 / temperature if temperature else 0.0

    def _check_kind(self, kind: str, method: str) -> None:
        if self.p.kind != kind:
            raise GraphError(f"{method}() needs a {kind} program, this one is {self.p.kind!r}")

    def decode(self, token: int, steps: int, *, temperature: float = 0.0, sample_seed: int = 0) -> list[int]:
        """Feed `token` and run `steps` chained decode steps in one launch: greedy, or sampled
        at `temperature` with the counter-based noise of `sample_seed` (`counter_rng`)."""
        self._check_kind("decode", "decode")
        if not 1 <= steps <= self._out.rows:
            raise InputError(f"steps={steps} not in [1, {self._out.rows}] per launch")
        self.cache.check_room(steps)
        self._begin([token], None, temperature, sample_seed)
        self.launch(steps)
        self.cache.length += steps
        ints = self.arena.view(torch.int32)
        return ints[self._out.offset:self._out.offset + steps].tolist()

    def verify(self, tokens: list[int], *, temperature: float = 0.0,
               sample_seed: int = 0) -> tuple[torch.Tensor, list[int]]:
        """One step over T tokens: (logits [T, V], each row's choice: argmax, or the sample
        at `temperature`). The cache keeps all T; the caller truncates what it rejects."""
        self._check_kind("verify", "verify")
        if len(tokens) != self.p.tokens:
            raise InputError(f"tokens {list(tokens)}: need {self.p.tokens} ids in [0, {self.cfg.vocab_size})")
        self.cache.check_room(len(tokens))
        self._begin(list(tokens), None, temperature, sample_seed)
        self.launch(1)
        self.cache.length += len(tokens)
        return self.logits(), self.arena.view(torch.int32)[self._out.offset:self._out.offset + self.p.tokens].tolist()

    def ints(self, name: str) -> torch.Tensor:
        """A copy (on the host) of an int32 buffer of the program, [rows, cols]."""
        b = self.p.buffer(name)
        return self.arena.view(torch.int32)[b.offset:b.offset + b.rows * b.cols].view(b.rows, b.cols).cpu()

    def floats(self, name: str) -> torch.Tensor:
        """A copy (on the device) of an fp32 buffer of the program, [rows, cols]."""
        b = self.p.buffer(name)
        return self.arena[b.offset:b.offset + b.rows * b.cols].view(b.rows, b.cols).clone()

    def logits(self) -> torch.Tensor:
        return self.floats("logits")

    def hidden(self) -> dict[int, torch.Tensor]:
        """The last verify step's exported hidden states: target layer -> [T, hidden]."""
        return self.p.exported_hidden(self.floats)


class MegakernelBackend:
    """Engine backend: greedy steps chained inside one launch."""

    def __init__(self, weights: Weights, cache: KVCache, *, workers: int | None = None):
        sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 132
        program = lower(schedule(build_decode_step(weights.cfg, capacity=cache.capacity),
                                 DeviceModel(workers=workers or sms)))
        self.runner = MegakernelRunner(program, weights, cache)

    def feed(self, token: int) -> torch.Tensor:
        self.runner.decode(token, 1)
        return self.runner.logits()[-1]

    def feed_greedy(self, token: int, n: int) -> list[int]:
        return self.runner.decode(token, n)
