#!/usr/bin/env python
"""Train a DFlash drafter for an exported target by self-distillation, and export it.

    python -m examples.train.train_drafter --target out/target --preset stdlib-256 --minutes 8 --out out/drafter
    python -m examples.train.train_drafter --target /tmp/toy/target --preset toy --minutes 1.5 --out /tmp/toy/drafter

1. Load the target *from its checkpoint* (``export.load_target``: bf16 weights, decoded MXFP4
   experts), frozen: the drafter learns what the runtime's target says, not what the fp32
   training weights said.
2. Generate (``--gen-frac`` of the time, KV-cached): prompts are function starts of the
   train split plus ``--windows`` random train windows (16..128 tokens); ``--gen-len``
   tokens each. The labels are always greedy continuations, since the evaluation is greedy
   (sampled labels would teach slots 2.. where sampling goes, not where greedy decoding
   goes). A ``--greedy-frac`` share of the batches is greedy from the prompt on; the rest
   first sample ``--sample-prefix`` tokens at ``--temperature`` (varied contexts the target
   has not memorised) and continue greedily, and their anchors start after that prefix.
   Also greedy generations from every *valid* function prompt, for model selection.
   With ``--cache-features`` (the default) each generated batch then goes through the frozen
   target once (fp32, TF32 on a GPU) and its hidden states at ``target_layer_ids`` are kept on
   the training device (``Generated.features``): the target does not train, so they are the
   same every time a sequence is drawn, and recomputing them per step cost 35-58% of a step
   on the CPU (README, "Next run").
   With ``--refresh-every N`` one more batch is generated every N training steps and
   replaces the oldest, so training keeps seeing new sequences at the cache's size.
3. Train (the rest of the time): per step, a batch of generated sequences and its cached
   hidden states (``--no-cache-features``: a fresh target forward per step); ``--anchors``
   random anchor positions per sequence (in the greedy part, as at inference) each give a
   block; loss = CE of slots 1..B-1 weighted ``exp(-(k-1)/gamma)`` (``drafter.draft_loss``),
   with ``--kd`` of it against the target's own distribution at each slot instead of its
   greedy token (soft labels from the cached last-layer hidden states, ``teacher_logits``).
   Only ``fc``, the draft layers, the norms and the MASK embedding train; the target's
   embedding and lm_head are used frozen.
4. Keep the weights with the best valid committed tokens per step *as the decoder walks*
   (``drafter.decoder_walk`` over the commit at every anchor of the valid generations: the
   number greedy DFlash gets on them, not the per-anchor mean, which over-weights easy
   stretches), export them to ``--out``, check the export against ``DraftModel``, and,
   with ``--eval-prompts N``, run the real greedy DFlash decoder on N held-out prompts
   (``eval_acceptance``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import torch
from tokenizers import Tokenizer

from tilewarp.pipeline.checkpoint import load_checkpoint
from tilewarp.pipeline.config import ModelConfig
from tilewarp.pipeline.dflash.config import DraftConfig
from tilewarp.pipeline.dflash.checkpoint import load_draft_checkpoint
from tilewarp.pipeline.dflash.draft_model import DraftModel

from examples.train import data, eval_acceptance, export, loop, presets, prompts, tokenizer
from examples.train.batches import encode_stream
from examples.train.drafter import (TrainableDrafter, decoder_walk, draft_loss, leading_commits, sample_anchors,
                                    teacher_logits)
from examples.train.generate import generate, prompt_batches, prompt_chunks
from examples.train.model import TargetLM
from examples.train.state import load_state, save_state

#: Device bytes left free for drafter training when the feature cache grows (generation stops
#: before the cache would take them): a stdlib-256 step at batch 64 x 32 anchors peaks at a few GB.
TRAIN_RESERVE_BYTES = 12 * 2**30


@dataclass(frozen=True)
class Generated:
    """One generation batch (all rows share the prompt length)."""

    tokens: torch.Tensor                              # [rows, prompt + gen] on the CPU
    start: int                                        # first anchor position (after any sampled prefix)
    features: dict[int, torch.Tensor] | None = None   # target layer -> [rows, N, H] on the device, if cached


@dataclass
class DrafterResult:
    out: Path
    steps: int = 0
    sequences: int = 0
    losses: list[float] = field(default_factory=list)
    best_committed: float = 0.0
    draft_max_diff: float = math.inf
    acceptance: float | None = None
    drafter: TrainableDrafter | None = None                      # the exported weights, fp32, eval mode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="exported target directory (train_target --out)")
    p.add_argument("--preset", default="stdlib-256", choices=sorted(presets.PRESETS))
    p.add_argument("--out", required=True, help="directory for the exported drafter")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget, generation included")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-gen-batches", type=int, default=None, help="cap on generation batches (tests)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-files", type=int, default=None, help="stdlib files per split (default: preset's)")
    for key, typ in (("gen_frac", float), ("gen_batch", int), ("gen_len", int), ("greedy_frac", float),
                     ("sample_prefix", int), ("temperature", float), ("windows", int), ("batch", int),
                     ("anchors", int), ("lr", float), ("weight_decay", float), ("warmup", int), ("gamma", float),
                     ("kd", float), ("log_every", float)):
        p.add_argument("--" + key.replace("_", "-"), type=typ, default=None, help="default: the preset's")
    p.add_argument("--cache-features", action=argparse.BooleanOptionalAction, default=True,
                   help="keep each generation's target hidden states on the device instead of a target "
                        "forward per step (stdlib-256: 2 KB per token in bf16)")
    p.add_argument("--drafter-layers", type=int, default=None, help="draft layers (default: the preset's)")
    p.add_argument("--refresh-every", type=int, default=0, metavar="STEPS",
                   help="every STEPS training steps, replace the oldest generation batch by a new one (fresh "
                        "sequences while training; 0: the first generations only)")
    p.add_argument("--eval-every", type=float, default=60.0, help="seconds between valid evaluations")
    p.add_argument("--valid-batches", type=int, default=None,
                   help="valid generation batches of up to 32 prompts (default: every valid prompt)")
    p.add_argument("--eval-prompts", type=int, default=0, help="held-out prompts for a final DFlash run")
    p.add_argument("--eval-max-tokens", type=int, default=128)
    p.add_argument("--state", default=None)
    p.add_argument("--save-every", type=float, default=120.0)
    p.add_argument("--resume", default=None)
    p.add_argument("--init", default=None, metavar="DIR",
                   help="start from an exported drafter (e.g. models/stdlib-256/drafter) instead of random "
                        "weights: training time adds up across device calls")
    return p.parse_args(argv)


def prompt_pool(tok: Tokenizer, files: list[data.SourceFile], windows: int, generator: torch.Generator) -> list[list[int]]:
    """Function-start prompts of ``files`` plus ``windows`` random token windows of 16..128 tokens."""
    pool = [tok.encode(p.prompt).ids for p in prompts.function_prompts(files)]
    if windows:
        stream = encode_stream(tok, files, tokenizer.eot_id(tok))
        for _ in range(windows):
            n = int(torch.randint(16, 129, (1,), generator=generator))
            start = int(torch.randint(0, max(1, stream.numel() - n), (1,), generator=generator))
            pool.append(stream[start:start + n].tolist())
    return pool


def generate_set(target: TargetLM, batches: Iterable[torch.Tensor], count: int | None, budget: loop.Budget | None,
                 gen_len: int, greedy_frac: float, sample_prefix: int, temperature: float, device: torch.device,
                 generator: torch.Generator, cache_layers: tuple[int, ...] = ()) -> list[Generated]:
    """Generation batches until ``batches`` ends, ``count`` batches or the budget runs out (at
    least one). A ``greedy_frac`` share is greedy throughout; the others sample their first
    ``sample_prefix`` tokens at ``temperature`` and their anchors start after them. With
    ``cache_layers``, each batch's hidden states at those layers are cached (``cached_features``),
    and generation also stops where the next batch's would leave less than
    ``TRAIN_RESERVE_BYTES`` of device memory to training."""
    dev_gen = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    out: list[Generated] = []
    for p in batches:
        if out and ((count is not None and len(out) >= count) or (budget is not None and budget.done)):
            break
        if out and cache_layers and device_room(device) < feature_bytes(out[-1]) + TRAIN_RESERVE_BYTES:
            loop.say(f"[generate] stopping at {len(out)} batches: the feature cache would crowd out training")
            break
        p = p.to(device)
        sampled = 0 if float(torch.rand(1, generator=generator)) < greedy_frac else sample_prefix
        seq = generate(target, p, gen_len, temperature=temperature, sampled=sampled, generator=dev_gen)
        feats = cached_features(target, seq, cache_layers) if cache_layers else None
        out.append(Generated(seq.cpu(), p.shape[1] + sampled, feats))
    return out


def hidden_states(target: TargetLM, tokens: torch.Tensor, layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """The frozen target's residual stream after each of ``layers``, fp32 (TF32 on a GPU)."""
    with torch.no_grad():
        return target(tokens, return_hidden=layers, logits="none").hidden


