#!/usr/bin/env python
"""Train the MiMo-shaped target on the Python standard library and export it for tilewarp.

    python -m examples.train.train_target --preset stdlib-256 --minutes 8 --out out/target   # GPU
    python -m examples.train.train_target --preset toy --minutes 1.5 --out /tmp/toy/target   # CPU

Steps: collect the stdlib of this interpreter (``data``), train the BPE tokenizer on the
train split, encode the splits, train ``TargetLM`` for ``--minutes`` of wall clock (AdamW,
warmup + cosine by time, bf16 autocast on a GPU, aux-loss-free router balancing, MXFP4
quantisation-aware training for the last ``--qat-frac`` of the time), evaluating the valid
split every ``--eval-every`` seconds *as exported* (``export_numerics``) and keeping the best
weights. Then export the best to ``--out`` (checkpoint + ``tokenizer.json`` +
``heldout_prompts.json``), check the export against ``ReferenceModel``, report held-out loss
and print a greedy sample from a held-out prompt.

``--state PATH`` saves a resumable state every ``--save-every`` seconds and at the end;
``--resume PATH`` continues from one (the time already used counts against ``--minutes``),
with the ``tokenizer.json`` the first run wrote into ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):                       # run as a file: make `examples.train` importable
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from tilewarp.pipeline.checkpoint import load_checkpoint
from tilewarp.pipeline.reference import ReferenceModel

from examples.train import data, export, loop, presets, prompts, tokenizer
from examples.train.batches import WindowSampler, encode_stream
from examples.train.generate import generate
from examples.train.model import TargetLM, export_numerics
from examples.train.state import load_state, save_state

PROMPTS_FILE = "heldout_prompts.json"


@dataclass
class TargetResult:
    out: Path
    steps: int
    train_losses: list[float] = field(default_factory=list)     # one per step
    best_valid: float = math.inf
    heldout: float = math.inf
    reference_max_diff: float = math.inf
    model: TargetLM | None = None                                # the exported weights, fp32, eval mode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="stdlib-256", choices=sorted(presets.PRESETS))
    p.add_argument("--out", required=True, help="directory for the exported checkpoint")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock training budget")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-files", type=int, default=None, help="stdlib files per split (default: preset's)")
    p.add_argument("--vocab", type=int, default=None, help="tokenizer vocabulary (default: preset's)")
    p.add_argument("--tokenizer", default=None, help="use this tokenizer.json instead of training one")
    for key, typ in (("seq_len", int), ("batch", int), ("lr", float), ("dropout", float), ("weight_decay", float),
                     ("warmup", int), ("qat_frac", float), ("router_bias_rate", float), ("eval_every", float),
                     ("log_every", float)):
        p.add_argument("--" + key.replace("_", "-"), type=typ, default=None, help="default: the preset's")
    p.add_argument("--eval-batches", type=int, default=8, help="valid / held-out batches per evaluation")
    p.add_argument("--state", default=None, help="save resumable training state here")
    p.add_argument("--save-every", type=float, default=120.0, help="seconds between state saves")
    p.add_argument("--resume", default=None, help="resume from this state file")
    p.add_argument("--sample-tokens", type=int, default=64, help="greedy tokens printed at the end (0: none)")
    return p.parse_args(argv)


def lm_loss(model: TargetLM, windows: torch.Tensor) -> torch.Tensor:
    logits = model(windows[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


@torch.no_grad()
def eval_loss(model: TargetLM, batches: list[torch.Tensor], device: torch.device) -> float:
    """Mean next-token loss as the export computes it (bf16 weights, MXFP4 experts)."""
    with export_numerics(model), loop.autocast(device):
        return sum(float(lm_loss(model, b)) for b in batches) / len(batches)


def run(args: argparse.Namespace) -> TargetResult:
    preset = presets.get(args.preset)
    hp, device = loop.start(args, preset.target_train)
    say = loop.say
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    corpus = data.collect(max_files=args.max_files if args.max_files is not None else preset.max_files)
    say(f"[data] {corpus.summary()}; held out: {', '.join(data.HELDOUT_MODULES)}")
    # A resumed run must keep the token ids it trained with: reuse the tokenizer.json written
    # into --out at the start of the first run (or the one given).
    reuse = args.tokenizer or (out / tokenizer.FILENAME if args.resume else None)
    if reuse:
        tok = tokenizer.load_tokenizer(reuse)
    else:
        tok = tokenizer.train_tokenizer([f.text for f in corpus.files("train")], args.vocab or preset.vocab_size)
        tokenizer.save_tokenizer(tok, out)
    eot = tokenizer.eot_id(tok)
    streams = {s: encode_stream(tok, corpus.files(s), eot) for s in data.SPLITS}
    say(f"[tokens] vocab {tok.get_vocab_size()}; " + ", ".join(f"{s} {v.numel():,}" for s, v in streams.items())
        + f" ({time.perf_counter() - t0:.1f} s with tokenizer training)")
    heldout_prompts = prompts.pick(prompts.function_prompts(corpus.files("heldout")), 10_000)
    prompts.save_prompts(heldout_prompts, out / PROMPTS_FILE)

    cfg = preset.target(tok.get_vocab_size())
    model = TargetLM(cfg, dropout=hp["dropout"]).to(device)
    opt = loop.adamw(model.named_parameters(), hp["lr"], hp["weight_decay"], device)
    step, used = 0, 0.0
    if args.resume:
        step, used, _ = load_state(args.resume, model, opt)
        say(f"[resume] {args.resume}: step {step}, {used:.0f} s used")
    n_params = sum(p.numel() for p in model.parameters())
    say(f"[model] {cfg.name}: {n_params / 1e6:.2f} M parameters; hp {hp}")

    seq = hp["seq_len"]
    sampler = WindowSampler(streams["train"], seq, device, seed=args.seed)
    valid = WindowSampler(streams["valid"], seq, device).fixed(args.eval_batches, hp["batch"], seed=1)
    budget = loop.Budget(args.minutes, already=used)
    log_tick, eval_tick, save_tick = loop.every(hp["log_every"]), loop.every(hp["eval_every"]), \
        loop.every(args.save_every)
    result = TargetResult(out=out, steps=step)
    best_state: dict[str, torch.Tensor] | None = None
    tokens_seen, last_t, last_tokens = 0, time.perf_counter(), 0
    imbalance = 1.0
    model.train()
    while not budget.done and (args.max_steps is None or result.steps < args.max_steps):
        frac = budget.fraction
        loop.set_lr(opt, loop.lr_at(result.steps, frac, hp["lr"], hp["warmup"]))
        if frac >= 1 - hp["qat_frac"]:
            model.set_expert_quant("mxfp4")
        windows = sampler.sample(hp["batch"])
        with loop.autocast(device):
            loss = lm_loss(model, windows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        imbalance = max(imbalance, model.update_router_bias(hp["router_bias_rate"]))
        result.steps += 1
        loss_value = float(loss.detach())
        result.train_losses.append(loss_value)
        tokens_seen += windows.numel() - windows.shape[0]
        last_step = budget.done or (args.max_steps is not None and result.steps >= args.max_steps)
        if next(log_tick) or last_step:
            now = time.perf_counter()
            rate = (tokens_seen - last_tokens) / max(now - last_t, 1e-9)
            last_t, last_tokens = now, tokens_seen
            say(f"[train] step {result.steps} {budget.elapsed:6.0f}s loss {loss_value:.3f} lr "
                f"{opt.param_groups[0]['lr']:.2e} {rate:,.0f} tok/s router max/mean {imbalance:.2f}"
                f"{' qat' if frac >= 1 - hp['qat_frac'] else ''}")
            imbalance = 1.0
        if next(eval_tick) or last_step:
            v = eval_loss(model, valid, device)
            if v < result.best_valid:
                result.best_valid = v
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            say(f"[valid] step {result.steps} loss {v:.3f} (as exported; best {result.best_valid:.3f})")
        if args.state and (next(save_tick) or last_step):
            save_state(args.state, model, opt, step=result.steps, seconds=budget.elapsed)

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    export.save_target(model, out, tok)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    say(f"[export] {out}: {export.directory_bytes(out) / 1e6:.2f} MB ({files})")
    heldout = WindowSampler(streams["heldout"], seq, device).fixed(args.eval_batches, hp["batch"], seed=2)
    result.heldout = eval_loss(model, heldout, device)
    say(f"[heldout] loss {result.heldout:.3f} ({', '.join(data.HELDOUT_MODULES)})")
    result.reference_max_diff = check_export(model, out, tok, heldout_prompts[0].prompt, device)
    if args.sample_tokens:
        sample(model, tok, heldout_prompts[0].prompt, args.sample_tokens, device)
    say(f"[done] {result.steps} steps, {budget.elapsed:.0f} s")
    result.model = model
    return result


@torch.no_grad()
def check_export(model: TargetLM, out: Path, tok: Tokenizer, text: str, device: torch.device) -> float:
    """ReferenceModel on the written checkpoint vs the trainable model as exported, on one prompt."""
    ids = tok.encode(text).ids[:64]
    ref = ReferenceModel(load_checkpoint(out), capacity=len(ids) + 1)
    ref_logits = ref.prefill(ids).logits
    with export_numerics(model):
        ours = model(torch.tensor([ids], device=device)).logits[0].float().cpu()
    diff = float((ref_logits - ours).abs().max())
    same = bool((ref_logits.argmax(-1) == ours.argmax(-1)).all())
    loop.say(f"[check] ReferenceModel on the export vs trainable model: max |logit diff| {diff:.2e}, "
             f"argmax {'identical' if same else 'DIFFERS'} over {len(ids)} positions")
    return diff


@torch.no_grad()
def sample(model: TargetLM, tok: Tokenizer, text: str, n: int, device: torch.device) -> None:
    ids = torch.tensor([tok.encode(text).ids], device=device)
    with export_numerics(model):
        out = generate(model, ids, n)
    new = tok.decode(out[0, ids.shape[1]:].tolist())
    loop.say(f"[sample] greedy continuation of a held-out prompt (generated text between <<< >>>):\n{text}<<<{new}>>>")


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
