"""`tilewarp generate`: stream tokens from a checkpoint or a random preset model."""

from __future__ import annotations

import argparse
import sys

from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.sampling import SamplingParams

from ..engine import BACKENDS, Engine


def add_parser(sub: argparse._SubParsersAction) -> str:
    p = sub.add_parser("generate", help="generate tokens (streamed), then report tokens/s")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("model", nargs="?", help="checkpoint directory (config.json + safetensors)")
    src.add_argument("--preset", help="random-weight model of a preset shape (e.g. tiny)")
    p.add_argument("--seed", type=int, default=0, help="weight seed for --preset (default 0)")
    p.add_argument("--prompt", default="1 2 3 4", help="text (needs tokenizer.json) or space-separated token ids")
    p.add_argument("--ids", action="store_true", help="treat --prompt as token ids even if a tokenizer exists")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--sample-seed", type=int, default=None, help="seed of the sampler (reproducible output)")
    p.add_argument("--stop", type=int, nargs="*", default=(), help="stop token ids")
    p.add_argument("--backend", choices=BACKENDS, default="reference")
    p.add_argument("--capacity", type=int, default=None, help="KV cache positions (default min(4096, context))")
    p.add_argument("--device", default=None, help="torch device for prefill and the reference backend "
                   "(default: cuda for --backend megakernel, else cpu)")
    return "generate"


def _prompt_ids(engine: Engine, text: str, force_ids: bool) -> list[int]:
    if engine.tokenizer is not None and not force_ids:
        return engine.encode(text)
    try:
        return [int(x) for x in text.split()]
    except ValueError:
        raise InputError(f"--prompt {text!r}: this model has no tokenizer.json, so the prompt must be "
                         "space-separated token ids") from None


def run(args: argparse.Namespace) -> int:
    kw = {"backend": args.backend, "capacity": args.capacity, "device": args.device}
    engine = (Engine.from_preset(args.preset, seed=args.seed, **kw) if args.preset
              else Engine.from_checkpoint(args.model, **kw))
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            seed=args.sample_seed, max_tokens=args.max_tokens, stop_tokens=tuple(args.stop))
    ids = _prompt_ids(engine, args.prompt, args.ids)
    text_mode = engine.tokenizer is not None
    if text_mode:
        sys.stdout.write(args.prompt)
    sys.stdout.flush()
    for tok in engine.stream(ids, params):
        sys.stdout.write(engine.decode_text([tok]) if text_mode else f" {tok}")
        sys.stdout.flush()
    r = engine.last
    assert r is not None
    print(f"\n[{engine.cfg.name} / {engine.backend}] prompt {r.prompt_tokens} tokens in {r.prefill_s * 1e3:.1f} ms; "
          f"generated {len(r.tokens)} tokens in {r.decode_s:.3f} s = {r.tokens_per_s:.1f} tokens/s", file=sys.stderr)
    return 0
