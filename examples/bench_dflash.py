"""DFlash against plain decode on the GPU: one trained pair, the same held-out prompts, the
same run, both on the megakernel (greedy, so both give the same tokens; the script checks).

    python examples/bench_dflash.py --target models/stdlib-256/target --drafter models/stdlib-256/drafter

Per mode: decode tokens/s (prefill excluded: the PyTorch prefill is the same for both),
ms per step (what one decode or DFlash step costs: COPY_DRAFT's price is the difference of
the two DFlash rows), mean committed tokens per DFlash step, and the speed-up.
``--copy-draft`` adds a third mode, DFlash with copy drafting
(`pipeline/dflash/copy_draft.py`: one more task between the draft and the verify pass, and
more tokens per step where the text repeats). All modes' engines live side by side. Each mode
runs every prompt once to warm up (kernel build and load, caches), then the modes are
timed interleaved, `--repeats` passes each (`measure`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tilewarp.pipeline.dflash.copy_draft import CopyDraft
from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.runtime.engine import Engine

from examples.train.eval_acceptance import load_prompt_texts


@dataclass
class Mode:
    """One row: its engine, the tokens of its warm-up pass, and per timed repeat its tokens/s
    and ms per step, with the committed count of every DFlash step."""

    engine: Engine
    tokens: list[list[int]] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)

    def time(self, prompts: list[list[int]], params: SamplingParams) -> None:
        """One timed pass over every prompt."""
        n, steps, secs = 0, 0, 0.0
        for p in prompts:
            r = self.engine.generate(p, params)
            n += len(r.tokens)
            steps += len(r.committed_per_step) or len(r.tokens)
            secs += r.decode_s
            self.committed += r.committed_per_step
        self.rates.append(n / secs)
        self.step_ms.append(1e3 * secs / steps)


def measure(modes: dict[str, Mode], prompts: list[list[int]], max_tokens: int, repeats: int) -> None:
    """Warm every mode up (kernel build and load, caches), then time them interleaved: each
    repeat runs every mode once, the order rotated, so that a drift of the machine (clocks,
    heat, a neighbour) lands on every row alike instead of on the row that ran last."""
    params = SamplingParams(max_tokens=max_tokens)
    for mode in modes.values():
        mode.tokens = [mode.engine.generate(p, params).tokens for p in prompts]
    names = list(modes)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            modes[name].time(prompts, params)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=Path, default=Path("models/stdlib-256/target"))
    ap.add_argument("--drafter", type=Path, default=Path("models/stdlib-256/drafter"))
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps-per-call", type=int, default=16, help="steps chained per kernel launch")
    ap.add_argument("--backend", default="megakernel", choices=("megakernel", "cpu"),
                    help="cpu: the CPU executor (checks the script anywhere; its speed means little)")
    ap.add_argument("--copy-draft", action="store_true", help="also time DFlash with copy drafting")
    args = ap.parse_args(argv)
    kw = {"backend": args.backend, "steps_per_call": args.steps_per_call}
    plain = Engine.from_checkpoint(args.target, **kw)
    modes = {"plain": Mode(plain)}
    for name, copy in {"dflash": None, **({"dflash+copy": CopyDraft()} if args.copy_draft else {})}.items():
        modes[name] = Mode(Engine.from_checkpoint(args.target, drafter_path=args.drafter, copy_draft=copy, **kw))
    prompts = [plain.encode(t) for t in load_prompt_texts(args.target, args.prompts)]
    measure(modes, prompts, args.max_tokens, args.repeats)
    print(f"{plain.cfg.name}: {len(prompts)} held-out prompts x {args.max_tokens} tokens, greedy, "
          f"{args.repeats} timed repeats (modes interleaved), {args.steps_per_call} steps per launch")
    print(f"{'mode':12s} {'tokens/s':>10s} {'ms/step':>8s} {'committed/step':>15s} {'speed-up':>9s}")
    base = statistics.median(modes["plain"].rates)
    for name, m in modes.items():
        rate = statistics.median(m.rates)
        mean = sum(m.committed) / len(m.committed) if m.committed else 1.0   # plain: one token a step
        print(f"{name:12s} {rate:10.1f} {statistics.median(m.step_ms):8.4f} {mean:15.2f} {rate / base:8.2f}x")
    same = all(m.tokens == modes["plain"].tokens for m in modes.values())
    print(f"DFlash tokens identical to plain greedy: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
