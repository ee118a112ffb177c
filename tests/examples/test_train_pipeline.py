"""The training pipeline of ``examples/train`` at toy scale, on the CPU, in seconds.

One fixture trains the toy target for 20 steps on a few stdlib files and exports it; another
trains the toy drafter for 20 steps on the target's own generations and exports it. The
tests then check what the GPU runs will rely on:

* losses go down (the loop, the schedule and the gradients are wired);
* the export is the model: ``ReferenceModel`` on the written checkpoint gives the same
  greedy continuation as the trainable model run as exported (eval mode, bf16 weights,
  MXFP4 fake-quantised experts), and logits within float noise; reading the checkpoint
  back gives the same module;
* the drafter's training objective is the decoder's: for every step ``DFlashDecoder``
  takes with the exported pair, the trainable drafter predicts exactly the number of
  tokens the step commits, and the valid metric's walk over those commits takes the
  decoder's steps;
* KV-cached generation writes what rerunning the whole sequence per token writes, and a
  sampled start is followed by the greedy continuation of what it sampled;
* the drafter trainer's feature cache is the target forward it replaces (same features,
  same losses; bf16 on a GPU is what the autocast ``fc`` reads anyway);
* ``Engine.from_checkpoint`` loads the export (with its tokenizer.json) and generates text;
* the pieces: splits, prompts, tokenizer round trip, sinks in SDPA, fake quantisation,
  resumable state, and the shipped preset's byte budget.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from examples.train import data, eval_acceptance, presets, prompts, tokenizer, train_drafter, train_target
from examples.train.attention import attend, attend_one
from examples.train.drafter import decoder_walk, draft_loss, leading_commits, teacher_logits
from examples.train.export import load_drafter, load_target, save_drafter, save_target
from examples.train.generate import generate, prompt_chunks
from examples.train.model import TargetLM, export_numerics
from examples.train.quant import fake_mxfp4, mxfp4_roundtrip
from examples.train.state import load_state, save_state
from tilewarp.pipeline.checkpoint import load_checkpoint
from tilewarp.pipeline.dflash.checkpoint import load_draft_checkpoint
from tilewarp.pipeline.dflash.decoder import DFlashDecoder, plain_decode
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.reference import ReferenceModel, attention, attention_mask
from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.runtime.engine import Engine

COMMON = ["--preset", "toy", "--max-steps", "20", "--minutes", "3", "--max-files", "8", "--threads", "1",
          "--device", "cpu", "--log-every", "1000", "--warmup", "5"]
NEW = 24


@pytest.fixture(scope="module")
def target_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("target")
    args = train_target.parse_args(COMMON + ["--out", str(out), "--vocab", "300", "--seq-len", "64", "--batch", "8",
                                             "--lr", "1e-2", "--eval-every", "1000", "--sample-tokens", "0"])
    return train_target.run(args)


@pytest.fixture(scope="module")
def drafter_run(target_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("drafter")
    args = train_drafter.parse_args(COMMON + [
        "--target", str(target_run.out), "--out", str(out), "--max-gen-batches", "1", "--gen-batch", "8",
        "--gen-len", "32", "--batch", "8", "--anchors", "6", "--valid-batches", "1", "--eval-every", "1000",
        "--lr", "1e-2"])
    return train_drafter.run(args)


@pytest.fixture(scope="module")
def prompt_ids(target_run) -> list[int]:
    tok = tokenizer.load_tokenizer(target_run.out)
    first = prompts.load_prompts(target_run.out / train_target.PROMPTS_FILE)[0]
    return tok.encode(first.prompt).ids[:48]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ============================================================== training and export
def test_target_loss_decreases(target_run):
    losses = target_run.train_losses
    assert len(losses) == 20
    assert _mean(losses[-4:]) < _mean(losses[:4]) - 0.5, losses


def test_export_matches_reference_greedy(target_run, prompt_ids):
    model: TargetLM = target_run.model
    ref = ReferenceModel(load_checkpoint(target_run.out), capacity=len(prompt_ids) + NEW + 1)
    expected = plain_decode(ref, prompt_ids, SamplingParams(max_tokens=NEW))
    with export_numerics(model):
        ours = generate(model, torch.tensor([prompt_ids]), NEW)[0, len(prompt_ids):].tolist()
        ours_logits = model(torch.tensor([prompt_ids])).logits[0]
    assert ours == expected
    ref.reset()
    ref_logits = ref.prefill(prompt_ids).logits
    assert torch.allclose(ours_logits, ref_logits, atol=1e-3 * float(ref_logits.abs().max()), rtol=0)
    assert target_run.reference_max_diff < 1e-2


def _uncached_greedy(model: TargetLM, ids: torch.Tensor, new: int) -> torch.Tensor:
    with torch.no_grad():
        for _ in range(new):
            ids = torch.cat([ids, model(ids, logits="last").logits[:, -1].argmax(-1)[:, None]], dim=1)
    return ids


def test_cached_generation_is_uncached(target_run, prompt_ids):
    """Past the toy's sliding window (16) too: the cache keeps every layer's masks."""
    model = load_target(load_checkpoint(target_run.out))
    batch = torch.tensor([prompt_ids[:40], prompt_ids[5:45]])
    assert torch.equal(generate(model, batch, NEW), _uncached_greedy(model, batch, NEW))


def test_sampled_start_then_greedy(target_run, prompt_ids):
    model = _perturbed(load_target(load_checkpoint(target_run.out)), 0.5, seed=3).eval()
    batch = torch.tensor([prompt_ids[:20]] * 4)
    out = generate(model, batch, NEW, temperature=1.5, sampled=6, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 20 + NEW)
    assert len({tuple(r) for r in out[:, 20:26].tolist()}) > 1                  # the start is sampled
    assert torch.equal(out, _uncached_greedy(model, out[:, :26], NEW - 6))      # then greedy


def test_prompt_chunks_take_every_prompt_once():
    prompts_ = [[1] * n for n in (9, 30, 12, 8, 5, 20, 11, 40)]
    chunks = prompt_chunks(prompts_, 3)
    assert [c.shape for c in chunks] == [(3, 8), (3, 12), (1, 40)]             # 5 is too short


def test_load_target_is_export_numerics(target_run, prompt_ids):
    loaded = load_target(load_checkpoint(target_run.out))
    with torch.no_grad(), export_numerics(target_run.model):
        expected = target_run.model(torch.tensor([prompt_ids])).logits
    assert torch.equal(loaded(torch.tensor([prompt_ids])).logits, expected)


def test_export_runs_in_engine(target_run):
    engine = Engine.from_checkpoint(target_run.out, backend="cpu")
    ids = engine.encode("def mean(data):\n")
    tokens = list(engine.stream(ids, SamplingParams(max_tokens=8)))
    assert isinstance(engine.decode_text(tokens), str)
    assert tokens == plain_decode(ReferenceModel(load_checkpoint(target_run.out), capacity=64), ids,
                                  SamplingParams(max_tokens=8))


def test_drafter_loss_decreases(drafter_run):
    losses = drafter_run.losses
    assert len(losses) == 20
    assert _mean(losses[-4:]) < _mean(losses[:4]) - 0.3, losses
    assert drafter_run.draft_max_diff < 1e-3


def test_cached_features_are_the_recomputed_ones(target_run):
    """The feature cache holds, for any rows drawn, what a target forward on those rows gives."""
    weights = load_checkpoint(target_run.out)
    target = load_target(weights)
    layers = presets.get("toy").drafter(weights.cfg, 1).target_layer_ids
    g = torch.Generator().manual_seed(0)
    [item] = train_drafter.generate_set(target, [torch.randint(2, 300, (6, 20), generator=g)], None, None, 16, 0.0,
                                        4, 1.0, torch.device("cpu"), g, cache_layers=layers)
    assert train_drafter.feature_bytes(item) == 6 * 36 * weights.cfg.hidden_size * len(layers) * 4
    rows = torch.tensor([4, 1, 3])
    cached = train_drafter.context_features(target, item, rows, item.tokens[rows], layers)
    fresh = train_drafter.hidden_states(target, item.tokens[rows], layers)
    # Equal up to fp32 rounding: a forward over other rows may block its matmuls otherwise
    # on the CPU (it did with 2 threads); a wrong row or position is off by O(1).
    for k in layers:
        torch.testing.assert_close(cached[k], fresh[k], rtol=1e-5, atol=1e-5)


def test_training_on_cached_features_is_training_without(target_run, drafter_run, tmp_path):
    """Same seed, same data: the per-step target forward and the cache give the same losses."""
    args = train_drafter.parse_args(COMMON + [
        "--target", str(target_run.out), "--out", str(tmp_path / "drafter"), "--max-gen-batches", "1",
        "--gen-batch", "8", "--gen-len", "32", "--batch", "8", "--anchors", "6", "--valid-batches", "1",
        "--eval-every", "1000", "--lr", "1e-2", "--no-cache-features"])
    uncached = train_drafter.run(args)
    assert uncached.losses == pytest.approx(drafter_run.losses, rel=1e-5, abs=0)


def test_bf16_features_are_what_the_autocast_fc_reads(drafter_run):
    """Why the GPU cache may be bf16: under bf16 autocast ``fc`` rounds fp32 features to bf16 anyway."""
    drafter = drafter_run.drafter
    g = torch.Generator().manual_seed(0)
    hidden = {k: torch.randn(2, 9, drafter.cfg.hidden_size, generator=g) * 3 for k in drafter.cfg.target_layer_ids}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(drafter.context(hidden), drafter.context({k: v.bfloat16() for k, v in hidden.items()}))


def test_init_starts_from_an_exported_drafter_and_refuses_another_shape(drafter_run, tmp_path):
    """--init: training time adds up across device calls (the optimizer starts fresh)."""
    exported = load_drafter(load_draft_checkpoint(drafter_run.out))
    fresh = train_drafter.TrainableDrafter(exported.cfg)
    train_drafter.init_from(fresh, str(drafter_run.out))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), exported.state_dict().values()))
    other = train_drafter.TrainableDrafter(dataclasses.replace(exported.cfg, intermediate_size=64))
    with pytest.raises(SystemExit, match=r"--init .*intermediate_size"):
        train_drafter.init_from(other, str(drafter_run.out))
    deeper = dataclasses.replace(exported.cfg, num_layers=exported.cfg.num_layers + 1)
    save_drafter(train_drafter.TrainableDrafter(deeper), tmp_path / "deeper")
    with pytest.raises(SystemExit, match=r"--init .*num_layers.*only more layers"):
        train_drafter.init_from(train_drafter.TrainableDrafter(exported.cfg), str(tmp_path / "deeper"))


def test_a_deeper_drafter_warm_starts_as_the_source_and_then_trains_its_new_layer(drafter_run):
    """--drafter-layers above the source's: the extra layer starts as the identity, so the
    block predictions equal the source's exactly; its output projections still get gradient."""
    src = load_drafter(load_draft_checkpoint(drafter_run.out))
    deeper = train_drafter.TrainableDrafter(dataclasses.replace(src.cfg, num_layers=src.cfg.num_layers + 1))
    train_drafter.init_from(deeper, str(drafter_run.out))
    g = torch.Generator().manual_seed(0)
    hidden = {k: torch.randn(2, 12, src.cfg.hidden_size, generator=g) for k in src.cfg.target_layer_ids}
    anchors, emb = torch.tensor([[3, 7], [5, 9]]), torch.randn(2, 2, src.cfg.hidden_size, generator=g)
    deeper.eval()
    with torch.no_grad():
        assert torch.equal(deeper(hidden, anchors, emb), src(hidden, anchors, emb))
    deeper.train()
    deeper(hidden, anchors, emb).square().sum().backward()
    new = deeper.layers[-1]
    assert new.self_attn.o_proj.weight.grad.abs().sum() > 0 and new.mlp.down_proj.weight.grad.abs().sum() > 0


