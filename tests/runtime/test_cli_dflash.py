"""DFlash through the `Engine` and `tilewarp generate --drafter` on the tiny preset + `tiny_drafter`:

* greedy DFlash output == plain greedy output, for the reference (`DFlashDecoder`) and cpu
  (chained dflash program) backends, with a random drafter (about one token per step) and
  with proposals planted from the greedy continuation, so steps commit up to B tokens and
  max_tokens and stop tokens land inside a step;
* `committed_per_step` / `mean_committed`, the stderr line the CLI prints, the `make demo`
  command line, and the refusals (megakernel without a GPU, top-k on cpu, a drafter of another shape).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from tilewarp.pipeline import cpu_exec
from tilewarp.pipeline.dflash.checkpoint import make_draft_checkpoint
from tilewarp.pipeline.dflash.config import tiny_drafter
from tilewarp.pipeline.dflash.draft_model import DraftOutput
from tilewarp.pipeline.dflash.weights import random_draft_weights
from tilewarp.pipeline.errors import ConfigError, DeviceError, InputError
from tilewarp.pipeline.graph.ops import STATE_POS, Op
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.runtime.cli import main
from tilewarp.runtime.engine import Engine

torch.set_num_threads(1)

CFG = preset("tiny")
B = tiny_drafter(CFG).block_size
CAPACITY = 128
# 40 tokens: the prompt alone wraps the target's sliding-window ring and the drafter's window.
PROMPT = torch.randint(0, CFG.vocab_size, (40,), generator=torch.Generator().manual_seed(0)).tolist()
N = 64
BACKENDS = ("reference", "cpu")
COMMITTED = re.compile(r"committed tokens per step: mean ([\d.]+) \(histogram tokens:steps ([\d: ]+); (\d+) steps\)")


@pytest.fixture(scope="module")
def greedy() -> list[int]:
    """Plain greedy decoding, no drafter: the yardstick."""
    return Engine.from_preset("tiny", capacity=CAPACITY).generate(PROMPT, SamplingParams(max_tokens=N)).tokens


@pytest.fixture(scope="module")
def engines() -> dict[str, Engine]:
    """Copy drafting off: the tests plant the drafter's proposals, which copying would overrule."""
    return {b: Engine.from_preset("tiny", drafter=True, backend=b, capacity=CAPACITY, copy_draft=None)
            for b in BACKENDS}


def plant(monkeypatch: pytest.MonkeyPatch, engine: Engine, sequence: list[int], spoil: tuple[int, ...] = ()) -> None:
    """Make the drafter propose `sequence[position + i]` for slot i (a wrong token at the
    `spoil` slots), so a step commits the accepted slots plus the correction."""
    def want(position: int) -> list[int]:
        return [(sequence[position + i] + (i in spoil)) % CFG.vocab_size for i in range(1, B)]

    if engine.backend == "reference":
        model = engine.draft_model
        real = model.propose

        def propose(anchor: int, position: int) -> DraftOutput:
            out = real(anchor, position)
            logits = torch.zeros_like(out.logits)
            logits[torch.arange(1, B), want(position)] = 1.0
            return DraftOutput(logits=logits, hidden=out.hidden, anchor=anchor, position=position)

        monkeypatch.setattr(model, "propose", propose)
        return
    p = engine._dflash.exec.p
    tokens, state = p.buffer("tokens").offset, p.buffer("state").offset
    real_argmax = cpu_exec.IMPLS[Op.ARGMAX_ROWS]

    def argmax(ctx, a: dict) -> None:
        real_argmax(ctx, a)
        if a["out_off"] == tokens + 1:       # the draft pass's proposals, d_1..d_{B-1}
            ctx.arena_i[tokens + 1:tokens + B] = torch.tensor(want(int(ctx.arena_i[state + STATE_POS])),
                                                              dtype=torch.int32)

    monkeypatch.setitem(cpu_exec.IMPLS, Op.ARGMAX_ROWS, argmax)


