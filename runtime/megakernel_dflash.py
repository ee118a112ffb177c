"""DFlash programs in the resident megakernel: the draft step and the chained "dflash" step.

`MegakernelDFlashRunner` is a `MegakernelRunner` that also uploads the drafter: its
weights join the weight table under the program's `D*` names (`weight_table`), and its
context cache (a `DraftKVCache` on the GPU, filled by the PyTorch prefill through
`DraftModel.append_context`) joins the layer table as ids `num_layers + i`, with the
drafter's shapes and value scale, so the draft ops (DRAFT_ROPE_KV, DRAFT_ATTN) and the
shared ones (LINEAR, ATTN_MERGE, LM_HEAD) read the draft layers as the CPU executor does.

`dflash(anchor, steps, ...)` has the CPU executor's signature and semantics
(`pipeline.cpu_exec.CpuExecutor.dflash`, the `program_loop.DFlashExecutor` protocol):
`steps` whole DFlash steps (draft, verify, acceptance) in one launch, the committed tokens
of each step returned, both caches ending at the new position. `MegakernelDFlashBackend`
is the Engine backend over it, the `cpu_backend.CpuDFlashBackend` loop on the GPU runner.
"""

from __future__ import annotations

import numpy as np
import torch

from tilewarp.pipeline.config import ModelConfig
from tilewarp.pipeline.cpu_exec import check_drafter
from tilewarp.pipeline.dflash.copy_draft import CopyDraft
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.kv_cache import DraftKVCache
from tilewarp.pipeline.dflash.program_loop import ChainedDFlash, HistoryMirror
from tilewarp.pipeline.dflash.weights import DraftWeights
from tilewarp.pipeline.errors import DeviceError, InputError
from tilewarp.pipeline.graph.dflash_step import build_dflash_step
from tilewarp.pipeline.kv_cache import KVCache
from tilewarp.pipeline.lower import Program, lower
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.schedule import DeviceModel, schedule
from tilewarp.pipeline.weight_table import weight_table
from tilewarp.pipeline.weights import Weights

from .abi import LAYER_DTYPE
from .cpu_backend import DFlashProgramBackend
from .megakernel import COPY_DRAFT_MAX_T, MegakernelRunner, log, max_t_bucket


def draft_layer_table(cache: DraftKVCache) -> np.ndarray:
    """The drafter's rows of the layer table (ids num_layers + i): cache, shapes, value scale."""
    d = cache.cfg
    t = np.zeros(d.num_layers, dtype=LAYER_DTYPE)
    for i in range(d.num_layers):
        t[i] = (cache.k[i].data_ptr(), cache.v[i].data_ptr(), cache.slots, d.num_kv_heads, d.num_heads, d.head_dim,
                d.head_dim, d.rotary_dim, -1 if d.window is None else d.window, d.value_scale)
    return t


class MegakernelDFlashRunner(MegakernelRunner, ChainedDFlash):
    """Runs draft and dflash programs (verify programs with exported hidden states run in
    the plain `MegakernelRunner`). Both caches live on the GPU."""

    def __init__(self, program: Program, weights: Weights, cache: KVCache, *, draft_weights: DraftWeights,
                 draft_cache: DraftKVCache, **kw):
        self.draft_weights = draft_weights
        self.draft_cache = draft_cache
        super().__init__(program, weights, cache, **kw)
        self._history = HistoryMirror(program, weights.cfg.vocab_size)

    # ------------------------------------------------------------ tables
    def _check_drafter(self, program: Program) -> None:
        check_drafter(program, self.draft_weights, self.draft_cache)
        if self.draft_cache.k[0].device.type != "cuda":
            raise DeviceError("the drafter's context cache must live on the GPU (build the DraftModel with "
                              "device='cuda')")

    def _weight_entries(self, program: Program, weights: Weights) -> list[dict[str, torch.Tensor]]:
        return weight_table(program.weights, weights, self.draft_weights)

    def _layer_rows(self, cfg: ModelConfig, cache: KVCache) -> np.ndarray:
        base = int(self.p.meta["draft_kv_base"]) if "draft_kv_base" in self.p.meta else cfg.num_layers
        assert base == cfg.num_layers, "draft layers follow the target's in the layer table"
        return np.concatenate([super()._layer_rows(cfg, cache), draft_layer_table(self.draft_cache)])

    # ------------------------------------------------------------ steps
    def draft(self, anchor: int) -> tuple[torch.Tensor, list[int]]:
        """One draft pass anchored at the drafter's context length; returns (proposal logits
        [B-1, V], proposals d_1..d_{B-1}). The context length does not move."""
        self._check_kind("draft", "draft")
        dc = self.draft_cache
        pos = dc.length
        dc.check_room(self.p.tokens)
        self._begin([anchor], pos)
        self.launch(1)
        dc.mark_written(pos, pos + self.p.tokens)   # the block's K/V went to positions pos..
        return self.floats("draft_logits"), self.ints("tokens")[0, 1:].tolist()

    # ----------------------------------------------------------- ChainedDFlash hooks
    def _write_ints(self, offset: int, words: torch.Tensor) -> None:
        self.arena.view(torch.int32)[offset:offset + len(words)] = words.to(self.dev)

    def _launch_steps(self, steps: int, seed: int, order: str) -> None:
        self.launch(steps)   # the GPU picks its own interleavings: seed and order do not apply

    def _read_int(self, offset: int) -> int:
        return int(self.arena.view(torch.int32)[offset])


class MegakernelDFlashBackend(DFlashProgramBackend):
    """Engine backend: DFlash through the chained dflash program in the megakernel, up to
    `steps_per_launch` whole steps per launch; the PyTorch reference prefills both caches
    on the GPU (contract 7)."""

    def __init__(self, weights: Weights, target: ReferenceModel, draft: DraftModel, *, steps_per_launch: int = 16,
                 workers: int | None = None, copy: CopyDraft | None = None):
        sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 132
        if copy is not None and max_t_bucket(draft.cfg.block_size) > COPY_DRAFT_MAX_T:
            log.info("copy drafting is off: the megakernel carries COPY_DRAFT for blocks of at most %d tokens, "
                        "this drafter's are %d", COPY_DRAFT_MAX_T, draft.cfg.block_size)
            copy = None
        program = lower(schedule(build_dflash_step(weights.cfg, draft.cfg, capacity=target.cache.capacity,
                                                   copy=copy), DeviceModel(workers=workers or sms)))
        runner = MegakernelDFlashRunner(program, weights, target.cache, draft_weights=draft.weights,
                                        draft_cache=draft.cache)
        super().__init__(runner, target, draft, steps_per_launch=steps_per_launch)
