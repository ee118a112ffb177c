"""`tilewarp bench --dry-run` runs anywhere (no GPU): it prints the plan and the byte floor
of every preset at a nominal bandwidth that it labels as such, and writes the same as
JSON; bad requests are errors with a reason, not tracebacks."""

from __future__ import annotations

import json

import pytest
import torch

from tilewarp.pipeline.config import step_bytes
from tilewarp.pipeline.presets import PRESETS, preset
from tilewarp.runtime.baselines.torch_decoder import baseline_step_bytes
from tilewarp.runtime.bench_timing import NOMINAL_BANDWIDTH
from tilewarp.runtime.cli import main


def test_all_presets_floors_equal_step_bytes_at_the_nominal_bandwidth(tmp_path, capsys):
    path = tmp_path / "plan.json"
    assert main(["bench", "--preset", "all", "--dry-run", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3350 GB/s" in out and "datasheet" in out and "not measured" in out
    d = json.loads(path.read_text())
    assert d["mode"] == "dry-run" and d["bandwidth"]["bytes_per_s"] == NOMINAL_BANDWIDTH.bytes_per_s
    assert [e["preset"] for e in d["presets"]] == list(PRESETS)
    for entry in d["presets"]:
        cfg, plan = preset(entry["preset"]), entry["plan"]
        assert plan["capacity"] <= cfg.max_position
        assert f"{entry['preset']}: context {plan['context']}" in out
        seen = {(r["row"], r["tokens"]) for r in entry["rows"]}
        assert seen == {(row, t) for row in ("eager", "graph", "compile", "megakernel") for t in (1, 8)}
        for r in entry["rows"]:
            floor = step_bytes(cfg, r["tokens"], plan["context"]).total
            assert r["floor_bytes"] == pytest.approx(floor)
            assert r["floor_ms"] == pytest.approx(floor / 3.35e12 * 1e3)
            if r["row"] != "megakernel":
                assert r["impl_bytes"] == pytest.approx(sum(baseline_step_bytes(cfg, r["tokens"],
                                                                                plan["capacity"]).values()))
    assert next(e for e in d["presets"] if e["preset"] == "tiny")["plan"]["context"] < 4096   # fitted to 512


def test_the_plan_follows_rows_tokens_context_and_chain(tmp_path, capsys):
    path = tmp_path / "plan.json"
    argv = ["bench", "--preset", "mimo-mini", "--dry-run", "--rows", "graph,megakernel", "--tokens", "1",
            "--context", "2048", "--chain", "32", "--steps", "50", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "decode program, 32 steps chained per launch" in out and "PyTorch eager" not in out
    (entry,) = json.loads(path.read_text())["presets"]
    assert entry["plan"]["context"] == 2048 and entry["plan"]["capacity"] == 2048 + 32
    assert entry["plan"]["steps"] == 50
    assert [(r["row"], r["tokens"]) for r in entry["rows"]] == [("graph", 1), ("megakernel", 1)]
    assert entry["rows"][0]["floor_bytes"] == pytest.approx(step_bytes(preset("mimo-mini"), 1, 2048).total)


@pytest.mark.parametrize("argv, message", [
    (["--preset", "tiny", "--dry-run", "--rows", "eager,fast"], "--rows"),
    (["--preset", "tiny", "--dry-run", "--tokens", "1,17"], "--tokens"),
    (["--preset", "tiny", "--dry-run", "--tokens", "one"], "--tokens"),
    (["--preset", "tiny", "--dry-run", "--context", "600"], "--context 600"),
    (["--preset", "tiny", "--dry-run", "--chain", "0"], "--chain"),
    (["--preset", "all"], "--preset all"),
    (["--preset", "tiny", "--dry-run", "--png", "x.png"], "--png"),
])
def test_bad_requests_are_errors_with_a_reason(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_a_measured_run_without_a_gpu_says_to_use_dry_run(capsys):
    assert main(["bench", "--preset", "tiny", "--context", "256"]) == 2
    assert "--dry-run" in capsys.readouterr().err