def test_teacher_logits_are_the_targets_own_next_token_logits(target_run, prompt_ids):
    """--kd's soft labels: slot k of a block at anchor a is the target's distribution at a + k - 1,
    taken from the last layer's hidden states, so on greedy text its argmax is the label."""
    weights = load_checkpoint(target_run.out)
    model = load_target(weights)
    seq = generate(model, torch.tensor([prompt_ids[:20]]), NEW)
    last = weights.cfg.num_layers - 1
    with torch.no_grad():
        out = model(seq, return_hidden=(last,))
    anchors = torch.tensor([[20, 25, 30]])
    got = teacher_logits(out.hidden[last], anchors, 8, model.model.norm.weight, weights.cfg.rms_eps,
                         model.lm_head_weight())
    want = out.logits[0, anchors[0][:, None] + torch.arange(7)]
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[0].argmax(-1), seq[0, anchors[0][:, None] + torch.arange(1, 8)])


def test_kd_mixes_the_soft_labels_into_each_slots_loss(target_run, drafter_run):
    """kd = 0 is the greedy-label loss whatever the teacher; kd = 1 against a teacher that is sure
    of the labels is that loss too; a teacher that spreads its mass raises it."""
    weights, dweights = load_checkpoint(target_run.out), load_draft_checkpoint(drafter_run.out)
    target, drafter = load_target(weights), load_drafter(dweights)
    embed, lm_head = weights.dense("model.embed_tokens.weight").float(), weights.lm_head().float()
    seq = generate(target, torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]]), NEW)
    a = torch.tensor([[8, 12]])
    labels = seq[0, a[0][:, None] + torch.arange(1, 8)][None]
    sure = torch.nn.functional.one_hot(labels, weights.cfg.vocab_size).float() * 1e4
    with torch.no_grad():
        hidden = target(seq, return_hidden=dweights.cfg.target_layer_ids, logits="none").hidden
        hard, _ = draft_loss(drafter, hidden, seq, a, embed, lm_head, 4.0)
        zero, _ = draft_loss(drafter, hidden, seq, a, embed, lm_head, 4.0, torch.zeros_like(sure), 0.0)
        same, _ = draft_loss(drafter, hidden, seq, a, embed, lm_head, 4.0, sure, 1.0)
        flat, _ = draft_loss(drafter, hidden, seq, a, embed, lm_head, 4.0, torch.zeros_like(sure), 1.0)
    assert float(zero) == float(hard)
    assert float(same) == pytest.approx(float(hard), rel=1e-5)
    assert float(flat) > float(hard)


