#!/usr/bin/env python
"""Greedy DFlash acceptance of a target + drafter pair on held-out function prompts.

    python -m examples.train.eval_acceptance --target out/target --drafter out/drafter --prompts 32

Runs tilewarp's own decoder (``pipeline/dflash/decoder.py``: ``ReferenceModel`` target,
``DraftModel`` drafter, greedy verification) on the first ``--prompts`` prompts of the
target directory's ``heldout_prompts.json`` (written by ``train_target``; recomputed from
this interpreter's stdlib if absent), ``--max-tokens`` tokens each, stopping at
``<|endoftext|>``. Prints the mean tokens committed per step over all steps of all prompts
(the acceptance length, the goal's number), the histogram of 1..B, per-prompt means and
tokens/s. ``--check-lossless N`` also decodes the first N prompts with the target alone
and checks the outputs are identical (greedy DFlash must be exactly greedy decoding).
Copy drafting (``pipeline/dflash/copy_draft.py``) is on, as in the Engine;
``--no-copy-draft`` measures the drafter alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import torch

from tilewarp.pipeline.checkpoint import load_checkpoint
from tilewarp.pipeline.dflash.checkpoint import load_draft_checkpoint
from tilewarp.pipeline.dflash.copy_draft import CopyDraft
from tilewarp.pipeline.dflash.decoder import DFlashDecoder, plain_decode
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams

from examples.train import data, prompts, tokenizer

PROMPTS_FILE = "heldout_prompts.json"


#: Buckets of `copy_distance`, by the farthest distance each holds; None is "new text".
COPY_BUCKETS = (("repeats within 32", 32), ("repeats 33..128 back", 128), ("repeats > 128 back", float("inf")))
NEW_TEXT = "new text"


def copy_bucket(distance: int | None) -> str:
    return NEW_TEXT if distance is None else next(name for name, far in COPY_BUCKETS if distance <= far)


def copy_distance(seq: list[int], anchor: int, block: int) -> int | None:
    """How far back the step's block, ``seq[anchor : anchor + block]`` (its anchor and the
    tokens the target commits after it), last occurred before the anchor; None if it did not
    (or the sequence ends inside the block). A step whose block repeats its context is one a
    drafter that copies well commits whole: the split says how much of the acceptance gap
    is copying and how much is new text (README, session 8)."""
    pat = seq[anchor:anchor + block]
    if len(pat) < block:
        return None
    for start in range(anchor - 1, -1, -1):
        if seq[start:start + block] == pat:
            return anchor - start
    return None


@dataclass
class Acceptance:
    block_size: int
    histogram: list[int]                          # histogram[n-1]: steps that committed n tokens
    per_prompt: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    lossless: bool | None = None
    by_copy: dict[str, list[int]] = field(default_factory=dict)   # bucket -> [steps, committed tokens]

    def add_steps(self, prompt: list[int], steps: list[list[int]]) -> None:
        """Book the decoder's steps (the first list is the prefill's token) into `by_copy`."""
        seq = list(prompt) + [t for step in steps for t in step]
        anchor = len(prompt)
        for step in steps[1:]:
            entry = self.by_copy.setdefault(copy_bucket(copy_distance(seq, anchor, self.block_size)), [0, 0])
            entry[0] += 1
            entry[1] += len(step)
            anchor += len(step)

    @property
    def steps(self) -> int:
        return sum(self.histogram)

    @property
    def mean(self) -> float:
        return sum(n * c for n, c in enumerate(self.histogram, 1)) / max(self.steps, 1)

    def lines(self) -> list[str]:
        total = max(self.steps, 1)
        bars = [f"  {n:2d}: {c:6d} {'#' * round(40 * c / total)}" for n, c in enumerate(self.histogram, 1)]
        return [f"mean committed tokens per step: {self.mean:.3f} over {self.steps} steps "
                f"({len(self.per_prompt)} prompts, B = {self.block_size}, greedy)",
                "histogram (tokens committed per step):", *bars,
                "per prompt: " + " ".join(f"{m:.2f}" for m in self.per_prompt),
                f"{self.tokens} tokens in {self.seconds:.1f} s = {self.tokens / max(self.seconds, 1e-9):.1f} tokens/s "
                "(PyTorch reference + drafter)",
                "steps by whether their block (anchor + the next tokens) repeats the context:",
                *(f"  {name:22s} {n:5d} steps ({n / total:4.0%}), {c / max(n, 1):.2f} committed per step"
                  for name in (NEW_TEXT, *(b for b, _ in COPY_BUCKETS)) for n, c in [self.by_copy.get(name, [0, 0])])]


def load_prompt_texts(target_dir: Path, n: int, split: str = "heldout") -> list[str]:
    """The first `n` prompts of a split: "heldout" (the goal's; the target's saved list),
    or "valid" (for choosing between drafters without looking at the held-out prompts; from
    this interpreter's stdlib)."""
    path = target_dir / PROMPTS_FILE
    if split == "heldout" and path.exists():
        found = prompts.load_prompts(path)
    else:
        found = prompts.pick(prompts.function_prompts(data.collect().files(split)), 10_000)
    return [p.prompt for p in found[:n]]


def evaluate(target_dir: str | Path, drafter_dir: str | Path, texts: list[str], *, max_tokens: int = 128,
             device: str = "cpu", check_lossless: int = 0, copy: CopyDraft | None = None) -> Acceptance:
    target_dir = Path(target_dir)
    weights = load_checkpoint(target_dir)
    tok = tokenizer.load_tokenizer(target_dir)
    dweights = load_draft_checkpoint(drafter_dir)
    dcfg = dweights.cfg
    encoded = [tok.encode(t).ids for t in texts]
    capacity = max(len(e) for e in encoded) + max_tokens + dcfg.block_size
    target = ReferenceModel(weights, capacity=capacity, device=device)
    draft = DraftModel(dcfg, dweights, weights, capacity=capacity, device=device)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop_tokens=(tokenizer.eot_id(tok),))
    decoder = DFlashDecoder(target, draft, params, copy)
    result = Acceptance(dcfg.block_size, [0] * dcfg.block_size)
    lossless = True
    for i, ids in enumerate(encoded):
        t0 = time.perf_counter()
        steps = list(decoder.generate(ids))
        out = [t for step in steps for t in step]
        result.seconds += time.perf_counter() - t0
        result.add_steps(ids, steps)
        result.tokens += len(out)
        result.histogram = [a + b for a, b in zip(result.histogram, decoder.stats.histogram)]
        result.per_prompt.append(decoder.stats.mean)
        if i < check_lossless:
            lossless &= out == plain_decode(target, ids, params)
    result.lossless = lossless if check_lossless else None
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True)
    p.add_argument("--drafter", required=True)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--check-lossless", type=int, default=0, metavar="N")
    p.add_argument("--copy-draft", action=argparse.BooleanOptionalAction, default=True,
                   help="copy proposals from the context where it repeats (pipeline/dflash/copy_draft.py; "
                   "on by default, as in the Engine; --no-copy-draft: the drafter alone)")
    p.add_argument("--split", choices=("heldout", "valid"), default="heldout",
                   help="whose function prompts: held-out modules (the goal's number) or valid ones (to "
                   "choose between drafters)")
    p.add_argument("--show", type=int, default=1, help="print the generated text of the first N prompts")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = load_prompt_texts(Path(args.target), args.prompts, args.split)
    result = evaluate(args.target, args.drafter, texts, max_tokens=args.max_tokens, device=args.device,
                      check_lossless=args.check_lossless, copy=CopyDraft() if args.copy_draft else None)
    if args.show:
        show(args.target, args.drafter, texts[:args.show], args.max_tokens, args.device)
    for line in result.lines():
        print(line)
    if result.lossless is not None:
        verdict = "identical to plain greedy" if result.lossless else "MISMATCH"
        print(f"lossless check on {args.check_lossless} prompt(s): {verdict}")
    return 0 if result.lossless in (None, True) else 1


def show(target_dir: str | Path, drafter_dir: str | Path, texts: list[str], max_tokens: int, device: str) -> None:
    """The generated code, with ``|`` between the tokens of consecutive steps (one step = one block)."""
    tok = tokenizer.load_tokenizer(target_dir)
    weights = load_checkpoint(target_dir)
    dweights = load_draft_checkpoint(drafter_dir)
    for text in texts:
        ids = tok.encode(text).ids
        cap = len(ids) + max_tokens + dweights.cfg.block_size
        dec = DFlashDecoder(ReferenceModel(weights, capacity=cap, device=device),
                            DraftModel(dweights.cfg, dweights, weights, capacity=cap, device=device),
                            SamplingParams(max_tokens=max_tokens, stop_tokens=(tokenizer.eot_id(tok),)))
        steps = [tok.decode(s) for s in dec.generate(ids)]
        print(f"--- prompt, then the DFlash continuation (| = step boundary) ---\n{text}|{'|'.join(steps)}\n---")


if __name__ == "__main__":
    sys.exit(main())
