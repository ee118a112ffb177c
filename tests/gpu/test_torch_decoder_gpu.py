"""The PyTorch baseline on a GPU: a CUDA-graph replay computes what the eager step computes,
the fp32 decoder still matches the reference on the device, torch.compile agrees, and
`tilewarp bench` runs end to end on tiny (a failing megakernel row is recorded, not fatal).

The numerical comparisons load fp32 weights: in bf16 a different kernel's rounding can
legitimately swap a near-tied expert of tiny's 8 (its routing margins are ~1e-3), which
says nothing about the mode. The bf16 capture itself runs in the end-to-end bench test."""

from __future__ import annotations

import json

import pytest
import torch

from tilewarp.pipeline.kv_cache import KVCache
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights
from tilewarp.pipeline.reference import ReferenceModel
from tilewarp.runtime.baselines.modes import make_stepper
from tilewarp.runtime.baselines.params import BaselineParams
from tilewarp.runtime.baselines.torch_decoder import TorchDecoder
from tilewarp.runtime.cli import main

pytestmark = pytest.mark.gpu

BLOCKS = torch.randint(0, 512, (4, 8), generator=torch.Generator().manual_seed(7))


def _run_blocks(dec: TorchDecoder, stepper) -> list[torch.Tensor]:
    out = []
    for b, block in enumerate(BLOCKS):
        dec.load(block, 8 * b)
        out.append(stepper().clone())
    return out


def _decoder(params, cfg, device) -> TorchDecoder:
    return TorchDecoder(params, KVCache(cfg, 128, device), tokens=8)


def test_cuda_graph_replay_equals_the_eager_step(gpu):
    w = random_weights(preset("tiny"), 3)
    params = BaselineParams.load(w, gpu, dtype=torch.float32)
    eager_dec = _decoder(params, w.cfg, gpu)
    eager = _run_blocks(eager_dec, eager_dec.step)
    graph_dec = _decoder(params, w.cfg, gpu)
    graphed = _run_blocks(graph_dec, make_stepper(graph_dec, "cuda_graph"))
    for b, (e, g) in enumerate(zip(eager, graphed)):
        assert torch.allclose(e, g, atol=1e-3), f"block {b}: max diff {(e - g).abs().max():.3g}"
    for a, b in zip(eager_dec.cache.k + eager_dec.cache.v, graph_dec.cache.k + graph_dec.cache.v):
        assert torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-2), "replays write the same K/V"


def test_fp32_decoder_matches_the_reference_on_the_gpu(gpu):
    w = random_weights(preset("tiny"), 1)
    ref = ReferenceModel(w, capacity=128, device=gpu)
    dec = _decoder(BaselineParams.load(w, gpu, dtype=torch.float32), w.cfg, gpu)
    for b, block in enumerate(BLOCKS):
        expect = ref.verify(block).logits
        got = dec.forward(block, 8 * b)
        assert (expect - got).abs().max() < 1e-2, f"block {b}"


@pytest.mark.slow
def test_compiled_step_agrees_with_eager(gpu):
    w = random_weights(preset("tiny"), 3)
    params = BaselineParams.load(w, gpu, dtype=torch.float32)
    eager_dec = _decoder(params, w.cfg, gpu)
    eager = _run_blocks(eager_dec, eager_dec.step)
    comp_dec = _decoder(params, w.cfg, gpu)
    compiled = _run_blocks(comp_dec, make_stepper(comp_dec, "compile", compile_mode="default",
                                                  compile_timeout_s=600))
    for b, (e, c) in enumerate(zip(eager, compiled)):
        assert (e - c).abs().max() < 1e-2, f"block {b}"
    assert torch.equal(eager_dec.tokens, comp_dec.tokens), "the compiled step feeds its argmax back too"


def test_bench_runs_end_to_end_on_tiny(gpu, tmp_path, capsys):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    argv = ["bench", "--preset", "tiny", "--context", "256", "--rows", "eager,graph,megakernel", "--steps", "30",
            "--warmup", "2", "--bw-gib", "0.25", "--json", str(js), "--png", str(png)]
    assert main(argv) == 0
    d = json.loads(js.read_text())
    assert d["bandwidth"]["bytes_per_s"] > 1e11 and d["bandwidth"]["source"].startswith("measured")
    rows = {(r["row"], r["tokens"]): r for r in d["rows"]}
    assert set(rows) == {(row, t) for row in ("eager", "graph", "megakernel") for t in (1, 8)}
    for t in (1, 8):
        for row in ("eager", "graph"):
            r = rows[(row, t)]
            assert r["status"] == "ok", r["note"]
            assert 0 < r["ms_p10"] <= r["ms_median"] <= r["ms_p90"] and r["steps_timed"] >= 30
        mk = rows[("megakernel", t)]
        assert mk["status"] == "ok" or mk["note"], "a failed row carries its error"
    assert rows[("graph", 1)]["ms_median"] < rows[("eager", 1)]["ms_median"], "replay beats eager launches"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "tilewarp megakernel" in capsys.readouterr().out