def test_refresh_replaces_the_oldest_generation_batch_while_training(target_run, tmp_path):
    args = train_drafter.parse_args(COMMON + [
        "--target", str(target_run.out), "--out", str(tmp_path / "d"), "--max-gen-batches", "2", "--gen-batch", "4",
        "--gen-len", "32", "--batch", "4", "--anchors", "4", "--valid-batches", "1", "--eval-every", "1000",
        "--refresh-every", "5"])
    result = train_drafter.run(args)
    assert result.steps == 20 and result.sequences == 4 * (2 + 4)


def test_kd_is_refused_outside_zero_to_one(target_run, tmp_path):
    args = train_drafter.parse_args(COMMON + ["--target", str(target_run.out), "--out", str(tmp_path / "d"),
                                              "--kd", "1.5"])
    with pytest.raises(SystemExit, match="--kd 1.5"):
        train_drafter.run(args)


def test_drafter_layers_option_keeps_the_budget():
    p = presets.get("stdlib-256")
    target = p.target(p.vocab_size)
    assert train_drafter.checked_drafter_config(p, target, 1, None) == p.drafter(target, 1)
    assert train_drafter.checked_drafter_config(p, target, 1, 6).num_layers == 6
    with pytest.raises(SystemExit, match="over 25 MB"):
        train_drafter.checked_drafter_config(p, target, 1, 7)


