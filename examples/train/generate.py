"""Batched generation with the trainable target: the self-distillation data.

The drafter must learn what the *exported* target says, so generation runs the target
loaded back from its checkpoint (``export.load_target``: bf16 weights, decoded MXFP4
experts, bf16 K/V in eval mode), greedy or sampled.

No KV cache: each step reruns the whole batch (prompt + tokens so far) and takes the last
position's logits. For sequences of a few hundred tokens on a GPU this costs seconds per
thousand sequences, and it is the reference semantics by construction (every position at
its true index, sliding windows from the full mask). All rows of a batch share one prompt
length, so no padding or per-row positions are needed (``prompt_batches`` trims prompts).
It runs in fp32 (TF32 matmuls on a GPU), not bf16 autocast, so greedy picks agree with the
fp32 runtime at near-ties and the labels are the tokens the runtime's target would choose.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from .model import TargetLM


@torch.no_grad()
def generate(model: TargetLM, prompts: torch.Tensor, new_tokens: int, *, temperature: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """``prompts [B, P]`` -> ``[B, P + new_tokens]``: greedy (temperature 0) or sampled."""
    model.eval()
    ids = prompts
    for _ in range(new_tokens):
        logits = model(ids, logits="last").logits[:, -1].float()
        if temperature == 0:
            nxt = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    return ids


def prompt_batches(prompts: Sequence[Sequence[int]], batch: int, *, min_len: int = 8, max_len: int = 160,
                   generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless ``[batch, P]`` prompt batches: prompts sorted by length, a random run of ``batch``
    neighbours taken, each cut to the run's shortest (so rows share P without padding).
    Prompts are first clipped to ``max_len`` tokens; shorter than ``min_len`` are dropped."""
    kept = sorted((list(p[:max_len]) for p in prompts if len(p) >= min_len), key=len)
    if len(kept) < batch:
        raise ValueError(f"only {len(kept)} prompts of >= {min_len} tokens for batches of {batch}")
    while True:
        start = int(torch.randint(0, len(kept) - batch + 1, (1,), generator=generator))
        run = kept[start:start + batch]
        p = len(run[0])
        yield torch.tensor([r[:p] for r in run], dtype=torch.int64)
