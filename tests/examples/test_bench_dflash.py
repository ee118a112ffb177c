"""examples/bench_dflash.py, the GPU DFlash-vs-plain benchmark, runs end to end on the CPU
executor with the committed pair: every mode (plain, DFlash, DFlash with copy drafting) decodes the same held-out prompts, the
script reports the DFlash steps' mean commit and exits 0 only when DFlash wrote exactly
plain greedy's tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples import bench_dflash

PAIR = Path(__file__).resolve().parents[2] / "models" / "stdlib-256"

pytestmark = pytest.mark.skipif(not (PAIR / "drafter").is_dir(), reason="models/stdlib-256 is not in this checkout")


def test_the_dflash_benchmark_runs_on_the_cpu_and_checks_dflash_equals_plain_greedy(capsys):
    rc = bench_dflash.main(["--target", str(PAIR / "target"), "--drafter", str(PAIR / "drafter"), "--backend", "cpu",
                            "--prompts", "1", "--max-tokens", "12", "--repeats", "1", "--copy-draft"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "DFlash tokens identical to plain greedy: True" in out
    for mode in ("dflash ", "dflash+copy "):
        line = next(line for line in out.splitlines() if line.startswith(mode))
        tokens_s, ms_step, committed = map(float, line.split()[1:4])
        assert tokens_s > 0 and ms_step > 0 and committed >= 1.0


def test_the_modes_are_timed_interleaved_each_repeat_in_a_rotated_order():
    from types import SimpleNamespace
    calls: list[str] = []

    class Fake:
        def __init__(self, name: str):
            self.name = name

        def generate(self, prompt, params):
            calls.append(self.name)
            return SimpleNamespace(tokens=[1, 2], committed_per_step=[2], decode_s=0.5)

    modes = {n: bench_dflash.Mode(Fake(n)) for n in ("plain", "dflash", "copy")}
    bench_dflash.measure(modes, [[7]], max_tokens=2, repeats=3)
    assert calls == ["plain", "dflash", "copy"] + ["plain", "dflash", "copy", "dflash", "copy", "plain",
                                                   "copy", "plain", "dflash"]
    assert all(m.rates == [4.0] * 3 and m.step_ms == [500.0] * 3 for m in modes.values())