# ------------------------------------------------------------------- Engine
@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_dflash_equals_plain_greedy_over_64_tokens(engines, greedy, backend):
    r = engines[backend].generate(PROMPT, SamplingParams(max_tokens=N))
    assert len(set(greedy)) > 20, "not a constant or a short loop"
    assert r.tokens == greedy
    assert sum(r.committed_per_step) == N - 1          # every token after the prefill's came from a step
    assert r.mean_committed == pytest.approx((N - 1) / len(r.committed_per_step))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spoil, max_tokens, steps", [
    ((), N, [B] * 7 + [B - 1]),           # whole blocks, the last one cut by max_tokens
    ((3,), N, [3] * 21),                  # d_1, d_2 accepted + the correction at slot 3
    ((3,), 60, [3] * 19 + [2]),           # max_tokens inside a step
], ids=["perfect", "slot3", "slot3-cut"])
def test_planted_proposals_commit_whole_steps_and_stay_exact(engines, greedy, monkeypatch, backend, spoil,
                                                            max_tokens, steps):
    engine = engines[backend]
    plant(monkeypatch, engine, PROMPT + greedy + [0] * B, spoil)
    streamed = list(engine.stream(PROMPT, SamplingParams(max_tokens=max_tokens)))
    assert streamed == greedy[:max_tokens]
    assert engine.last is not None and engine.last.tokens == streamed
    assert engine.last.committed_per_step == steps
    assert engine.last.mean_committed == pytest.approx(sum(steps) / len(steps))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stop_token_inside_a_step_ends_the_request_after_it(engines, greedy, monkeypatch, backend):
    engine = engines[backend]
    plant(monkeypatch, engine, PROMPT + greedy + [0] * B)
    # A token first seen at an index that is not the last of its 8-token step (steps start at 1).
    i = next(i for i in range(20, N) if greedy[i] not in greedy[:i] and i % B != 0)
    r = engine.generate(PROMPT, SamplingParams(max_tokens=N, stop_tokens=(greedy[i],)))
    assert r.tokens == greedy[:i + 1]
    assert r.committed_per_step == [B] * ((i - 1) // B) + [(i - 1) % B + 1]


def test_without_a_drafter_there_are_no_steps(greedy):
    r = Engine.from_preset("tiny", capacity=CAPACITY).generate(PROMPT, SamplingParams(max_tokens=4))
    assert r.committed_per_step == [] and r.mean_committed is None


def test_the_cpu_dflash_program_needs_room_for_a_whole_last_block():
    """The chained program writes B positions per step: B - 2 past prompt + max_tokens."""
    n = 20
    exact = Engine.from_preset("tiny", drafter=True, backend="cpu", capacity=len(PROMPT) + n + B - 2)
    assert len(exact.generate(PROMPT, SamplingParams(max_tokens=n)).tokens) == n
    short = Engine.from_preset("tiny", drafter=True, backend="cpu", capacity=len(PROMPT) + n + B - 3)
    with pytest.raises(InputError, match=f"{B - 2} positions for the last DFlash block"):
        short.generate(PROMPT, SamplingParams(max_tokens=n))
    # One token is the prefill's: no step runs, so no block needs room.
    one = Engine.from_preset("tiny", drafter=True, backend="cpu", capacity=len(PROMPT) + 1)
    r = one.generate(PROMPT, SamplingParams(max_tokens=1))
    assert len(r.tokens) == 1 and r.committed_per_step == [] and r.mean_committed is None


def test_sampled_cpu_dflash_is_seeded_and_refuses_top_k(engines):
    engine = engines["cpu"]
    run = lambda seed: engine.generate(PROMPT, SamplingParams(temperature=1.0, seed=seed, max_tokens=24)).tokens  # noqa: E731
    a = run(5)
    assert run(5) == a and run(6) != a
    with pytest.raises(InputError, match="top_k"):
        engine.generate(PROMPT, SamplingParams(temperature=1.0, top_k=20, max_tokens=4))


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the megakernel runs the drafter "
                            "(tests/gpu/test_dflash_gpu.py)")


@NO_GPU
def test_megakernel_without_a_gpu_refuses_before_building_anything():
    with pytest.raises(DeviceError, match="needs a CUDA GPU"):
        Engine.from_preset("tiny", drafter=True, backend="megakernel", capacity=CAPACITY)


def test_a_drafter_of_another_target_is_refused():
    wrong = tiny_drafter(CFG).replace(target_layer_ids=(0, 2, 9), num_target_layers=None)
    with pytest.raises(ConfigError, match="target_layer_ids"):
        Engine.from_preset("tiny", drafter=random_draft_weights(wrong), capacity=CAPACITY)


