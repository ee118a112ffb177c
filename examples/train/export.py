"""Between trainable modules and tilewarp checkpoints, both directions.

Export writes the published layout through tilewarp's own writers (``save_checkpoint``,
``save_draft_checkpoint``), so what the runtime loads is checked by the runtime's loader
(``load_checkpoint`` / ``load_draft_checkpoint`` validate names, shapes, dtypes, values):

* target: every dense tensor in bf16; each expert's gate/up/down ``mxfp4.quantize``-d
  (OCP floor scales, as ``quant.fake_mxfp4``) into uint8 codes + E8M0 scales; the router
  bias in bf16. Tensors are written in ``tensor_specs`` order and must match it exactly.
* drafter: every tensor in bf16 (its parameter names are the checkpoint names).

Import (``load_target`` / ``load_drafter``) builds the trainable module from a checkpoint:
dense weights widened from bf16, experts decoded from MXFP4. That is how the drafter
trainer gets a target computing exactly what the runtime will, and how a run resumes from
an export.

Shards are capped at ``MAX_SHARD_BYTES`` (12 MiB) because the device tool returns files of
at most 16 MiB; the loader does not care how many shards there are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from tokenizers import Tokenizer

from tilewarp.pipeline import mxfp4
from tilewarp.pipeline.checkpoint import save_checkpoint
from tilewarp.pipeline.dflash.checkpoint import save_draft_checkpoint
from tilewarp.pipeline.dflash.tensor_specs import draft_tensor_specs
from tilewarp.pipeline.dflash.weights import DraftWeights
from tilewarp.pipeline.tensor_specs import TensorSpec, expert_name, tensor_specs
from tilewarp.pipeline.weights import Weights

from .drafter import TrainableDrafter
from .model import MoE, TargetLM
from .quant import SCALE_MODE
from .tokenizer import save_tokenizer

MAX_SHARD_BYTES = 12 << 20
PROJS = ("gate", "up", "down")


# ===================================================================== target
def target_tensors(model: TargetLM) -> dict[str, torch.Tensor]:
    """Every checkpoint tensor of ``model``, in stored form (bf16 / MXFP4 codes + scales)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if ".experts_" in name:
            continue
        out[name] = t.detach().to("cpu", torch.bfloat16)
    for layer, block in enumerate(model.model.layers):
        if not isinstance(block.mlp, MoE):
            continue
        stacks = dict(zip(PROJS, (block.mlp.experts_gate, block.mlp.experts_up, block.mlp.experts_down)))
        for proj, stack in stacks.items():
            codes, scales = mxfp4.quantize(stack.detach().float().cpu(), scale_mode=SCALE_MODE)
            for e in range(stack.shape[0]):
                name = expert_name(layer, e, proj)
                out[name] = codes[e].contiguous()
                out[name.removesuffix(".weight") + ".weight_scale"] = scales[e].contiguous()
    return out


def _in_spec_order(what: str, tensors: dict[str, torch.Tensor], specs: list[TensorSpec]
                   ) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors in table order; any name missing or extra is an error here, not at load."""
    names = [s.name for s in specs]
    missing, extra = set(names) - set(tensors), set(tensors) - set(names)
    if missing or extra:
        raise ValueError(f"{what}: export does not match the tensor table: missing {sorted(missing)[:3]}, "
                         f"extra {sorted(extra)[:3]}")
    for name in names:
        yield name, tensors[name]


def save_target(model: TargetLM, out_dir: str | Path, tokenizer: Tokenizer | None = None, *,
                overwrite: bool = True) -> Path:
    """Write the target checkpoint (+ ``tokenizer.json``) into ``out_dir``."""
    cfg = model.cfg
    path = save_checkpoint(cfg, _in_spec_order(cfg.name, target_tensors(model), tensor_specs(cfg)), out_dir,
                           max_shard_bytes=MAX_SHARD_BYTES, overwrite=overwrite)
    if tokenizer is not None:
        save_tokenizer(tokenizer, path)
    return path


@torch.no_grad()
def load_target(weights: Weights, *, device: str | torch.device = "cpu") -> TargetLM:
    """A ``TargetLM`` holding a checkpoint's weights (experts decoded), in eval mode."""
    cfg = weights.cfg
    model = TargetLM(cfg)
    state = model.state_dict()
    for name in state:
        if ".experts_" in name:
            continue
        state[name].copy_(weights.dense(name).float())    # split q/k/v: TargetLM refuses fused layouts
    for layer, block in enumerate(model.model.layers):
        if isinstance(block.mlp, MoE):
            for proj, stack in zip(PROJS, (block.mlp.experts_gate, block.mlp.experts_up, block.mlp.experts_down)):
                for e in range(cfg.num_experts):
                    stack[e].copy_(weights.expert_dense(layer, e, proj))
    return model.to(device).eval()


# ==================================================================== drafter
def drafter_tensors(drafter: TrainableDrafter) -> dict[str, torch.Tensor]:
    return {name: t.detach().to("cpu", torch.bfloat16) for name, t in drafter.state_dict().items()}


def save_drafter(drafter: TrainableDrafter, out_dir: str | Path, *, overwrite: bool = True) -> Path:
    dcfg = drafter.cfg
    return save_draft_checkpoint(dcfg, _in_spec_order(dcfg.name, drafter_tensors(drafter), draft_tensor_specs(dcfg)),
                                 out_dir, max_shard_bytes=MAX_SHARD_BYTES, overwrite=overwrite)


@torch.no_grad()
def load_drafter(weights: DraftWeights, *, device: str | torch.device = "cpu") -> TrainableDrafter:
    drafter = TrainableDrafter(weights.cfg)
    for name, t in drafter.state_dict().items():
        t.copy_(weights.get(name).float())
    return drafter.to(device).eval()


def directory_bytes(path: str | Path) -> int:
    """Bytes of every file in a checkpoint directory (what would be committed)."""
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