def _decoder_steps(target_dir, drafter_dir, prompt_ids: list[int]
                   ) -> tuple[torch.Tensor, list[int], list[list[int]], list[int]]:
    """Run greedy DFlash; return the sequence and, for each full-block step, its anchor position,
    the drafter's proposals and how many tokens it committed."""
    weights, dweights = load_checkpoint(target_dir), load_draft_checkpoint(drafter_dir)
    block = dweights.cfg.block_size
    cap = len(prompt_ids) + NEW + block
    decoder = DFlashDecoder(ReferenceModel(weights, capacity=cap),
                            DraftModel(dweights.cfg, dweights, weights, capacity=cap), SamplingParams(max_tokens=NEW))
    out = [decoder.start(prompt_ids)]
    anchors, proposals, commits = [], [], []
    while not decoder.finished:
        step = decoder.step()
        if len(step.proposals) == block - 1:     # the decoder shrinks the last block to what is left
            anchors.append(step.position)
            proposals.append(step.proposals)
            commits.append(len(step.committed))
        out += step.committed
    return torch.tensor([prompt_ids + out]), anchors, proposals, commits


def _drafter_predictions(target_dir, drafter_dir, seq: torch.Tensor, anchors: list[int]
                         ) -> tuple[list[list[int]], list[int], float]:
    """The trainable drafter at each anchor: argmax of slots 1..B-1, 1 + leading correct slots,
    and draft_loss's mean of the latter."""
    weights, dweights = load_checkpoint(target_dir), load_draft_checkpoint(drafter_dir)
    target, drafter = load_target(weights), load_drafter(dweights)
    embed, lm_head = weights.dense("model.embed_tokens.weight").float(), weights.lm_head().float()
    a = torch.tensor([anchors])
    with torch.no_grad():
        hidden = target(seq, return_hidden=dweights.cfg.target_layer_ids, logits="none").hidden
        states = drafter(hidden, a, embed[seq[0, a[0]]][None])
        pred = torch.nn.functional.linear(states[0, :, 1:], lm_head).argmax(-1)
        _, stats = draft_loss(drafter, hidden, seq, a, embed, lm_head, 4.0)
    labels = seq[0, a[0][:, None] + torch.arange(1, dweights.cfg.block_size)]
    return pred.tolist(), ((pred == labels).int().cumprod(-1).sum(-1) + 1).tolist(), stats.committed


