"""Checkpoints: the published MiMo safetensors layout, written streaming, read lazily, and
every malformed input rejected with an error that names what and where."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from tilewarp.pipeline import fp8, preset
from tilewarp.pipeline.checkpoint import (CONFIG, INDEX, SINGLE, SafetensorsSource, load_checkpoint,
                                          make_checkpoint, save_checkpoint, shard_name)
from tilewarp.pipeline.config import QuantSpec
from tilewarp.pipeline.errors import CheckpointError, ConfigError, QuantizationError
from tilewarp.pipeline.random_model import random_tensors
from tilewarp.pipeline.tensor_specs import expert_name, tensor_specs
from tilewarp.pipeline.weights import DictSource, Weights

TINY = preset("tiny")
TINY_FP8 = TINY.replace(fused_qkv=True, quant=QuantSpec(experts="mxfp4", attn_qkv="fp8", dense_mlp="fp8"))
SMALL_SHARD = 300_000  # tiny is ~1.05 MB: four shards


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def tensors(cfg=TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    return dict(random_tensors(cfg, seed))


def write(tmp_path: Path, ts: dict[str, torch.Tensor], cfg=TINY, **kw) -> Path:
    return save_checkpoint(cfg, ts.items(), tmp_path / "ckpt", **kw)


def shards(d: Path) -> list[Path]:
    return sorted(d.glob("model-*.safetensors"))


def edit_json(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


# ================================================================ round trips
def test_round_trip_is_bit_identical_to_the_generated_tensors(tmp_path):
    d = make_checkpoint("tiny", tmp_path / "ckpt", seed=3)
    w = load_checkpoint(d)
    assert w.cfg == TINY
    want = tensors(seed=3)
    assert set(w.source.keys()) == set(want)
    for name, t in want.items():
        assert same_bits(w.raw(name), t), name


def test_fp8_fused_variant_round_trips_and_widens_to_bf16(tmp_path):
    want = tensors(TINY_FP8)
    d = write(tmp_path, want, TINY_FP8)
    w = load_checkpoint(d)
    assert w.cfg == TINY_FP8
    for name, t in want.items():
        assert same_bits(w.raw(name), t), name
    name = "model.layers.1.self_attn.qkv_proj.weight"
    assert w.raw(name).dtype == torch.float8_e4m3fn
    widened = fp8.dequantize_blockwise(want[name], want[name + "_scale_inv"]).to(torch.bfloat16)
    assert same_bits(w.dense(name), widened)
    wq, wk, wv = w.qkv(1)
    s = TINY_FP8.attn(1)
    assert wq.shape == (s.num_heads * s.head_dim, TINY.hidden_size)
    assert wk.shape == (s.num_kv_heads * s.head_dim, TINY.hidden_size)
    assert wv.shape == (s.num_kv_heads * s.v_head_dim, TINY.hidden_size)


def test_fused_qkv_splits_per_kv_head_blocks_of_q_k_v(tmp_path):
    """Fused rows are grouped per kv head: [Q_0|K_0|V_0][Q_1|K_1|V_1]..., where Q_h holds the
    `group` q heads that share kv head h."""
    cfg = TINY.replace(fused_qkv=True)   # bf16 so the split is checked bit for bit
    ts = tensors(cfg)
    g = torch.Generator().manual_seed(7)
    known = {}
    for layer in range(cfg.num_layers):
        s = cfg.attn(layer)
        h = cfg.hidden_size
        wq = torch.randn(s.num_heads * s.head_dim, h, generator=g).to(torch.bfloat16)
        wk = torch.randn(s.num_kv_heads * s.head_dim, h, generator=g).to(torch.bfloat16)
        wv = torch.randn(s.num_kv_heads * s.v_head_dim, h, generator=g).to(torch.bfloat16)
        q_rows, k_rows, v_rows = s.group * s.head_dim, s.head_dim, s.v_head_dim
        blocks = []
        for kv in range(s.num_kv_heads):
            blocks += [wq[kv * q_rows:(kv + 1) * q_rows], wk[kv * k_rows:(kv + 1) * k_rows],
                       wv[kv * v_rows:(kv + 1) * v_rows]]
        ts[f"model.layers.{layer}.self_attn.qkv_proj.weight"] = torch.cat(blocks)
        known[layer] = (wq, wk, wv)
    w = load_checkpoint(write(tmp_path, ts, cfg))
    assert {cfg.attn(layer).num_kv_heads for layer in range(cfg.num_layers)} == {1, 2}  # both cases covered
    for layer, (wq, wk, wv) in known.items():
        got = w.qkv(layer)
        for a, b in zip(got, (wq, wk, wv)):
            assert same_bits(a, b), layer


def test_small_max_shard_bytes_gives_several_shards_and_a_consistent_index(tmp_path):
    want = tensors()
    d = write(tmp_path, want, max_shard_bytes=SMALL_SHARD)
    files = shards(d)
    n = len(files)
    assert n >= 3
    assert [f.name for f in files] == [shard_name(i, n) for i in range(1, n + 1)]
    assert not list(d.glob(".tmp*"))
    index = json.loads((d / INDEX).read_text())
    assert set(index["weight_map"]) == set(want)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in want.values())
    for f in files:
        with safetensors.safe_open(str(f), framework="pt") as h:
            names = list(h.keys())
            assert all(index["weight_map"][nm] == f.name for nm in names)
            nbytes = sum(want[nm].numel() * want[nm].element_size() for nm in names)
            assert nbytes <= SMALL_SHARD or len(names) == 1
    w = load_checkpoint(d)
    w.check_all()


def test_writer_streams_shards_while_tensors_are_still_arriving(tmp_path):
    """Shards are flushed as the stream goes, not buffered to the end: by the time the last
    tensor is requested all but the last shard are already on disk."""
    out = tmp_path / "ckpt"
    flushed_at_request: list[int] = []

    def stream():
        for item in random_tensors(TINY):
            flushed_at_request.append(len(list(out.glob(".tmp-shard-*"))))
            yield item

    save_checkpoint(TINY, stream(), out, max_shard_bytes=SMALL_SHARD)
    assert flushed_at_request == sorted(flushed_at_request)
    assert flushed_at_request[-1] == len(shards(out)) - 1 >= 2


def test_progress_reports_every_shard_and_a_summary(tmp_path):
    msgs: list[str] = []
    make_checkpoint("tiny", tmp_path / "ckpt", progress=msgs.append, max_shard_bytes=SMALL_SHARD)
    n = len(shards(tmp_path / "ckpt"))
    assert [m for m in msgs if m.startswith("wrote shard")] == [m for m in msgs[:n]]
    assert len(msgs) == n + 1 and "tiny" in msgs[-1] and f"{n} shard" in msgs[-1]


def test_same_seed_same_model_different_seed_different_model(tmp_path):
    a = load_checkpoint(make_checkpoint("tiny", tmp_path / "a", seed=5))
    b = load_checkpoint(make_checkpoint(TINY, tmp_path / "b", seed=5))
    c = load_checkpoint(make_checkpoint("tiny", tmp_path / "c", seed=6))
    for name in a.specs:
        assert same_bits(a.raw(name), b.raw(name)), name
        assert not same_bits(a.raw(name), c.raw(name)), name


def test_single_model_safetensors_without_index_loads(tmp_path):
    want = tensors()
    d = tmp_path / "single"
    d.mkdir()
    safetensors.torch.save_file(want, str(d / SINGLE))
    (d / CONFIG).write_text(json.dumps(TINY.to_hf_dict()))
    w = load_checkpoint(d)
    assert same_bits(w.raw("lm_head.weight"), want["lm_head.weight"])


def test_loading_reads_headers_only_and_tensors_on_first_use(tmp_path, monkeypatch):
    d = write(tmp_path, tensors(), max_shard_bytes=SMALL_SHARD)
    reads: list[str] = []
    real_get = SafetensorsSource.get
    monkeypatch.setattr(SafetensorsSource, "get", lambda self, name: reads.append(name) or real_get(self, name))
    w = load_checkpoint(d)
    for name in w.source.keys():
        w.source.meta(name)
    assert reads == []
    w.expert(2, 3, "up")
    assert sorted(reads) == sorted([expert_name(2, 3, "up"), expert_name(2, 3, "up") + "_scale"])


def test_refuses_to_overwrite_a_checkpoint_unless_asked_and_then_leaves_no_stale_shard(tmp_path):
    d = write(tmp_path, tensors(), max_shard_bytes=SMALL_SHARD)
    assert len(shards(d)) >= 3
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        make_checkpoint("tiny", d, seed=1)
    make_checkpoint("tiny", d, seed=1, overwrite=True)
    assert [f.name for f in shards(d)] == [shard_name(1, 1)]
    assert same_bits(load_checkpoint(d).raw("lm_head.weight"), tensors(seed=1)["lm_head.weight"])


def test_writing_into_a_non_empty_directory_without_a_checkpoint_is_allowed(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "README.md").write_text("notes")
    load_checkpoint(make_checkpoint("tiny", tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "README.md").read_text() == "notes"


def test_a_failing_stream_leaves_the_previous_checkpoint_intact_and_no_temporary_shards(tmp_path):
    d = make_checkpoint("tiny", tmp_path / "ckpt", seed=0)
    before = sorted(p.name for p in d.iterdir())

    def broken():
        for i, item in enumerate(random_tensors(TINY, 1)):
            if i == 100:
                raise RuntimeError("generator died")
            yield item

    with pytest.raises(RuntimeError, match="generator died"):
        save_checkpoint(TINY, broken(), d, max_shard_bytes=SMALL_SHARD, overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == before
    assert same_bits(load_checkpoint(d).raw("lm_head.weight"), tensors(seed=0)["lm_head.weight"])


def test_writer_rejects_a_tensor_name_given_twice(tmp_path):
    t = torch.zeros(2)
    with pytest.raises(CheckpointError, match="model.norm.weight given twice"):
        save_checkpoint(TINY, [("model.norm.weight", t), ("model.norm.weight", t)], tmp_path / "ckpt")
    assert not list((tmp_path / "ckpt").glob("*.safetensors"))


# ============================================================ structural errors
def test_missing_tensor_is_named(tmp_path):
    ts = tensors()
    del ts["model.layers.1.mlp.experts.3.up_proj.weight"]
    with pytest.raises(CheckpointError, match=r"missing.*model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight"):
        load_checkpoint(write(tmp_path, ts))


def test_extra_tensor_is_named(tmp_path):
    ts = tensors()
    ts["model.layers.1.mlp.experts.99.up_proj.weight"] = torch.zeros(4, dtype=torch.uint8)
    with pytest.raises(CheckpointError, match=r"unexpected.*model\.layers\.1\.mlp\.experts\.99\.up_proj\.weight"):
        load_checkpoint(write(tmp_path, ts))


def test_wrong_shape_is_named_with_both_shapes(tmp_path):
    ts = tensors()
    ts["model.norm.weight"] = torch.ones(TINY.hidden_size + 1, dtype=torch.bfloat16)
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight: shape \(129,\), expected \(128,\)"):
        load_checkpoint(write(tmp_path, ts))


def test_wrong_dtype_is_named_with_both_dtypes(tmp_path):
    ts = tensors()
    ts["model.norm.weight"] = ts["model.norm.weight"].float()
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight: dtype torch\.float32, expected torch\.bfloat16"):
        load_checkpoint(write(tmp_path, ts))


def test_unsupported_safetensors_dtype_names_file_tensor_and_dtype(tmp_path):
    ts = tensors()
    ts["model.norm.weight"] = torch.ones(TINY.hidden_size, dtype=torch.float8_e8m0fnu)
    d = write(tmp_path, ts)
    with pytest.raises(CheckpointError, match=r"model-00001-of-00001\.safetensors: tensor model\.norm\.weight "
                                              r"has dtype 'F8_E8M0'"):
        load_checkpoint(d)


# ================================================================ value errors
def test_e8m0_scale_byte_255_raises_when_that_expert_is_read_and_in_check_all(tmp_path):
    ts = tensors()
    scale = expert_name(2, 5, "down").removesuffix(".weight") + ".weight_scale"
    ts[scale] = ts[scale].clone()
    ts[scale][7, 1] = 255
    d = write(tmp_path, ts)
    w = load_checkpoint(d)  # structure is fine; values are checked lazily
    w.expert(2, 4, "down")
    with pytest.raises(QuantizationError, match=rf"{scale}: E8M0 scale byte 255 \(NaN\) at \(7, 1\)"):
        w.expert(2, 5, "down")
    with pytest.raises(QuantizationError, match=scale):
        load_checkpoint(d).check_all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_bf16_weight_is_named_with_its_position(tmp_path, bad):
    ts = tensors()
    name = "model.layers.1.self_attn.o_proj.weight"
    ts[name] = ts[name].clone()
    ts[name][3, 4] = bad
    d = write(tmp_path, ts)
    with pytest.raises(CheckpointError, match=rf"{name}: non-finite value .* at \(3, 4\)"):
        load_checkpoint(d).dense(name)
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(d).check_all()


def test_fp8_nan_code_is_named(tmp_path):
    ts = tensors(TINY_FP8)
    name = "model.layers.0.self_attn.qkv_proj.weight"
    raw = bits(ts[name]).clone()
    raw[5, 6] = 0x7F  # e4m3fn NaN
    ts[name] = raw.view(torch.float8_e4m3fn)
    d = write(tmp_path, ts, TINY_FP8)
    with pytest.raises(CheckpointError, match=rf"{name}: FP8 NaN code at \(5, 6\)"):
        load_checkpoint(d).qkv(0)
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(d).check_all()


@pytest.mark.parametrize("bad", [0.0, -0.5])
def test_non_positive_fp8_block_scale_is_named(tmp_path, bad):
    ts = tensors(TINY_FP8)
    name = "model.layers.0.mlp.up_proj.weight_scale_inv"
    ts[name] = ts[name].clone()
    ts[name][1, 0] = bad
    d = write(tmp_path, ts, TINY_FP8)
    with pytest.raises(CheckpointError, match=rf"{name}: FP8 block scale must be positive"):
        load_checkpoint(d).dense("model.layers.0.mlp.up_proj.weight")


# ================================================================ file errors
def test_missing_shard_file_is_named(tmp_path):
    d = write(tmp_path, tensors(), max_shard_bytes=SMALL_SHARD)
    gone = shards(d)[1]
    gone.unlink()
    with pytest.raises(CheckpointError, match=rf"names shard {gone.name}.*does not exist"):
        load_checkpoint(d)


def test_truncated_shard_file_is_named(tmp_path):
    d = write(tmp_path, tensors(), max_shard_bytes=SMALL_SHARD)
    bad = shards(d)[2]
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=rf"{bad.name}: not a readable safetensors file"):
        load_checkpoint(d)


def test_garbage_shard_file_is_named(tmp_path):
    d = write(tmp_path, tensors(), max_shard_bytes=SMALL_SHARD)
    bad = shards(d)[0]
    bad.write_bytes(b"this is not a safetensors file")
    with pytest.raises(CheckpointError, match=rf"{bad.name}: not a readable safetensors file"):
        load_checkpoint(d)


def test_index_naming_a_tensor_its_shard_lacks_is_named(tmp_path):
    d = write(tmp_path, tensors(), max_shard_bytes=SMALL_SHARD)
    wrong = shard_name(1, len(shards(d)))
    edit_json(d / INDEX, lambda ix: ix["weight_map"].__setitem__("lm_head.weight", wrong))
    with pytest.raises(CheckpointError, match=rf"{INDEX}: maps tensor lm_head\.weight to {wrong}, which does not"):
        load_checkpoint(d)


def test_tensor_in_a_shard_but_not_in_the_index_is_named(tmp_path):
    d = write(tmp_path, tensors(), max_shard_bytes=SMALL_SHARD)
    index = json.loads((d / INDEX).read_text())
    shard = index["weight_map"].pop("model.norm.weight")
    (d / INDEX).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"{shard}: holds tensor model\.norm\.weight that {INDEX} does not"):
        load_checkpoint(d)


def test_same_tensor_in_two_shards_is_named(tmp_path):
    ts = tensors()
    names = list(ts)
    d = tmp_path / "dup"
    d.mkdir()
    half = len(names) // 2
    parts = [names[:half] + ["model.norm.weight"], names[half:]]
    weight_map = {}
    for i, part in enumerate(parts, start=1):
        safetensors.torch.save_file({n: ts[n] for n in part}, str(d / shard_name(i, 2)))
        weight_map.update({n: shard_name(i, 2) for n in part})
    (d / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (d / CONFIG).write_text(json.dumps(TINY.to_hf_dict()))
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight is stored twice, in model-00001-of-00002"
                                              r"\.safetensors and model-00002-of-00002\.safetensors"):
        load_checkpoint(d)


def test_index_shard_path_leaving_the_directory_is_rejected(tmp_path):
    d = write(tmp_path, tensors())
    edit_json(d / INDEX, lambda ix: ix["weight_map"].__setitem__("lm_head.weight", "../x.safetensors"))
    with pytest.raises(CheckpointError, match=r"lm_head\.weight maps to '\.\./x\.safetensors', not a file name"):
        load_checkpoint(d)


@pytest.mark.parametrize("content", [b"{ weight_map: ", b"\xff\xfe\x00 binary"])
def test_index_that_is_not_json_is_named(tmp_path, content):
    d = write(tmp_path, tensors())
    (d / INDEX).write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{INDEX}: not valid JSON"):
        load_checkpoint(d)


@pytest.mark.parametrize("index", [{"metadata": {}}, {"weight_map": {}}, ["model.norm.weight"]])
def test_index_without_a_weight_map_is_rejected(tmp_path, index):
    d = write(tmp_path, tensors())
    (d / INDEX).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"{INDEX}: needs a non-empty 'weight_map' object"):
        load_checkpoint(d)


def test_directory_without_weights_is_rejected(tmp_path):
    (tmp_path / CONFIG).write_text(json.dumps(TINY.to_hf_dict()))
    with pytest.raises(CheckpointError, match=rf"holds neither {INDEX} nor {SINGLE}"):
        load_checkpoint(tmp_path)


# ============================================================== config errors
def test_unknown_config_key_is_an_error_unless_strict_config_is_off(tmp_path, caplog):
    d = write(tmp_path, tensors())
    edit_json(d / CONFIG, lambda c: c.__setitem__("frobnicate_experts", True))
    with pytest.raises(ConfigError, match=r"config\.json: .*unknown key 'frobnicate_experts'"):
        load_checkpoint(d)
    with caplog.at_level(logging.WARNING, logger="tilewarp.config"):
        w = load_checkpoint(d, strict_config=False)
    assert w.cfg == TINY
    assert any(r.levelno == logging.WARNING and "frobnicate_experts" in r.getMessage() for r in caplog.records)


def test_contradictory_sliding_window_keys_are_an_error(tmp_path):
    d = write(tmp_path, tensors())
    edit_json(d / CONFIG, lambda c: c.update(sliding_window=128, sliding_window_size=64))
    with pytest.raises(ConfigError, match=r"sliding_window_size=64 contradicts sliding_window=128"):
        load_checkpoint(d)


@pytest.mark.parametrize("content", [b"hidden_size: 128\n", b"\x89PNG\r\n\x1a\n\xff\xfe binary"])
def test_config_that_is_not_json_names_the_file(tmp_path, content):
    d = write(tmp_path, tensors())
    (d / CONFIG).write_bytes(content)
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON"):
        load_checkpoint(d)


def test_config_that_is_not_an_object_names_the_file(tmp_path):
    d = write(tmp_path, tensors())
    (d / CONFIG).write_text("[1, 2, 3]")
    with pytest.raises(ConfigError, match=r"config\.json: top level must be a JSON object"):
        load_checkpoint(d)


def test_missing_config_names_the_file(tmp_path):
    d = write(tmp_path, tensors())
    (d / CONFIG).unlink()
    with pytest.raises(ConfigError, match=r"config\.json: config\.json not found"):
        load_checkpoint(d)


def test_dict_source_and_checkpoint_source_give_the_same_weights(tmp_path):
    """The in-memory and on-disk sources are interchangeable behind `Weights`."""
    want = tensors()
    a = Weights(TINY, DictSource(want))
    b = load_checkpoint(write(tmp_path, want))
    assert [s.name for s in tensor_specs(TINY)] == list(a.specs) == list(b.specs)
    for layer in range(TINY.num_layers):
        for x, y in zip(a.qkv(layer), b.qkv(layer)):
            assert same_bits(x, y)
    assert same_bits(a.expert_dense(3, 7, "gate"), b.expert_dense(3, 7, "gate"))
