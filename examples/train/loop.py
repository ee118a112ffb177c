"""What both trainers share: the device, mixed precision, a wall-clock budget, the learning
rate schedule, the optimizer, and progress lines.

The budget is wall-clock because the contract is "fits in 10 minutes on one GPU": the
schedule is a function of the fraction of the budget used (warmup by steps, then cosine to
10% by time), so a faster or slower machine trains more or fewer steps but always
finishes its schedule on time.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import Iterable, Iterator

import torch


def pick_device(name: str | None) -> torch.device:
    """``auto``/None: CUDA when there is one, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device: torch.device, seed: int, threads: int | None = None) -> None:
    """Seed, thread count (CPU), TF32 matmuls (GPU: bf16 autocast does the heavy lifting anyway)."""
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def start(args, defaults: dict) -> tuple[dict, torch.device]:
    """What every training script does first: the hyper-parameters (a flag given on the
    command line wins over the preset's default), the device, seeding and threads, and an
    `[env]` log line."""
    hp = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in defaults.items()}
    device = pick_device(args.device)
    setup(device, args.seed, args.threads)
    say(f"[env] {environment()}")
    return hp, device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on the GPU; fp32 on the CPU (CPU bf16 matmuls are slow on most hosts)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Budget:
    """Seconds allowed and used; ``fraction`` drives the schedule."""

    def __init__(self, minutes: float, already: float = 0.0):
        self.seconds = minutes * 60.0
        self.start = time.perf_counter() - already

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def fraction(self) -> float:
        return min(1.0, self.elapsed / self.seconds) if self.seconds > 0 else 1.0

    @property
    def done(self) -> bool:
        return self.elapsed >= self.seconds


def lr_at(step: int, fraction: float, peak: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from ``peak`` to ``floor * peak`` by time."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction)))


def adamw(params: Iterable[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float,
          device: torch.device) -> torch.optim.AdamW:
    """AdamW, decay on matrices only (not norms, sinks, embeddings of one row), betas (0.9, 0.95)."""
    decay, plain = [], []
    for _, p in params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else plain).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def say(msg: str) -> None:
    """A progress line, flushed (logs are read through a pipe on the GPU machine)."""
    print(msg, flush=True)


def every(seconds: float) -> Iterator[bool]:
    """An endless iterator yielding True once per ``seconds`` (first call: False)."""
    last = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now - last >= seconds:
            last = now
            yield True
        else:
            yield False


def environment() -> str:
    """One line naming what ran: Python, torch, device, threads."""
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return (f"python {sys.version.split()[0]}, torch {torch.__version__}, {dev}, "
            f"{torch.get_num_threads()} threads, pid {os.getpid()}")
