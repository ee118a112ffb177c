"""`tilewarp generate`: stream tokens from a checkpoint or a random preset model."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.sampling import SamplingParams

from tilewarp.pipeline.dflash.checkpoint import load_draft_checkpoint
from tilewarp.pipeline.dflash.copy_draft import CopyDraft
from tilewarp.pipeline.dflash.weights import DraftWeights

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
    p.add_argument("--drafter", default=None, metavar="DIR|random",
                   help="decode with DFlash: a drafter checkpoint directory, or 'random' (with --preset: a random "
                   "tiny drafter, which commits about one token per step); reports committed tokens per step")
    p.add_argument("--copy-draft", action=argparse.BooleanOptionalAction, default=None,
                   help="with --drafter: copy proposals from the context where it repeats (prompt lookup; "
                   "pipeline/dflash/copy_draft.py), lossless, the same rule on every backend (default: on "
                   "with a drafter)")
    p.add_argument("--device", default=None, help="torch device for prefill and the reference backend "
                   "(default: cuda for --backend megakernel, else cpu)")
    return "generate"


# SamplingParams names its fields; the CLI user typed these flags.
_FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "seed": "--sample-seed",
          "max_tokens": "--max-tokens", "stop_tokens": "--stop", "capacity": "--capacity"}


def _as_flag(e: InputError) -> InputError:
    """The same error, with the leading parameter name replaced by its command-line flag."""
    msg = str(e)
    m = re.match(r"[a-z_]+", msg)
    name = m.group() if m else ""
    return InputError(_FLAGS[name] + msg[len(name):] if name in _FLAGS else msg)


def _sampling_params(args: argparse.Namespace) -> SamplingParams:
    try:
        return SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              seed=args.sample_seed, max_tokens=args.max_tokens, stop_tokens=tuple(args.stop))
    except InputError as e:
        raise _as_flag(e) from None


def _prompt_ids(engine: Engine, text: str, force_ids: bool) -> list[int]:
    if engine.tokenizer is not None and not force_ids:
        ids, source = engine.encode(text), " (from tokenizer.json)"
    else:
        try:
            ids, source = [int(x) for x in text.split()], ""
        except ValueError:
            why = "with --ids" if force_ids else "this model has no tokenizer.json, so"
            raise InputError(f"--prompt {text!r}: {why} the prompt must be space-separated token ids") from None
    if not ids:
        raise InputError(f"--prompt {text!r}: empty; give at least one token")
    vocab = engine.cfg.vocab_size
    for i, t in enumerate(ids):
        if not 0 <= t < vocab:
            raise InputError(f"--prompt: token id {t} at index {i}{source} is out of range "
                             f"[0, vocab_size={vocab})")
    return ids


class _TextStream:
    """Incremental detokenisation: decode a short window of ids and emit only the new text,
    holding back a trailing partial UTF-8 character (a byte-level token can end mid-character)."""

    def __init__(self, engine: Engine, prompt: list[int]):
        self.engine = engine
        self.ids = list(prompt)
        self.prefix = max(0, len(prompt) - 5)   # decode from a little before the new ids: context for spacing
        self.read = len(prompt)

    def push(self, token: int) -> str:
        self.ids.append(token)
        return self._emit(final=False)

    def flush(self) -> str:
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        before = self.engine.decode_text(self.ids[self.prefix:self.read])
        text = self.engine.decode_text(self.ids[self.prefix:])
        if len(text) <= len(before) or (text.endswith("\ufffd") and not final):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(before):]


def run(args: argparse.Namespace) -> int:
    params = _sampling_params(args)
    kw = {"backend": args.backend, "capacity": args.capacity, "device": args.device,
          "copy_draft": None if args.copy_draft is False else CopyDraft()}
    try:
        engine = _engine(args, kw)
    except InputError as e:
        raise _as_flag(e) from None
    try:
        params.check_vocab(engine.cfg.vocab_size)
    except InputError as e:
        raise _as_flag(e) from None
    ids = _prompt_ids(engine, args.prompt, args.ids)
    need = engine.room_needed(len(ids), params.max_tokens)
    if need > engine.capacity:
        block = need - len(ids) - params.max_tokens
        extra = f" (plus {block} positions for the last DFlash block)" if block > 0 else ""
        raise InputError(f"--max-tokens {params.max_tokens}: the prompt ({len(ids)} tokens) plus the tokens to "
                         f"generate{extra} exceed the KV cache capacity {engine.capacity} (--capacity; the model's "
                         f"context is {engine.cfg.max_position})")
    # With a tokenizer: the prompt, then the decoded text as it streams. Without: the generated ids.
    text = _TextStream(engine, ids) if engine.tokenizer is not None else None
    if text is not None:
        sys.stdout.write(engine.decode_text(ids) if args.ids else args.prompt)
        sys.stdout.flush()
    for n, tok in enumerate(engine.stream(ids, params)):
        sys.stdout.write(text.push(tok) if text is not None else f"{' ' if n else ''}{tok}")
        sys.stdout.flush()
    sys.stdout.write((text.flush() if text is not None else "") + "\n")
    sys.stdout.flush()
    r = engine.last
    assert r is not None
    print(f"[{engine.cfg.name} / {engine.backend}] prompt {r.prompt_tokens} tokens in {r.prefill_s * 1e3:.1f} ms; "
          f"generated {len(r.tokens)} tokens in {r.decode_s:.3f} s = {r.tokens_per_s:.1f} tokens/s", file=sys.stderr)
    if engine.drafter is not None:
        print(committed_line(r.committed_per_step), file=sys.stderr)
    return 0


def _engine(args: argparse.Namespace, kw: dict) -> Engine:
    """The Engine the arguments name; `--drafter random` only with `--preset`, since a random
    drafter of a trained target's shape is not something anyone has asked to measure."""
    if args.copy_draft and args.drafter is None:
        raise InputError("--copy-draft: only with --drafter (copying fills a DFlash drafter's block)")
    if args.preset:
        drafter: bool | DraftWeights = False
        if args.drafter == "random":
            drafter = True
        elif args.drafter is not None:
            drafter = load_draft_checkpoint(args.drafter)
        return Engine.from_preset(args.preset, seed=args.seed, drafter=drafter, **kw)
    if args.drafter == "random":
        raise InputError("--drafter random: only with --preset (a random drafter for a checkpoint drafts nothing "
                         "useful); pass a drafter checkpoint directory")
    return Engine.from_checkpoint(args.model, drafter_path=args.drafter, **kw)


def committed_line(per_step: list[int]) -> str:
    """`committed tokens per step: mean X (histogram n:steps ...)` over the DFlash steps, the
    number DFlash's speed-up follows (the prefill's token is not a step)."""
    if not per_step:
        return "committed tokens per step: no DFlash step ran (the first token ended the request)"
    counts = Counter(per_step)
    hist = " ".join(f"{n}:{counts[n]}" for n in range(1, max(counts) + 1))
    return (f"committed tokens per step: mean {sum(per_step) / len(per_step):.2f} "
            f"(histogram tokens:steps {hist}; {len(per_step)} steps)")
