"""DraftConfig: the drafter's config.json keys, its presets, and every way a config can be wrong."""

from __future__ import annotations

import json
import logging

import pytest

from tilewarp.pipeline.dflash.config import DraftConfig, mimo_drafter, tiny_drafter
from tilewarp.pipeline.errors import ConfigError
from tilewarp.pipeline.presets import preset

TARGET = preset("tiny")


def published(**changes) -> dict:
    """A drafter config.json as the public DFlash drafters lay it out (Qwen3 keys + dflash_config)."""
    d = {
        "architectures": ["DFlashDraftModel"], "model_type": "qwen3", "hidden_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "intermediate_size": 256, "rms_norm_eps": 1e-5, "vocab_size": 512, "hidden_act": "silu",
        "attention_bias": False, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "partial_rotary_factor": 0.5, "sliding_window": 16, "use_sliding_window": True,
        "layer_types": ["sliding_attention"] * 2, "is_causal": False, "attention_value_scale": 0.612,
        "add_attention_sink_bias": True, "num_target_layers": 4, "tie_word_embeddings": False,
        "dflash_config": {"block_size": 8, "mask_token_id": 511, "target_layer_ids": [0, 2, 3]},
        "torch_dtype": "bfloat16", "transformers_version": "4.57.0",
    }
    d.update(changes)
    return d


# ======================================================================= reading
def test_a_published_layout_config_reads_as_the_tiny_drafter():
    assert DraftConfig.from_hf_dict(published(), name="tiny-drafter") == tiny_drafter(TARGET)


@pytest.mark.parametrize("make", [lambda: tiny_drafter(TARGET), mimo_drafter])
def test_presets_round_trip_through_config_json(make, tmp_path):
    cfg = make()
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
    assert DraftConfig.from_json(tmp_path / "config.json") == cfg


def test_mimo_drafter_has_the_published_shape():
    cfg = mimo_drafter()
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (6144, 5, 128, 8, 128)
    assert cfg.rotary_dim == 64 and cfg.rope_theta == 1e4 and cfg.block_size == 8
    assert cfg.mask_token_id == 151669 and cfg.value_scale == 0.612 and cfg.sink and cfg.window == 1024
    assert cfg.target_layer_ids == (0, 15, 31, 47, 69)
    cfg.check_target(preset("mimo-v2.5-pro"))


def test_dflash_keys_may_sit_at_the_top_level():
    d = published()
    d.update(d.pop("dflash_config"))
    assert DraftConfig.from_hf_dict(d, name="tiny-drafter") == tiny_drafter(TARGET)


def test_no_sliding_window_means_the_whole_context():
    d = published(sliding_window=None, use_sliding_window=False, layer_types=["full_attention"] * 2)
    assert DraftConfig.from_hf_dict(d).window is None


def test_optional_keys_default_to_off():
    d = published()
    for key in ("attention_value_scale", "add_attention_sink_bias", "partial_rotary_factor", "sliding_window",
                "use_sliding_window", "layer_types", "num_target_layers"):
        del d[key]
    cfg = DraftConfig.from_hf_dict(d)
    assert (cfg.value_scale, cfg.sink, cfg.rotary_dim, cfg.window, cfg.num_target_layers) == (1.0, False, 32, None, None)


def test_harmless_keys_are_ignored_with_a_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="tilewarp.dflash.config"):
        DraftConfig.from_hf_dict(published())
    assert "ignoring key 'transformers_version'" in caplog.text


# ======================================================================== errors
@pytest.mark.parametrize("changes, message", [
    ({"rope_scaling_factor": 2.0}, r"rope_scaling_factor: unknown key"),
    ({"dflash_config": {"block_size": 8, "mask_token_id": 511, "target_layer_ids": [0], "gamma": 4}},
     r"dflash_config.gamma: unknown key"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, r"rope_parameters.rope_type: 'yarn' unsupported"),
    ({"hidden_act": "gelu"}, r"hidden_act: 'gelu' unsupported"),
    ({"attention_bias": True}, r"attention_bias: projection biases are not supported"),
    ({"is_causal": True}, r"is_causal: DFlash draft attention is non-causal"),
    ({"layer_types": ["full_attention"] * 2}, r"layer_types: must list 'sliding_attention' for each of 2 layers"),
])
def test_keys_tilewarp_cannot_honour_are_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        DraftConfig.from_hf_dict(published(**changes))