def feature_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU, fp32 on the CPU. Why bf16 changes nothing: the drafter reads the hidden
    states only through ``fc`` under bf16 autocast, which rounds its input to bf16 first, so a bf16
    copy is bit-identical to what ``fc`` reads from the fp32 forward, at half the bytes. The CPU
    trains without autocast, so it keeps fp32 (and its tests stay exact)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def cached_features(target: TargetLM, tokens: torch.Tensor, layers: tuple[int, ...], chunk: int = 128
                    ) -> dict[int, torch.Tensor]:
    """``hidden_states`` of ``tokens [rows, N]`` (on the target's device) in ``feature_dtype``, ``chunk``
    rows per forward (the dense-MoE activations of a whole 512-row batch would take several GB).

    Bytes: rows x N x hidden x len(layers) x 2 on a GPU. stdlib-256 (hidden 256, 4 layers) keeps
    2 KB per token: ~35 k sequences of prompt + 160 tokens (~240 on average, at most 320) are
    ~17 GB (at most 23 GB) of the H100's 80 GB, against one target forward per step saved."""
    dtype = feature_dtype(tokens.device)
    parts = [hidden_states(target, rows, layers) for rows in tokens.split(chunk)]
    return {k: torch.cat([p[k] for p in parts]).to(dtype) for k in layers}