# ---------------------------------------------------------------------- CLI
def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_with_a_random_drafter_prints_the_same_tokens_and_committed_per_step(capsys, backend):
    args = ["generate", "--preset", "tiny", "--capacity", str(CAPACITY), "--backend", backend,
            "--prompt", "1 2 3 4 5", "--max-tokens", "20"]
    rc, plain, err = _run(capsys, args)
    assert rc == 0 and "committed tokens per step" not in err
    rc, alone, _ = _run(capsys, args + ["--drafter", "random", "--no-copy-draft"])
    assert rc == 0 and alone == plain
    rc, dflash, err = _run(capsys, args + ["--drafter", "random"])   # copy drafting on: the default
    assert rc == 0 and dflash == plain
    assert "tokens/s" in err
    m = COMMITTED.search(err)
    assert m, err
    hist = dict(map(int, kv.split(":")) for kv in m.group(2).split())
    assert sum(n * c for n, c in hist.items()) == 19 and sum(hist.values()) == int(m.group(3))
    assert float(m.group(1)) == pytest.approx(19 / int(m.group(3)), abs=0.005)


def test_generate_reads_a_drafter_checkpoint(capsys, tmp_path: Path):
    assert main(["make-checkpoint", "--preset", "tiny", str(tmp_path / "target")]) == 0
    make_draft_checkpoint(tiny_drafter(CFG), tmp_path / "drafter", seed=0)
    capsys.readouterr()
    args = ["generate", str(tmp_path / "target"), "--capacity", str(CAPACITY), "--backend", "cpu",
            "--prompt", "1 2 3 4 5", "--max-tokens", "12"]
    rc, plain, _ = _run(capsys, args)
    rc2, dflash, err = _run(capsys, args + ["--drafter", str(tmp_path / "drafter")])
    assert rc == rc2 == 0 and dflash == plain
    assert COMMITTED.search(err), err


@pytest.mark.parametrize("extra, message", [
    pytest.param(["--backend", "megakernel", "--drafter", "random"], "needs a CUDA GPU", marks=NO_GPU),
    (["--drafter", "/nonexistent/drafter"], "not a drafter checkpoint directory"),
    (["--drafter", "random", "--max-tokens", str(CAPACITY - 5)], "last DFlash block"),
    (["--copy-draft"], "--copy-draft: only with --drafter"),
])
def test_generate_refuses_bad_drafter_requests(capsys, extra, message):
    rc, _, err = _run(capsys, ["generate", "--preset", "tiny", "--capacity", str(CAPACITY),
                               "--backend", "cpu", "--prompt", "1 2 3 4 5"] + extra)
    assert rc == 2 and err.startswith("tilewarp: error: ") and message in err, err


def test_random_drafter_needs_a_preset(capsys, tmp_path: Path):
    rc, _, err = _run(capsys, ["generate", str(tmp_path), "--drafter", "random"])
    assert rc == 2 and "--drafter random: only with --preset" in err


# --------------------------------------------------------------------- demo
def _demo_module():
    path = Path(__file__).resolve().parents[2] / "tools" / "demo.py"
    spec = importlib.util.spec_from_file_location("tilewarp_demo", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_runs_the_trained_pair_with_its_first_heldout_prompt_else_tiny(tmp_path: Path):
    demo = _demo_module()
    pair = tmp_path / "stdlib-256"
    assert demo.demo_argv(pair)[:3] == ["generate", "--preset", "tiny"]
    assert demo.demo_argv(pair)[-2:] == ["--drafter", "random"]
    (pair / "target").mkdir(parents=True)
    assert demo.demo_argv(pair)[1] == "--preset", "a target without a drafter is not the pair"
    (pair / "drafter").mkdir()
    argv = demo.demo_argv(pair)
    assert argv[1:4] == [str(pair / "target"), "--drafter", str(pair / "drafter")]
    assert argv[argv.index("--prompt") + 1] == demo.FALLBACK_PROMPT
    prompt = 'def dumps(obj, *, skipkeys=False):\n    """Serialize ``obj`` to a JSON formatted ``str``.'
    (pair / "target" / "heldout_prompts.json").write_text(json.dumps([{"prompt": prompt}, {"prompt": "x"}]))
    argv = demo.demo_argv(pair)
    assert argv[argv.index("--prompt") + 1] == prompt
    assert argv[argv.index("--backend") + 1] == "cpu" and argv[argv.index("--max-tokens") + 1] == "128"
