"""Resumable training state in one safetensors file: fp32 module state, AdamW moments, and
the step and seconds used so far (in the header's metadata).

Why not ``torch.save``: the project loads weights only through safetensors (no pickle), and a
training state is weights too. The optimizer's per-parameter tensors are stored as
``opt.<index>.<key>``; its hyper-parameters are rebuilt by the script from its flags.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import safetensors.torch
import torch


def save_state(path: str | Path, module: torch.nn.Module, opt: torch.optim.Optimizer, *, step: int,
               seconds: float, extra: dict | None = None) -> None:
    """Write atomically (temp file, then rename): a run killed mid-write keeps the old state."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for index, st in opt.state_dict()["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"opt.{index}.{key}"] = value.detach().cpu().contiguous()
    meta = {"step": str(step), "seconds": f"{seconds:.3f}", "extra": json.dumps(extra or {})}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_state(path: str | Path, module: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, float, dict]:
    """Restore module and optimizer in place; returns (step, seconds used, extra)."""
    path = str(path)
    tensors = safetensors.torch.load_file(path)
    with safetensors.safe_open(path, framework="pt") as f:
        meta = f.metadata()
    module.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)
    return int(meta["step"]), float(meta["seconds"]), json.loads(meta.get("extra", "{}"))
