"""Batched generation with the trainable target: the self-distillation data.

The drafter must learn what the *exported* target says, so generation runs the target
loaded back from its checkpoint (``export.load_target``: bf16 weights, decoded MXFP4
experts, bf16 K/V in eval mode), greedy or with a sampled start.

With a KV cache (``model.KVCache``): the prompt runs once, then one position per new
token against the cached K/V, at its true index, with the full sequence's masks (sliding
windows, sinks); per sequence of a few hundred tokens that is ~100x less work than
rerunning the whole sequence per token, and generation is what limits the drafter's data.
All rows of a batch share one prompt length, so no padding or per-row positions are needed
(``prompt_batches`` / ``prompt_chunks`` trim prompts). It runs in fp32 (TF32 matmuls on a
GPU), not bf16 autocast, so greedy picks agree with the fp32 runtime at near-ties and the
labels are the tokens the runtime's target would choose.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from .model import KVCache, TargetLM


@torch.no_grad()
def generate(model: TargetLM, prompts: torch.Tensor, new_tokens: int, *, temperature: float = 0.0,
             sampled: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``prompts [B, P]`` -> ``[B, P + new_tokens]``.

    The first ``sampled`` new tokens (all of them if None) are drawn at ``temperature``, the
    rest are greedy; temperature 0 is greedy throughout. A sampled start then a greedy
    continuation gives varied contexts whose continuations are what greedy decoding writes.
    """
    model.eval()
    cache = KVCache(capacity=prompts.shape[1] + new_tokens)
    n_sampled = new_tokens if sampled is None else sampled
    logits = model(prompts, logits="last", cache=cache).logits[:, -1].float()
    out = [prompts]
    for i in range(new_tokens):
        nxt = pick(logits, temperature if i < n_sampled else 0.0, generator)
        out.append(nxt[:, None])
        if i + 1 < new_tokens:
            logits = model(nxt[:, None], logits="last", cache=cache).logits[:, -1].float()
    return torch.cat(out, dim=1)


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Next tokens ``[B]`` from logits ``[B, V]``: argmax at temperature 0, else a sample."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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


def prompt_chunks(prompts: Sequence[Sequence[int]], batch: int, *, min_len: int = 8, max_len: int = 160
                  ) -> list[torch.Tensor]:
    """Every prompt once (a fixed evaluation set): sorted by length, cut into runs of ``batch``
    (the last may be shorter), each run trimmed to its shortest. Clipping and dropping as
    ``prompt_batches``."""
    kept = sorted((list(p[:max_len]) for p in prompts if len(p) >= min_len), key=len)
    runs = [kept[i:i + batch] for i in range(0, len(kept), batch)]
    return [torch.tensor([r[:len(run[0])] for r in run], dtype=torch.int64) for run in runs]