def _perturbed(module: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """A copy with Gaussian noise of ``scale`` times each tensor's RMS added (varied outputs)."""
    out = copy.deepcopy(module)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * float(p.pow(2).mean().sqrt()))
    return out


@pytest.mark.parametrize("pair", ["trained", "perturbed"])
def test_drafter_objective_is_the_decoders(pair, target_run, drafter_run, prompt_ids, tmp_path):
    """At every full-block step of greedy DFlash with the exported pair, the trainable drafter
    (fed the trainable target's hidden states of the committed tokens) proposes the same tokens
    as ``DraftModel``, and predicts the number of tokens the step commits. The 20-step toy pair
    repeats one token (every block accepted), so a perturbed copy (varied text, proposals
    rejected) is checked too."""
    target_dir, drafter_dir = target_run.out, drafter_run.out
    if pair == "perturbed":
        target_dir, drafter_dir = tmp_path / "target", tmp_path / "drafter"
        save_target(_perturbed(target_run.model, 0.5, seed=1), target_dir,
                    tokenizer.load_tokenizer(target_run.out))
        save_drafter(_perturbed(drafter_run.drafter, 0.3, seed=2), drafter_dir)
    seq, anchors, proposals, commits = _decoder_steps(target_dir, drafter_dir, prompt_ids)
    assert len(anchors) >= 2
    predicted, predicted_commits, mean = _drafter_predictions(target_dir, drafter_dir, seq, anchors)
    assert predicted == proposals
    assert predicted_commits == commits
    assert mean == pytest.approx(sum(commits) / len(commits))
    every = _commits_at_every_anchor(target_dir, drafter_dir, seq, len(prompt_ids))
    assert [every[0, a - len(prompt_ids)] for a in anchors] == commits
    assert decoder_walk(every[:, :anchors[-1] - len(prompt_ids) + 1]) == (sum(commits), len(commits))


