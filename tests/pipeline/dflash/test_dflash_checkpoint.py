"""Drafter checkpoints: safetensors only, exactly the drafter's tensor table, every fault named."""

from __future__ import annotations

import json

import pytest
import torch

from tilewarp.pipeline.dflash.checkpoint import load_draft_checkpoint, make_draft_checkpoint, save_draft_checkpoint
from tilewarp.pipeline.dflash.config import mimo_drafter, tiny_drafter
from tilewarp.pipeline.dflash.draft_model import DraftModel
from tilewarp.pipeline.dflash.tensor_specs import draft_tensor_specs
from tilewarp.pipeline.dflash.weights import random_draft_tensors, random_draft_weights
from tilewarp.pipeline.errors import CheckpointError, ConfigError
from tilewarp.pipeline.presets import preset
from tilewarp.pipeline.random_model import random_weights

TARGET = preset("tiny")
CFG = tiny_drafter(TARGET)


@pytest.fixture(scope="module")
def target():
    return random_weights(TARGET, seed=0)


def write(tmp_path, tensors: dict[str, torch.Tensor]):
    return save_draft_checkpoint(CFG, tensors.items(), tmp_path / "drafter")


def good() -> dict[str, torch.Tensor]:
    return dict(random_draft_tensors(CFG, seed=3))


def test_a_saved_drafter_loads_back_and_drafts_identically(tmp_path, target):
    path = make_draft_checkpoint(CFG, tmp_path / "drafter", seed=3)
    loaded = load_draft_checkpoint(path)
    assert loaded.cfg == CFG
    hidden = {k: torch.randn(5, CFG.hidden_size, generator=torch.Generator().manual_seed(k)) for k in CFG.target_layer_ids}
    outs = []
    for weights in (loaded, random_draft_weights(CFG, seed=3)):
        model = DraftModel(CFG, weights, target, capacity=32)
        model.append_context(hidden, range(5))
        outs.append(model.propose(17, 5).logits)
    assert torch.equal(outs[0], outs[1])


def test_the_mask_embedding_is_stored_in_safetensors_and_nothing_is_pickled(tmp_path):
    path = make_draft_checkpoint(CFG, tmp_path / "drafter")
    files = sorted(p.name for p in path.iterdir())
    assert all(name.endswith((".safetensors", ".json")) for name in files), files
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["mask_embedding"].endswith(".safetensors")
    assert "lm_head.weight" not in index["weight_map"] and "embed_tokens.weight" not in str(index)


def test_the_tensor_table_names_every_drafter_tensor():
    names = {s.name for s in draft_tensor_specs(CFG)}
    per_layer = {"input_layernorm.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                 "mlp.up_proj.weight", "mlp.down_proj.weight"} | {
        f"self_attn.{n}" for n in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                                   "q_norm.weight", "k_norm.weight", "attention_sink_bias")}
    assert names == {"fc.weight", "hidden_norm.weight", "norm.weight", "mask_embedding"} | {
        f"layers.{i}.{n}" for i in range(CFG.num_layers) for n in per_layer}


def test_the_mimo_drafter_table_has_the_published_fuse_projection():
    specs = {s.name: s for s in draft_tensor_specs(mimo_drafter())}
    assert specs["fc.weight"].shape == (6144, 5 * 6144)
    assert specs["layers.4.self_attn.q_proj.weight"].shape == (128 * 128, 6144)
    assert specs["layers.4.self_attn.k_proj.weight"].shape == (8 * 128, 6144)
    assert specs["mask_embedding"].shape == (6144,)
    assert specs["layers.4.mlp.down_proj.weight"].shape == (6144, 16384)    # intermediate_size unconfirmed
    assert "layers.5.input_layernorm.weight" not in specs


# ======================================================================== faults
def test_a_missing_tensor_is_named(tmp_path):
    tensors = good()
    del tensors["mask_embedding"]
    with pytest.raises(CheckpointError, match=r"tensor mask_embedding is missing"):
        load_draft_checkpoint(write(tmp_path, tensors))


def test_an_extra_tensor_is_named(tmp_path):
    tensors = good()
    tensors["lm_head.weight"] = torch.zeros(TARGET.vocab_size, CFG.hidden_size, dtype=torch.bfloat16)
    with pytest.raises(CheckpointError, match=r"tensor lm_head.weight is not part of a 'tiny-drafter' drafter"):
        load_draft_checkpoint(write(tmp_path, tensors))


def test_a_wrong_shape_is_named(tmp_path):
    tensors = good()
    tensors["fc.weight"] = tensors["fc.weight"].T.contiguous()
    with pytest.raises(CheckpointError, match=r"tensor fc.weight: shape \(384, 128\), expected \(128, 384\)"):
        load_draft_checkpoint(write(tmp_path, tensors))


def test_a_wrong_dtype_is_named(tmp_path):
    tensors = good()
    tensors["layers.0.self_attn.q_norm.weight"] = tensors["layers.0.self_attn.q_norm.weight"].float()
    with pytest.raises(CheckpointError, match=r"tensor layers.0.self_attn.q_norm.weight: dtype torch.float32, "
                                              r"expected torch.bfloat16"):
        load_draft_checkpoint(write(tmp_path, tensors))


def test_a_nan_is_named_when_the_drafter_is_built(tmp_path, target):
    tensors = good()
    tensors["layers.1.self_attn.k_norm.weight"][5] = float("nan")
    weights = load_draft_checkpoint(write(tmp_path, tensors))
    with pytest.raises(CheckpointError, match=r"tensor layers.1.self_attn.k_norm.weight: non-finite value nan at \(5,\)"):
        DraftModel(CFG, weights, target, capacity=16)


def test_a_bad_config_names_the_file_and_key(tmp_path):
    path = make_draft_checkpoint(CFG, tmp_path / "drafter")
    d = json.loads((path / "config.json").read_text())
    d["block_size"] = 4
    (path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"config.json: .*block_size=4 contradicts dflash_config.block_size=8"):
        load_draft_checkpoint(path)


def test_a_directory_without_a_drafter_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"not a drafter checkpoint directory"):
        load_draft_checkpoint(tmp_path / "nothing")
