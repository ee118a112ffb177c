"""DFlash against plain decode on the GPU: one trained pair, the same held-out prompts, the
same run, both on the megakernel (greedy, so both give the same tokens; the script checks).

    python examples/bench_dflash.py --target models/stdlib-256/target --drafter models/stdlib-256/drafter

Per mode: decode tokens/s (prefill excluded: the PyTorch prefill is the same for both),
ms per step (what one decode or DFlash step costs: COPY_DRAFT's price is the difference of
the two DFlash rows), mean committed tokens per DFlash step, and the speed-up. ``--copy-draft`` adds a third
mode, DFlash with copy drafting (`pipeline/dflash/copy_draft.py`: one more task between the
draft and the verify pass, and more tokens per step where the text repeats). Each prompt
runs once to warm up (kernel build and load, caches), then `--repeats` times timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from tilewarp.pipeline.dflash.copy_draft import CopyDraft
from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.runtime.engine import Engine

from examples.train.eval_acceptance import load_prompt_texts


def run(engine: Engine, prompts: list[list[int]], max_tokens: int,
        repeats: int) -> tuple[float, float, list[list[int]], list[int]]:
    """Decode tokens/s and ms per step (medians over repeats of the whole prompt set), the
    tokens, the committed counts of every DFlash step (none for plain decoding)."""
    params = SamplingParams(max_tokens=max_tokens)
    outs = [engine.generate(p, params).tokens for p in prompts]   # warm-up
    rates, step_ms, committed = [], [], []
    for _ in range(repeats):
        n, steps, secs = 0, 0, 0.0
        for p in prompts:
            r = engine.generate(p, params)
            n += len(r.tokens)
            steps += len(r.committed_per_step) or len(r.tokens)
            secs += r.decode_s
            committed += r.committed_per_step
        rates.append(n / secs)
        step_ms.append(1e3 * secs / steps)
    return statistics.median(rates), statistics.median(step_ms), outs, committed


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
    plain = Engine.from_checkpoint(args.target, backend=args.backend, steps_per_call=args.steps_per_call)
    modes = {"dflash": None, **({"dflash+copy": CopyDraft()} if args.copy_draft else {})}
    prompts = [plain.encode(t) for t in load_prompt_texts(args.target, args.prompts)]
    plain_rate, plain_ms, plain_out, _ = run(plain, prompts, args.max_tokens, args.repeats)
    print(f"{plain.cfg.name}: {len(prompts)} held-out prompts x {args.max_tokens} tokens, greedy, "
          f"{args.repeats} timed repeats, {args.steps_per_call} steps per launch")
    print(f"{'mode':12s} {'tokens/s':>10s} {'ms/step':>8s} {'committed/step':>15s} {'speed-up':>9s}")
    print(f"{'plain':12s} {plain_rate:10.1f} {plain_ms:8.4f} {1.0:15.2f} {1.0:8.2f}x")
    same = True
    for name, copy in modes.items():
        engine = Engine.from_checkpoint(args.target, drafter_path=args.drafter, backend=args.backend,
                                        steps_per_call=args.steps_per_call, copy_draft=copy)
        rate, ms, out, committed = run(engine, prompts, args.max_tokens, args.repeats)
        same &= out == plain_out
        mean = sum(committed) / max(len(committed), 1)
        print(f"{name:12s} {rate:10.1f} {ms:8.4f} {mean:15.2f} {rate / plain_rate:8.2f}x")
    print(f"DFlash tokens identical to plain greedy: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
