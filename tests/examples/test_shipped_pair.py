"""The committed stdlib-256 pair (models/stdlib-256, what `make demo` runs): it fits the
25 MB budget, loads through the public checkpoint loaders, and greedy DFlash with it
writes exactly what plain greedy decoding writes, committing more than one token a step
on a held-out prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tilewarp.pipeline.sampling import SamplingParams
from tilewarp.runtime.engine import Engine

PAIR = Path(__file__).resolve().parents[2] / "models" / "stdlib-256"

pytestmark = pytest.mark.skipif(not (PAIR / "drafter").is_dir(), reason="models/stdlib-256 is not in this checkout")


def test_the_pair_fits_the_25_mb_budget():
    files = [p for d in ("target", "drafter") for p in (PAIR / d).iterdir()]
    assert sum(p.stat().st_size for p in files) <= 25_000_000


def test_greedy_dflash_with_the_pair_equals_plain_greedy_on_a_heldout_prompt():
    prompt_text = json.loads((PAIR / "target" / "heldout_prompts.json").read_text())[0]
    prompt_text = prompt_text["prompt"] if isinstance(prompt_text, dict) else prompt_text
    plain = Engine.from_checkpoint(PAIR / "target")
    dflash = Engine.from_checkpoint(PAIR / "target", drafter_path=PAIR / "drafter", backend="reference")
    prompt = plain.encode(prompt_text)
    params = SamplingParams(max_tokens=48)
    want = plain.generate(prompt, params)
    got = dflash.generate(prompt, params)
    assert got.tokens == want.tokens
    assert dflash.last.mean_committed > 1.0