def feature_bytes(item: Generated) -> int:
    """Bytes of one generation batch's cached features (0 when not cached)."""
    return sum(t.numel() * t.element_size() for t in (item.features or {}).values())


def device_room(device: torch.device) -> float:
    """Bytes the device can still allocate (free + held by PyTorch's cache but unused); inf on the CPU."""
    if device.type != "cuda":
        return math.inf
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def context_features(target: TargetLM, item: Generated, rows: torch.Tensor | None, tokens: torch.Tensor,
                     layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """The drafter's context for ``rows`` of ``item`` (all when None), whose tokens on the device are
    ``tokens``: the cached features, else a fresh target forward (the same numbers: ``feature_dtype``)."""
    if item.features is None:
        return hidden_states(target, tokens, layers)
    if rows is None:
        return item.features
    rows = rows.to(tokens.device)
    return {k: item.features[k][rows] for k in layers}


def batch_of(target: TargetLM, gen: list[Generated], batch: int, layers: tuple[int, ...],
             generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, int, dict[int, torch.Tensor]]:
    """``batch`` random rows of one random generation batch: tokens, first anchor, context features."""
    item = gen[int(torch.randint(0, len(gen), (1,), generator=generator))]
    rows = torch.randperm(item.tokens.shape[0], generator=generator)[:batch]
    tokens = item.tokens[rows].to(device)
    return tokens, item.start, context_features(target, item, rows, tokens, layers)


def checked_drafter_config(preset: presets.Preset, target: ModelConfig, mask_id: int, layers: int | None
                           ) -> DraftConfig:
    """The preset's drafter, with ``layers`` draft layers if given, refused if the pair would not fit
    ``presets.BUDGET_BYTES`` (each stdlib-256 layer is ~1.1 MB)."""
    dcfg = preset.drafter(target, mask_id)
    if layers is not None:
        dcfg = dataclasses.replace(dcfg, num_layers=layers)
    dcfg.check_target(target)
    total = presets.stored_bytes(target) + presets.stored_bytes(dcfg) + presets.TOKENIZER_ALLOWANCE
    if total > presets.BUDGET_BYTES:
        raise SystemExit(f"{dcfg.num_layers} draft layers: the pair would be {total / 1e6:.2f} MB, over "
                         f"{presets.BUDGET_BYTES / 1e6:.0f} MB")
    return dcfg


@dataclass(frozen=True)
class ValidScore:
    walk: float          # tokens per step of greedy DFlash through the valid generations (selects)
    per_anchor: float    # mean commit over every anchor (the training lines' "committed")


@torch.no_grad()
def valid_committed(drafter: TrainableDrafter, target: TargetLM, valid: list[Generated], embed: torch.Tensor,
                    lm_head: torch.Tensor, device: torch.device) -> ValidScore:
    """Greedy DFlash's tokens per step on the valid generations, from the commit at every anchor."""
    drafter.eval()
    tokens_walked = steps = 0
    commits_sum, anchors = 0, 0
    for item in valid:
        tokens = item.tokens.to(device)
        hidden = context_features(target, item, None, tokens, drafter.cfg.target_layer_ids)
        with loop.autocast(device):
            commits = leading_commits(drafter, hidden, tokens, item.start, embed, lm_head)
        t, n = decoder_walk(commits)
        tokens_walked, steps = tokens_walked + t, steps + n
        commits_sum, anchors = commits_sum + int(commits.sum()), anchors + commits.numel()
    drafter.train()
    return ValidScore(tokens_walked / max(steps, 1), commits_sum / max(anchors, 1))


def init_from(drafter: TrainableDrafter, path: str) -> None:
    """Warm start: an exported drafter's weights, whose config must be this run's (the
    optimizer starts fresh; `--resume` continues a saved training state instead), except
    that this run may have more layers: the source's layers come first and each extra one
    starts as the identity (its attention and MLP output projections zero, so the drafter
    computes exactly what the source did and the new layers learn from there)."""
    src = export.load_drafter(load_draft_checkpoint(path))
    deeper = dataclasses.replace(drafter.cfg, num_layers=src.cfg.num_layers)
    if src.cfg != deeper or src.cfg.num_layers > drafter.cfg.num_layers:
        mine, theirs = dataclasses.asdict(drafter.cfg), dataclasses.asdict(src.cfg)
        diff = ", ".join(f"{k} {theirs[k]!r} != {mine[k]!r}" for k in mine if mine[k] != theirs[k])
        raise SystemExit(f"--init {path}: its drafter differs from this run's ({diff}; only more layers "
                         f"than the source can be added)")
    missing, unexpected = drafter.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("layers.") for k in missing), (missing, unexpected)
    with torch.no_grad():
        for layer in drafter.layers[src.cfg.num_layers:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()


def run(args: argparse.Namespace) -> DrafterResult:
    preset = presets.get(args.preset)
    hp, device = loop.start(args, preset.drafter_train)
    say = loop.say
    budget = loop.Budget(args.minutes)
    out = Path(args.out)
    g = torch.Generator().manual_seed(args.seed)

    weights = load_checkpoint(args.target)
    tok = tokenizer.load_tokenizer(args.target)
    target = export.load_target(weights, device=device).requires_grad_(False)
    dcfg = checked_drafter_config(preset, weights.cfg, tokenizer.mask_id(tok), args.drafter_layers)
    layers = dcfg.target_layer_ids
    cache_layers = layers if args.cache_features else ()
    embed = target.model.embed_tokens.weight.detach()
    lm_head = target.lm_head_weight().detach()
    blk = dcfg.block_size
    last_layer = weights.cfg.num_layers - 1
    if hp["kd"] and last_layer not in layers:
        raise SystemExit(f"--kd needs the target's last layer ({last_layer}) among the drafter's target layers "
                         f"{layers}: the teacher's logits come from its cached hidden states")
    if not 0 <= hp["kd"] <= 1:
        raise SystemExit(f"--kd {hp['kd']}: the soft-label share must lie in [0, 1]")
    final_norm = target.model.norm.weight.detach()
    if hp["sample_prefix"] > hp["gen_len"] - blk:
        raise SystemExit(f"--sample-prefix {hp['sample_prefix']} leaves no room for a block of {blk} in "
                         f"--gen-len {hp['gen_len']}")

    corpus = data.collect(max_files=args.max_files if args.max_files is not None else preset.max_files)
    train_pool = prompt_pool(tok, corpus.files("train"), windows=hp["windows"], generator=g)
    valid_pool = prompt_pool(tok, corpus.files("valid"), windows=0, generator=g)
    say(f"[data] {corpus.summary()}; prompts: train {len(train_pool)}, valid {len(valid_pool)}")
    valid = generate_set(target, prompt_chunks(valid_pool, min(hp["gen_batch"], 32)), args.valid_batches, None,
                         hp["gen_len"], 1.0, 0, 0.0, device, g, cache_layers)
    gen_budget = loop.Budget(args.minutes * hp["gen_frac"])
    batches = prompt_batches(train_pool, hp["gen_batch"], generator=g)

    def generate_batches(count: int | None, within: loop.Budget | None) -> list[Generated]:
        return generate_set(target, batches, count, within, hp["gen_len"], hp["greedy_frac"], hp["sample_prefix"],
                            hp["temperature"], device, g, cache_layers)

    gen = generate_batches(args.max_gen_batches, gen_budget)
    result = DrafterResult(out=out, sequences=sum(item.tokens.shape[0] for item in gen))
    cached = sum(feature_bytes(item) for item in gen + valid)
    say(f"[generate] {result.sequences} sequences ({len(gen)} batches of {hp['gen_batch']}, {hp['gen_len']} new "
        f"tokens) + {sum(item.tokens.shape[0] for item in valid)} valid, in {budget.elapsed:.0f} s; "
        + (f"target features cached: {cached / 1e9:.2f} GB" if cache_layers else "target features per step"))

    drafter = TrainableDrafter(dcfg).to(device)
    if args.init:
        init_from(drafter, args.init)
        say(f"[model] weights from {args.init}")
    opt = loop.adamw(drafter.named_parameters(), hp["lr"], hp["weight_decay"], device)
    if args.resume:
        result.steps, _, _ = load_state(args.resume, drafter, opt)
    say(f"[model] {dcfg.name}: {sum(p.numel() for p in drafter.parameters()) / 1e6:.2f} M parameters; hp {hp}")
    log_tick, eval_tick, save_tick = loop.every(hp["log_every"]), loop.every(args.eval_every), \
        loop.every(args.save_every)
    best: dict[str, torch.Tensor] | None = None
    start_step, t_last = result.steps, time.perf_counter()
    train_start = budget.fraction
    while not budget.done and (args.max_steps is None or result.steps - start_step < args.max_steps):
        frac = (budget.fraction - train_start) / max(1e-9, 1 - train_start)
        loop.set_lr(opt, loop.lr_at(result.steps, frac, hp["lr"], hp["warmup"]))
        tokens, start, hidden = batch_of(target, gen, hp["batch"], layers, g, device)
        anchors = sample_anchors(tokens.shape[0], hp["anchors"], start, tokens.shape[1] - blk, g).to(device)
        with loop.autocast(device):
            teacher = teacher_logits(hidden[last_layer], anchors, blk, final_norm, weights.cfg.rms_eps, lm_head) \
                if hp["kd"] else None
            loss, stats = draft_loss(drafter, hidden, tokens, anchors, embed, lm_head, hp["gamma"], teacher, hp["kd"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(drafter.parameters(), 1.0)
        opt.step()
        result.steps += 1
        result.losses.append(stats.loss)
        if args.refresh_every and result.steps % args.refresh_every == 0:
            gen.pop(0)                     # the oldest batch makes room: the cache keeps its size
            gen += generate_batches(1, None)
            result.sequences += gen[-1].tokens.shape[0]
        last = budget.done or (args.max_steps is not None and result.steps - start_step >= args.max_steps)
        if next(log_tick) or last:
            now = time.perf_counter()
            say(f"[train] step {result.steps} {budget.elapsed:6.0f}s loss {stats.loss:.3f} committed "
                f"{stats.committed:.2f} slot acc " + " ".join(f"{a:.2f}" for a in stats.slot_acc)
                + f" lr {opt.param_groups[0]['lr']:.2e} ({now - t_last:.1f} s)")
            t_last = now
        if next(eval_tick) or last:
            score = valid_committed(drafter, target, valid, embed, lm_head, device)
            if score.walk > result.best_committed:
                result.best_committed = score.walk
                best = {k: t.detach().clone() for k, t in drafter.state_dict().items()}
            say(f"[valid] step {result.steps} committed {score.walk:.3f} per step as decoded (best "
                f"{result.best_committed:.3f}); per anchor {score.per_anchor:.3f}")
        if args.state and (next(save_tick) or last):
            save_state(args.state, drafter, opt, step=result.steps, seconds=budget.elapsed)

    if best is not None:
        drafter.load_state_dict(best)
    drafter.eval()
    export.save_drafter(drafter, out)
    say(f"[export] {out}: {export.directory_bytes(out) / 1e6:.2f} MB")
    result.draft_max_diff = check_export(drafter, out, args.target, gen[0])
    if args.eval_prompts:
        texts = eval_acceptance.load_prompt_texts(Path(args.target), args.eval_prompts)
        acc = eval_acceptance.evaluate(args.target, out, texts, max_tokens=args.eval_max_tokens,
                                       device=str(device))
        result.acceptance = acc.mean
        for line in acc.lines():
            say("[eval] " + line)
    say(f"[done] {result.steps} steps, {result.sequences} generated sequences, {budget.elapsed:.0f} s")
    result.drafter = drafter
    return result


@torch.no_grad()
def check_export(drafter: TrainableDrafter, out: Path, target_dir: str, gen: Generated) -> float:
    """``DraftModel`` on the written drafter vs the trainable drafter, one block of one generation."""
    seq, plen = gen.tokens[0], gen.start
    weights = load_checkpoint(target_dir)
    dm = DraftModel(drafter.cfg, load_draft_checkpoint(out), weights, capacity=seq.numel() + drafter.cfg.block_size)
    target = export.load_target(weights)
    hidden = {k: v[0] for k, v in target(seq[None], return_hidden=drafter.cfg.target_layer_ids,
                                         logits="none").hidden.items()}
    dm.append_context({k: v[:plen] for k, v in hidden.items()}, range(plen))
    ref = dm.propose(int(seq[plen]), plen).logits
    ours_model = export.load_drafter(load_draft_checkpoint(out))
    states = ours_model({k: v[None] for k, v in hidden.items()}, torch.tensor([[plen]]),
                        weights.dense("model.embed_tokens.weight").float()[seq[plen]][None, None])
    ours = torch.nn.functional.linear(states[0, 0], weights.lm_head().float())
    diff = float((ref - ours).abs().max())
    loop.say(f"[check] DraftModel on the export vs trainable drafter: max |logit diff| {diff:.2e}, "
             f"argmax {'identical' if bool((ref.argmax(-1) == ours.argmax(-1)).all()) else 'DIFFERS'}")
    return diff


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
