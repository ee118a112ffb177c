#!/usr/bin/env python
"""Sweep copy-drafting policies offline: one greedy decode per prompt, every policy replayed.

    python -m examples.train.copy_sweep --target models/stdlib-256/target \\
        --drafter models/stdlib-256/drafter --prompts 32 --min-match 1 2 3 --trust 200 300 400

Why replaying is exact: under greedy decoding the committed text does not depend on the
drafter, and the drafter's block at an anchor depends only on that text (its context K/V
come from the target's hidden states of committed tokens; its block input is the anchor).
So one teacher-forced pass gives the draft rows at *every* anchor, and any policy's steps
follow by walking the text: propose (drafter argmax, then `copied_prefix`), count the
proposals that match, jump. `tests/examples/test_copy_sweep.py` checks that the replay
commits, step for step, what `DFlashDecoder` commits. What it buys: the session 11 sweep
(`examples/train/README.md`) scored 30 policies on 73 prompts in the time of ~6 decodes.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import torch

from tilewarp.pipeline.checkpoint import load_checkpoint
from tilewarp.pipeline.dflash.checkpoint import load_draft_checkpoint
from tilewarp.pipeline.dflash.copy_draft import CopyDraft, copied_prefix
from tilewarp.pipeline.dflash.decoder import plain_decode
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.pipeline.sampling import SamplingParams

from examples.train import tokenizer
from examples.train.eval_acceptance import load_prompt_texts


@dataclass
class Trace:
    """A prompt's greedy text and the draft rows ``[B-1, V]`` at every anchor after the prompt."""

    prompt_len: int
    seq: list[int]
    rows: list[torch.Tensor]

    def draft_rows(self, anchor: int) -> torch.Tensor:
        return self.rows[anchor - self.prompt_len]


def trace(target: ReferenceModel, draft: DraftModel, prompt: list[int], params: SamplingParams) -> Trace:
    """Greedy-decode ``prompt``, then run the drafter at every anchor of the text (teacher forced)."""
    target.reset()
    draft.reset()
    seq = list(prompt) + plain_decode(target, prompt, params)
    target.reset()
    hidden = target.prefill(seq, return_hidden=draft.cfg.target_layer_ids).hidden
    n = len(prompt)
    draft.append_context({k: h[:n] for k, h in hidden.items()}, range(n))
    rows = []
    for p in range(n, len(seq) - 1):
        rows.append(draft.propose(seq[p], p).proposal_logits.clone())
        draft.append_context({k: h[p:p + 1] for k, h in hidden.items()}, [p])
    return Trace(n, seq, rows)


def replay(t: Trace, block: int, copy: CopyDraft | None) -> list[int]:
    """Tokens committed per step by greedy DFlash with ``copy`` over the traced text."""
    p, left, steps = t.prompt_len, len(t.seq) - t.prompt_len - 1, []
    while left > 0:
        size = min(block, left)
        rows = t.draft_rows(p)[:size - 1]
        proposals = rows.argmax(dim=-1).tolist()
        if copy is not None:
            prefix = copied_prefix(t.seq[:p + 1], rows, copy)
            proposals[:len(prefix)] = prefix
        accepted = next((i for i, tok in enumerate(proposals) if tok != t.seq[p + 1 + i]), len(proposals))
        steps.append(accepted + 1)
        p, left = p + accepted + 1, left - accepted - 1
    return steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--drafter", required=True)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--first-prompt", type=int, default=0,
                    help="skip this many prompts (a split the sweep did not tune on)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--min-match", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--max-match", type=int, default=16)
    ap.add_argument("--trust", type=int, nargs="+", default=[100, 200, 300, 400, 500, 700, 1000],
                    help="trust_permille values")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = load_checkpoint(args.target)
    dweights = load_draft_checkpoint(args.drafter)
    tok = tokenizer.load_tokenizer(args.target)
    texts = load_prompt_texts(Path(args.target), args.first_prompt + args.prompts)[args.first_prompt:]
    encoded = [tok.encode(t).ids for t in texts]
    capacity = max(len(e) for e in encoded) + args.max_tokens + dweights.cfg.block_size
    target = ReferenceModel(weights, capacity=capacity)
    draft = DraftModel(dweights.cfg, dweights, weights, capacity=capacity)
    params = SamplingParams(max_tokens=args.max_tokens, stop_tokens=(tokenizer.eot_id(tok),))
    policies: dict[str, CopyDraft | None] = {"drafter only": None}
    for m, trust in itertools.product(args.min_match, args.trust):
        policies[f"min_match {m}, trust {trust}"] = CopyDraft(m, args.max_match, trust)
    totals = {name: [0, 0] for name in policies}                  # name -> [steps, committed]
    for i, ids in enumerate(encoded, 1):
        t = trace(target, draft, ids, params)
        for name, copy in policies.items():
            steps = replay(t, dweights.cfg.block_size, copy)
            totals[name][0] += len(steps)
            totals[name][1] += sum(steps)
        print(f"[trace] {i}/{len(encoded)} prompts", file=sys.stderr, flush=True)
    for name, (steps, committed) in sorted(totals.items(), key=lambda kv: -kv[1][1] / max(kv[1][0], 1)):
        print(f"{committed / max(steps, 1):.3f} per step  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