def _commits_at_every_anchor(target_dir, drafter_dir, seq: torch.Tensor, start: int) -> torch.Tensor:
    weights, dweights = load_checkpoint(target_dir), load_draft_checkpoint(drafter_dir)
    target, drafter = load_target(weights), load_drafter(dweights)
    embed, lm_head = weights.dense("model.embed_tokens.weight").float(), weights.lm_head().float()
    with torch.no_grad():
        hidden = target(seq, return_hidden=dweights.cfg.target_layer_ids, logits="none").hidden
    return leading_commits(drafter, hidden, seq, start, embed, lm_head, chunk=5)


# ======================================================================= pieces
def test_splits_and_skips():
    assert data.split_of("json/decoder.py") == "heldout" and data.split_of("heapq.py") == "heldout"
    assert data.split_of("os.py") == data.split_of("os.py") != "heldout"
    assert data.skip_reason("test/test_os.py", "x = 1\n") == "directory"
    assert data.skip_reason("encodings/cp1252.py", "x = 1\n") == "directory"
    assert data.skip_reason("stringprep.py", "# This file is generated by mkstringprep.py. DO NOT EDIT.\n") \
        == "generated"
    assert data.skip_reason("abc.py", "def f():\n    pass\n") is None


def test_copy_distance_finds_the_latest_earlier_occurrence_of_the_block():
    seq = [1, 2, 3, 9, 1, 2, 3, 9, 1, 2, 3, 7]
    assert eval_acceptance.copy_distance(seq, 4, 3) == 4        # [1, 2, 3] at 0
    assert eval_acceptance.copy_distance(seq, 8, 3) == 4        # the latest: at 4, not at 0
    assert eval_acceptance.copy_distance(seq, 8, 4) is None     # [1, 2, 3, 7] is new
    assert eval_acceptance.copy_distance(seq, 10, 3) is None    # the sequence ends inside the block


def test_acceptance_books_each_step_by_whether_its_block_repeats_the_context():
    """Steps after the prefill's token; a step's block starts at its anchor (the last token
    committed before it)."""
    acc = eval_acceptance.Acceptance(2, [0, 0])
    prompt = [5, 6, 5]
    acc.add_steps(prompt, [[6], [5, 6], [8]])   # anchors at 3 ([6, 5] seen at 1) and 5 ([6, 8]: new)
    assert acc.by_copy == {"repeats within 32": [1, 2], "new text": [1, 1]}
    assert any("repeats within 32" in line and "2.00 committed" in line for line in acc.lines())


def test_function_prompts():
    src = ('class A:\n    def f(self, x):\n        """Doc."""\n        y = x + 1\n\n        z = y * 2\n'
           '        w = z - 1\n        v = w\n        return v\n')
    [p] = prompts.function_prompts([data.SourceFile("m.py", "m", src)], body_lines=2, min_rest_lines=2)
    assert p.qualname == "A.f"
    assert p.prompt == 'def f(self, x):\n    """Doc."""\n    y = x + 1\n\n    z = y * 2'
    assert p.reference == "    w = z - 1\n    v = w\n    return v\n"


