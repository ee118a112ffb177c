"""The `tilewarp` CLI (inspect, make-checkpoint, generate) and the `Engine` it drives, on the
tiny preset: the numbers it prints, the checkpoints it writes and reads back, the tokens it
streams (CPU executor == PyTorch reference), text through a tokenizer.json, and bad input
reported as `tilewarp: error: ...` with exit code 2, naming the argument at fault."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from tilewarp.pipeline.errors import InputError
from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.runtime.cli import main
from tilewarp.runtime.engine import Engine

torch.set_num_threads(1)

CAPACITY = 96   # small KV cache: faster program builds, room for every request below
TINY_GEN = ["generate", "--preset", "tiny", "--capacity", str(CAPACITY)]
TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a resident kernel runs every operation of a decode step",
    "experts are stored in mxfp4 and picked by a sigmoid router",
    "hello world, hello tilewarp; the world says hello back",
]


def _stats_line(err: str) -> re.Match:
    m = re.search(r"prompt (\d+) tokens in [\d.]+ ms; generated (\d+) tokens in [\d.]+ s = ([\d.]+|inf) tokens/s",
                  err)
    assert m, err
    return m


def _tokens(out: str) -> list[int]:
    return [int(x) for x in out.split()]


# ------------------------------------------------------------------ inspect
def test_inspect_pro_preset_prints_published_parameter_counts(capsys):
    assert main(["inspect", "--preset", "mimo-v2.5-pro"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"parameters: ([\d.]+)T total, ([\d.]+)G active per token", out)
    assert m, out
    assert float(m.group(1)) == pytest.approx(1.02, abs=0.005)
    assert float(m.group(2)) == pytest.approx(41.9, abs=0.05)
    assert "model mimo-v2.5-pro: hidden 6144, 70 layers" in out
    assert "T=1:" in out and "T=8:" in out and "KV cache per token" in out


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["make-checkpoint", "--preset", "tiny", "--seed", "3", str(out)]) == 0
    return out


def test_make_checkpoint_writes_the_published_layout(tiny_ckpt: Path):
    names = sorted(p.name for p in tiny_ckpt.iterdir())
    assert names == ["config.json", "model-00001-of-00001.safetensors", "model.safetensors.index.json"]


def test_inspect_checkpoint_matches_the_preset(tiny_ckpt: Path, capsys):
    assert main(["inspect", "--preset", "tiny"]) == 0
    from_preset = capsys.readouterr().out
    assert main(["inspect", str(tiny_ckpt)]) == 0
    from_ckpt = capsys.readouterr().out
    assert from_ckpt == from_preset
    assert "model tiny: hidden 128, 4 layers" in from_ckpt
    assert "all tensor values checked" not in from_ckpt
    assert re.search(r"^\s+experts\s+mxfp4\s+\d+", from_ckpt, re.M), from_ckpt


def test_inspect_check_reads_every_tensor(tiny_ckpt: Path, capsys):
    assert main(["inspect", "--check", str(tiny_ckpt)]) == 0
    assert capsys.readouterr().out.startswith("all tensor values checked\n")


def test_inspect_check_reports_a_corrupt_checkpoint(tiny_ckpt: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    (bad / "model-00001-of-00001.safetensors").write_bytes(b"not safetensors")
    assert main(["inspect", "--check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tilewarp: error: ") and "model-00001-of-00001.safetensors" in err


@pytest.mark.parametrize("name", ["mimo-v2-flash", "mimo-v2.5-pro"])
def test_make_checkpoint_refuses_planning_only_presets(name: str, tmp_path: Path, capsys):
    out = tmp_path / "big"
    assert main(["make-checkpoint", "--preset", name, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tilewarp: error: ") and name in err and "planning only" in err
    assert not out.exists()


def test_make_checkpoint_will_not_overwrite_without_the_flag(tiny_ckpt: Path, capsys):
    before = (tiny_ckpt / "model-00001-of-00001.safetensors").read_bytes()
    assert main(["make-checkpoint", "--preset", "tiny", "--seed", "4", str(tiny_ckpt)]) == 2
    assert capsys.readouterr().err.startswith("tilewarp: error: ")
    assert (tiny_ckpt / "model-00001-of-00001.safetensors").read_bytes() == before


# ----------------------------------------------------------------- generate
def test_generate_cpu_and_reference_backends_print_the_same_greedy_tokens(capsys):
    args = TINY_GEN + ["--prompt", "1 2 3 4 5", "--max-tokens", "20"]
    runs = {}
    for backend in ("cpu", "reference"):
        assert main(args + ["--backend", backend]) == 0
        out, err = capsys.readouterr()
        assert out.endswith("\n")
        runs[backend] = _tokens(out)
        stats = _stats_line(err)
        assert (stats.group(1), stats.group(2)) == ("5", "20")
        assert f"[tiny / {backend}]" in err
    assert len(runs["cpu"]) == 20
    assert all(0 <= t < 512 for t in runs["cpu"])
    assert runs["cpu"] == runs["reference"]


def test_generate_from_a_checkpoint_equals_generate_from_its_preset(tiny_ckpt: Path, capsys):
    common = ["--capacity", str(CAPACITY), "--prompt", "7 8 9", "--max-tokens", "12"]
    assert main(["generate", str(tiny_ckpt), *common]) == 0
    from_ckpt = _tokens(capsys.readouterr().out)
    assert main(["generate", "--preset", "tiny", "--seed", "3", *common]) == 0
    assert _tokens(capsys.readouterr().out) == from_ckpt
    assert main(["generate", "--preset", "tiny", "--seed", "4", *common]) == 0
    assert _tokens(capsys.readouterr().out) != from_ckpt


def test_generate_stops_at_a_stop_token(capsys):
    assert main(TINY_GEN + ["--prompt", "3 1 4 1 5", "--max-tokens", "24"]) == 0
    full = _tokens(capsys.readouterr().out)
    stop = full[9]
    assert main(TINY_GEN + ["--prompt", "3 1 4 1 5", "--max-tokens", "24", "--stop", str(stop)]) == 0
    assert _tokens(capsys.readouterr().out) == full[:full.index(stop) + 1]


def test_generate_seeded_sampling_is_reproducible(capsys):
    args = TINY_GEN + ["--max-tokens", "16", "--temperature", "0.8", "--top-p", "0.9"]
    outs = []
    for seed in ("1", "1", "2"):
        assert main(args + ["--sample-seed", seed]) == 0
        outs.append(_tokens(capsys.readouterr().out))
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


@pytest.mark.parametrize("extra, flag", [
    (["--prompt", "1 2 512"], "--prompt"),                          # id == vocab_size
    (["--prompt", "1 -2 3"], "--prompt"),
    (["--prompt", "hello world"], "--prompt"),                     # text, but no tokenizer.json
    (["--prompt", ""], "--prompt"),
    (["--temperature", "-0.5"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--top-p", "0"], "--top-p"),
    (["--top-k", "513"], "--top-k"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--max-tokens", str(CAPACITY - 3)], "--max-tokens"),         # 4 prompt tokens + 93 > 96
    (["--sample-seed", "-1", "--temperature", "1"], "--sample-seed"),
    (["--stop", "512"], "--stop"),
    (["--capacity", "0"], "--capacity"),
    (["--capacity", "513"], "--capacity"),                         # past tiny's context (512)
])
def test_generate_bad_input_exits_2_naming_the_argument(extra: list[str], flag: str, capsys):
    assert main(TINY_GEN + ["--max-tokens", "4"] + extra) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("tilewarp: error: "), err
    assert flag in err, err
    assert "Traceback" not in err


def test_generate_refuses_planning_only_presets(capsys):
    assert main(["generate", "--preset", "mimo-v2.5-pro", "--max-tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tilewarp: error: ") and "planning only" in err


@pytest.fixture(scope="module")
def text_ckpt(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny checkpoint plus a byte-level BPE tokenizer.json trained on a few lines."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    assert 256 < tok.get_vocab_size() <= 512      # every id the tokenizer makes is a model id
    path = tmp_path_factory.mktemp("text") / "tiny-text"
    shutil.copytree(tiny_ckpt, path)
    tok.save(str(path / "tokenizer.json"))
    return path, tok


def test_generate_with_a_tokenizer_encodes_text_and_prints_decoded_text(text_ckpt, capsys):
    path, tok = text_ckpt
    prompt = "hello world, the quick fox"
    ids = tok.encode(prompt).ids
    assert len(ids) < len(prompt.split()) + 3 and tok.decode(ids) == prompt   # merged words, exact round trip
    assert main(["generate", str(path), "--capacity", str(CAPACITY), "--prompt", prompt, "--max-tokens", "24"]) == 0
    out, err = capsys.readouterr()
    assert int(_stats_line(err).group(1)) == len(ids)
    gen = Engine.from_checkpoint(path, capacity=CAPACITY).generate(ids, SamplingParams(max_tokens=24)).tokens
    assert out == tok.decode(ids + gen) + "\n"
    assert out.startswith(prompt) and len(out) > len(prompt) + 1


def test_generate_with_a_tokenizer_still_takes_ids(text_ckpt, capsys):
    path, tok = text_ckpt
    ids = tok.encode("hello world").ids
    prompt = " ".join(map(str, ids))
    assert main(["generate", str(path), "--capacity", str(CAPACITY), "--ids", "--prompt", prompt,
                 "--max-tokens", "8"]) == 0
    out, err = capsys.readouterr()
    assert int(_stats_line(err).group(1)) == len(ids)
    assert out.startswith("hello world")
    assert main(["generate", str(path), "--ids", "--prompt", "hello", "--max-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tilewarp: error: --prompt 'hello': with --ids") and "token ids" in err


def test_generate_reports_a_corrupt_tokenizer(tiny_ckpt: Path, tmp_path: Path, capsys):
    path = tmp_path / "badtok"
    shutil.copytree(tiny_ckpt, path)
    (path / "tokenizer.json").write_text("{not json")
    assert main(["generate", str(path), "--max-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tilewarp: error: ") and "tokenizer.json" in err


# ------------------------------------------------------------------- Engine
@pytest.fixture(scope="module")
def engines() -> dict[str, Engine]:
    return {b: Engine.from_preset("tiny", backend=b, capacity=CAPACITY) for b in ("cpu", "reference")}


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("max_tokens", [1, 5, 17, 33])     # around the 16-token greedy chunks
def test_stream_yields_exactly_max_tokens(engines: dict[str, Engine], backend: str, max_tokens: int):
    engine = engines[backend]
    toks = list(engine.stream([5, 6, 7], SamplingParams(max_tokens=max_tokens)))
    assert len(toks) == max_tokens
    assert engine.last is not None and engine.last.tokens == toks and engine.last.prompt_tokens == 3


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_stream_stops_at_a_stop_token_and_includes_it(engines: dict[str, Engine], backend: str):
    engine = engines[backend]
    full = list(engine.stream([9, 8, 7], SamplingParams(max_tokens=40)))
    # A token first seen past the first 16-token chunk, so the CPU backend stops mid-chunk.
    i = next(i for i in range(17, 40) if full[i] not in full[:i])
    toks = list(engine.stream([9, 8, 7], SamplingParams(max_tokens=40, stop_tokens=(full[i], 511))))
    assert toks == full[:i + 1]


def test_greedy_cpu_backend_equals_reference_over_40_tokens(engines: dict[str, Engine]):
    prompt = [11, 22, 33, 44, 55, 66]
    params = SamplingParams(max_tokens=40)
    cpu = engines["cpu"].generate(prompt, params).tokens
    ref = engines["reference"].generate(prompt, params).tokens
    assert len(cpu) == 40
    assert len(set(cpu)) > 10          # not a constant or a short loop
    assert cpu == ref


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_seeded_sampling_is_reproducible(engines: dict[str, Engine], backend: str):
    engine = engines[backend]
    run = lambda seed: engine.generate([1, 2, 3], SamplingParams(temperature=1.0, top_k=50, seed=seed,  # noqa: E731
                                                                 max_tokens=20)).tokens
    a = run(123)
    assert run(123) == a
    assert run(124) != a
    assert a != engine.generate([1, 2, 3], SamplingParams(max_tokens=20)).tokens   # not greedy


def test_engine_refuses_bad_requests(engines: dict[str, Engine]):
    engine = engines["reference"]
    with pytest.raises(InputError, match="out of range"):
        list(engine.stream([1, 512], SamplingParams(max_tokens=2)))
    with pytest.raises(InputError, match="empty"):
        list(engine.stream([], SamplingParams(max_tokens=2)))
    with pytest.raises(InputError, match="capacity"):
        list(engine.stream([1, 2], SamplingParams(max_tokens=CAPACITY - 1)))
    with pytest.raises(InputError, match="capacity=0"):
        Engine.from_preset("tiny", capacity=0)
    with pytest.raises(InputError, match="planning only"):
        Engine.from_preset("mimo-v2-flash")
