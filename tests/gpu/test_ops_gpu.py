"""Every op of the megakernel equals the CPU executor's, op by op.

One step of a program planned without arena reuse (so every intermediate buffer
survives) runs on both executors from the same KV cache; each buffer is compared under
the bound of the op that wrote it. Activations are fp32 on both sides with bf16 weights,
so differences come from summation order and are compounded layer by layer (4 layers):
bounds are relative Frobenius errors. Integer outputs (slot tables, tokens) must be equal.
"""

from __future__ import annotations

import pytest
import torch

from tilewarp.pipeline.cpu_exec import CpuExecutor
from tilewarp.pipeline.graph.ops import Op, slot_table_fields
from tilewarp.pipeline.graph.step import build_step
from tilewarp.pipeline.kv_cache import KVCache
from tilewarp.pipeline.lower import lower
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.schedule import DeviceModel, schedule

pytestmark = pytest.mark.gpu

#: Relative error bound per op (fp32 math; the difference is summation order).
BOUNDS = {Op.EMBED: 0.0, Op.LINEAR: 2e-4, Op.LINEAR_SWIGLU: 2e-4, Op.ROPE_KV: 2e-4, Op.ATTN_PARTIAL: 5e-4,
          Op.ATTN_MERGE: 5e-4, Op.EXPERT_UP: 5e-4, Op.EXPERT_DOWN: 5e-4, Op.MOE_COMBINE: 5e-4, Op.LM_HEAD: 5e-4}

#: The routing weights (fp32, from the router scores' sigmoid): close, not equal. The
#: router GEMV of a step of >= 2 tokens runs on tensor cores with its input split into
#: bf16 hi + lo (~2^-17 relative), so the weights differ from the CPU's fp32 by ~1e-5.
ROUTE_WEIGHTS_TOL = {"rtol": 1e-4, "atol": 1e-6}

PROMPT = [3, 17, 91, 5, 42, 7, 250, 11, 64, 2, 33, 128, 9, 77, 150, 21, 8, 99, 4, 60, 12, 13]


def gpu_copy(cache: KVCache) -> KVCache:
    out = KVCache(cache.cfg, cache.capacity, device="cuda")
    for a, b in zip(out.k + out.v, cache.k + cache.v):
        a.copy_(b)
    out.length = cache.length
    return out


def writer_ops(p) -> dict[str, Op]:
    ops = {}
    for row in p.access[p.access["mode"] == 1]:
        ops.setdefault(p.buffers[int(row["buf"])].name, Op(int(p.desc["op"][int(row["task"])])))
    return ops


# 3 tokens: the T = 4 build, whose bf16 GEMVs pack hi / lo halves into one mma (TW_MMA_PACK_T).
@pytest.mark.parametrize("tokens", [1, 3, 8, 16])
def test_every_op_equals_the_cpu_executor(gpu, tokens):
    from tilewarp.runtime.megakernel import MegakernelRunner
    cfg = preset("tiny")
    w = random_weights(cfg, 2)
    kind = "decode" if tokens == 1 else "verify"
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    p = lower(schedule(build_step(cfg, tokens, kind=kind, capacity=256), DeviceModel(workers=sms), reuse_arena=False))
    ref = ReferenceModel(w, capacity=256)
    ref.prefill(PROMPT)
    gcache = gpu_copy(ref.cache)
    cpu, gpu_run = CpuExecutor(p, w, ref.cache), MegakernelRunner(p, w, gcache)
    block = list(range(5, 5 + tokens))
    if kind == "decode":
        cpu.decode(block[0], 1)
        gpu_run.decode(block[0], 1)
    else:
        cpu.verify(block)
        gpu_run.verify(block)
    a_cpu, a_gpu = cpu.ctx.arena, gpu_run.arena.cpu()
    worst: dict[Op, float] = {}
    for b in p.buffers:
        if b.kind == "external" or b.name in ("out_tokens", "state", "tokens", "best"):
            continue
        op = writer_ops(p)[b.name]
        x = a_cpu[b.offset:b.offset + b.rows * b.cols]
        y = a_gpu[b.offset:b.offset + b.rows * b.cols]
        if b.dtype == "i32":
            xi, yi = x.view(torch.int32), y.view(torch.int32)
            if op == Op.ROUTE:   # ids, counts, token lists, slots exact; the fp32 weights (stored as bits) close
                f = slot_table_fields(min(tokens * cfg.top_k, cfg.num_experts), tokens, cfg.top_k)
                cut = f["tok_weight"]
                assert torch.equal(xi[:cut], yi[:cut]), f"{b.name}: routing differs"
                torch.testing.assert_close(yi[cut:].view(torch.float32), xi[cut:].view(torch.float32),
                                           **ROUTE_WEIGHTS_TOL)
            else:
                assert torch.equal(xi, yi), f"{b.name} ({op.name}) differs"
            continue
        same_inf = torch.isinf(x) & (x == y)   # empty attention chunks: max = -inf on both sides
        x, y = torch.where(same_inf, 0.0, x), torch.where(same_inf, 0.0, y)
        err = float((y - x).norm() / x.norm().clamp(min=1e-30))
        worst[op] = max(worst.get(op, 0.0), err)
        assert err <= BOUNDS[op], f"{b.name} written by {op.name}: relative error {err:.2e} > {BOUNDS[op]:.0e}"
    for layer in range(cfg.num_layers):
        assert (gcache.k[layer].cpu().float() - ref.cache.k[layer].float()).abs().max() <= 2 ** -6
        assert (gcache.v[layer].cpu().float() - ref.cache.v[layer].float()).abs().max() <= 2 ** -6
    print({k.name: f"{v:.1e}" for k, v in worst.items()})