def test_a_prompt_ends_on_code_so_the_target_picks_the_newline_and_indent_token():
    # The BPE merges a newline with the next line's indentation; a prompt ending in a lone
    # newline token would read as "the function is over" (examples/train/prompts.py).
    body = "def g(a):\n    if a:\n        return a\n    b = a + 1\n    return b\n"
    tok = tokenizer.train_tokenizer([body * 40], 300)
    p = prompts.function_prompts([data.SourceFile("m.py", "m", body * 2)], body_lines=1, min_rest_lines=2)[0]
    assert p.prompt == "def g(a):\n    if a:"
    prompt_ids = tok.encode(p.prompt).ids
    full_ids = tok.encode(p.prompt + "\n" + p.reference).ids
    assert full_ids[:len(prompt_ids)] == prompt_ids   # the prompt ends on a token boundary of the text
    assert "\n" not in tok.decode(prompt_ids[-1:])


def test_prompts_saved_with_a_final_newline_load_without_it(tmp_path):
    old = prompts.FunctionPrompt("m", "m.py", "f", 1, "def f():\n    x = 1\n", "    return x\n")
    prompts.save_prompts([old], tmp_path / "p.json")
    assert prompts.load_prompts(tmp_path / "p.json")[0].prompt == "def f():\n    x = 1"


def test_tokenizer_round_trip():
    texts = ["def f(x):\n\treturn x  # \u00e9t\u00e9\n" * 20, "class A:\n    pass\n" * 20]
    tok = tokenizer.train_tokenizer(texts, 300)
    assert (tokenizer.eot_id(tok), tokenizer.mask_id(tok)) == (0, 1)
    for t in texts:
        assert tok.decode(tok.encode(t).ids) == t


@pytest.mark.parametrize("window,sink", [(None, False), (None, True), (5, True), (5, False)])
def test_attend_is_reference_attention(window, sink):
    g = torch.Generator().manual_seed(0)
    t = 12
    q, k, v = torch.randn(t, 4, 32, generator=g), torch.randn(2, t, 32, generator=g), torch.randn(2, t, 16, generator=g)
    s = torch.randn(4, generator=g) if sink else None
    pos = torch.arange(t)
    mask = attention_mask(pos, pos, window)
    ref = attention(q, k, v, mask, sink=s)
    ours = attend(q.transpose(0, 1)[None], k[None], v[None], mask=None if window is None else mask[None, None],
                  causal=window is None, sink=s)[0].transpose(0, 1)
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("sink", [False, True])
def test_attend_one_is_reference_attention(sink):
    """The generation step's attention: the last query of a window-5 layer, given its 6 keys."""
    g = torch.Generator().manual_seed(1)
    t = 12
    q, k, v = torch.randn(t, 4, 32, generator=g), torch.randn(2, t, 32, generator=g), torch.randn(2, t, 16, generator=g)
    s = torch.randn(4, generator=g) if sink else None
    pos = torch.arange(t)
    ref = attention(q, k, v, attention_mask(pos, pos, 5), sink=s)[-1]
    ours = attend_one(q[-1:].transpose(0, 1)[None], k[None, :, -6:], v[None, :, -6:], sink=s)[0, :, 0]
    assert torch.allclose(ours, ref, atol=1e-5)


def test_fake_mxfp4_forward_and_gradient():
    w = torch.randn(3, 8, 64, requires_grad=True)
    y = fake_mxfp4(w)
    assert torch.equal(y, mxfp4_roundtrip(w))
    y.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_state_round_trip(tmp_path):
    cfg = presets.toy_target(300)
    model = TargetLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 300, (2, 16))).logits.sum().backward()
    opt.step()
    save_state(tmp_path / "s.safetensors", model, opt, step=7, seconds=12.5)
    other = TargetLM(cfg)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    assert load_state(tmp_path / "s.safetensors", other, other_opt)[:2] == (7, 12.5)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    for pa, pb in zip(model.parameters(), other.parameters()):
        sa, sb = opt.state[pa], other_opt.state[pb]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_shipped_preset_fits_budget():
    p = presets.get("stdlib-256")
    target = p.target(p.vocab_size)
    drafter = p.drafter(target, 1)
    drafter.check_target(target)
    total = presets.stored_bytes(target) + presets.stored_bytes(drafter) + presets.TOKENIZER_ALLOWANCE
    assert total < presets.BUDGET_BYTES