@pytest.mark.parametrize("key", ["hidden_size", "num_attention_heads", "head_dim", "intermediate_size", "vocab_size",
                                 "rms_norm_eps", "rope_parameters"])
def test_required_keys_are_named_when_missing(key):
    d = published()
    del d[key]
    name = "rope_theta" if key == "rope_parameters" else key
    with pytest.raises(ConfigError, match=rf"{name}: missing required key"):
        DraftConfig.from_hf_dict(d)


def test_a_required_dflash_key_is_named_when_missing():
    d = published()
    del d["dflash_config"]["mask_token_id"]
    with pytest.raises(ConfigError, match=r"mask_token_id: missing required key"):
        DraftConfig.from_hf_dict(d)


@pytest.mark.parametrize("changes, message", [
    ({"block_size": 4}, r"block_size: block_size=4 contradicts dflash_config.block_size=8"),
    ({"rope_theta": 5e5}, r"rope_theta: rope_theta=500000.0 contradicts rope_parameters.rope_theta=10000.0"),
    ({"use_sliding_window": False}, r"use_sliding_window: False contradicts sliding_window=16"),
    ({"layernorm_epsilon": 1e-6}, r"rms_norm_eps: 1e-05 contradicts layernorm_epsilon=1e-06"),
])
def test_contradicting_keys_are_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        DraftConfig.from_hf_dict(published(**changes))


def dflash(**changes) -> dict:
    return published(dflash_config={**published()["dflash_config"], **changes})


@pytest.mark.parametrize("d, message", [
    (dflash(block_size=1), r"block_size: 1 not in \[2, 16\]"),
    (dflash(block_size=17), r"block_size: 17 not in \[2, 16\]"),
    (dflash(target_layer_ids=[]), r"target_layer_ids: must name at least one target layer"),
    (dflash(target_layer_ids=[2, 0]), r"target_layer_ids: must be increasing"),
    (dflash(target_layer_ids=[0, 0]), r"target_layer_ids: has duplicates"),
    (dflash(target_layer_ids=[0, 4]), r"num_target_layers: 4 target layers cannot hold target_layer_ids \[0, 4\]"),
    (dflash(target_layer_ids="0,2"), r"target_layer_ids: must be a list of ints"),
    (dflash(mask_token_id=512), r"mask_token_id: 512 not in \[0, vocab_size=512\)"),
    (published(num_key_value_heads=3), r"num_attention_heads: 4 q heads is not a multiple of 3 kv heads"),
    (published(partial_rotary_factor=0.3), r"partial_rotary_factor: gives 9 rotary dims of 32"),
    (published(sliding_window=0), r"sliding_window: must be null or a positive int, got 0"),
    (published(head_dim=32.0), r"head_dim: must be an int, got 32.0"),
    (published(attention_value_scale=0), r"attention_value_scale: must be positive"),
    (published(add_attention_sink_bias="yes"), r"add_attention_sink_bias: must be true or false"),
    (published(hidden_size=0), r"hidden_size: must be a positive int, got 0"),
])
def test_bad_values_are_errors_naming_the_key(d, message):
    with pytest.raises(ConfigError, match=message):
        DraftConfig.from_hf_dict(d)


@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": 64}, r"hidden_size: 64 != target hidden_size 128"),
    ({"vocab_size": 1000, "mask_token_id": 999}, r"vocab_size: 1000 != target vocab_size 512"),
    ({"target_layer_ids": (0, 4), "num_target_layers": None}, r"target_layer_ids: \[0, 4\] reach past the target's 4"),
    ({"num_target_layers": 5}, r"num_target_layers: 5 != target num_hidden_layers 4"),
])
def test_a_drafter_must_fit_its_target(changes, message):
    cfg = tiny_drafter(TARGET).replace(**changes)
    with pytest.raises(ConfigError, match=message):
        cfg.check_target(TARGET)


def test_a_config_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=rf"{path}: not valid JSON"):
        DraftConfig.from_json(path)
    with pytest.raises(ConfigError, match=r"drafter config.json not found"):
        DraftConfig.from_json(tmp_path / "missing.json")
