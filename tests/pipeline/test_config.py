"""ModelConfig: the published MiMo-V2 config keys, the presets, and the size model."""

from __future__ import annotations

import logging

import pytest

from tilewarp.pipeline import PRESETS, param_counts, preset, step_bytes
from tilewarp.pipeline.config import GLOBAL, IGNORED_KEYS, SWA, ModelConfig, kv_bytes_per_token
from tilewarp.pipeline.errors import ConfigError


def hf(name: str = "tiny", **changes) -> dict:
    d = preset(name).to_hf_dict()
    d.update(changes)
    return d


def minimal(pattern: list[int]) -> dict:
    """Only the keys a MiMo-V2 config cannot do without."""
    return {"hidden_size": 64, "num_hidden_layers": len(pattern), "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "rope_theta": 10000.0, "vocab_size": 100,
            "max_position_embeddings": 256, "intermediate_size": 128, "hybrid_layer_pattern": pattern,
            "sliding_window_size": 8}


# ==================================================================== presets
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_the_hf_dict(name):
    cfg = preset(name)
    assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown preset 'mimo-huge'.*'tiny'"):
        preset("mimo-huge")


def test_mimo_v25_pro_has_1_02T_parameters_and_42B_active():
    p = param_counts(preset("mimo-v2.5-pro"))
    assert p.total == pytest.approx(1.02e12, rel=0.02)
    assert p.active == pytest.approx(42e9, rel=0.02)


def test_mimo_v2_flash_has_309B_parameters_and_15B_active():
    """The model card's "15B" is rounded to two digits: anything in [14.5e9, 15.5e9) matches."""
    p = param_counts(preset("mimo-v2-flash"))
    assert p.total == pytest.approx(309e9, rel=0.02)
    assert 14.5e9 <= p.active < 15.5e9


def test_active_parameters_count_top_k_experts_of_every_moe_layer():
    cfg = preset("mimo-v2-flash")
    p = param_counts(cfg)
    per_expert = 3 * cfg.hidden_size * cfg.moe_intermediate
    assert p.experts_total == 47 * 256 * per_expert
    assert p.experts_active == 47 * 8 * per_expert
    assert p.total - p.active == p.experts_total - p.experts_active


# ================================================================ layer kinds
def test_hybrid_layer_pattern_0_is_global_and_1_is_sliding_window():
    cfg = ModelConfig.from_hf_dict(minimal([0, 1, 1, 0, 1]))
    assert cfg.layer_kinds == (GLOBAL, SWA, SWA, GLOBAL, SWA)
    assert cfg.global_layers == (0, 3)
    assert cfg.attn(0).window is None and cfg.attn(1).window == 8
    assert cfg.to_hf_dict()["hybrid_layer_pattern"] == [0, 1, 1, 0, 1]


def test_hybrid_layer_pattern_rejects_values_other_than_0_and_1():
    with pytest.raises(ConfigError, match=r"hybrid_layer_pattern must be a list of 0 \(global\) / 1 \(SWA\)"):
        ModelConfig.from_hf_dict(minimal([0, 2, 1]))


def test_hybrid_layer_pattern_must_have_one_entry_per_layer():
    d = minimal([0, 1, 1])
    d["num_hidden_layers"] = 4
    with pytest.raises(ConfigError, match=r"hybrid_layer_pattern: has 3 entries for 4 layers"):
        ModelConfig.from_hf_dict(d)


@pytest.mark.parametrize("name,globals_", [
    ("mimo-v2-flash", (0, 5, 11, 17, 23, 29, 35, 41, 47)),
    ("mimo-v2.5-pro", (0, 7, 15, 23, 31, 39, 47, 55, 62, 69)),
])
def test_published_presets_have_the_published_global_layers(name, globals_):
    cfg = preset(name)
    assert cfg.global_layers == globals_
    pattern = cfg.to_hf_dict()["hybrid_layer_pattern"]
    assert [i for i, p in enumerate(pattern) if p == 0] == list(globals_)
    assert all(cfg.attn(i).window == 128 for i in range(cfg.num_layers) if i not in globals_)


def test_mimo_v2_flash_swa_layers_have_twice_the_kv_heads_of_global_layers():
    cfg = preset("mimo-v2-flash")
    assert (cfg.global_attn.num_kv_heads, cfg.swa_attn.num_kv_heads) == (4, 8)
    assert not cfg.global_attn.sink and cfg.swa_attn.sink


def test_rotary_dim_is_64_for_head_dim_192_with_factor_0_334():
    for name in ("mimo-mini", "mimo-v2-flash", "mimo-v2.5-pro"):
        cfg = preset(name)
        assert cfg.rotary_dim(cfg.global_attn) == 64 and cfg.rotary_dim(cfg.swa_attn) == 64


def test_dense_layer_0_then_moe_layers():
    cfg = preset("mimo-v2.5-pro")
    assert not cfg.is_moe(0) and all(cfg.is_moe(i) for i in range(1, 70))
    assert sum(cfg.moe_layers) == 69


# ==================================================================== key errors
def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"unknown key 'magic_dust'"):
        ModelConfig.from_hf_dict(hf(magic_dust=1))


def test_unknown_key_is_logged_not_silent_when_strict_is_off(caplog):
    with caplog.at_level(logging.WARNING, logger="tilewarp.config"):
        cfg = ModelConfig.from_hf_dict(hf(magic_dust=1), strict=False)
    assert cfg == preset("tiny")
    assert any("magic_dust" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_ignored_keys_are_accepted_and_logged(caplog):
    d = hf()
    extra = {k: None for k in IGNORED_KEYS if k not in d} | {"num_nextn_predict_layers": 1, "use_cache": True}
    with caplog.at_level(logging.INFO, logger="tilewarp.config"):
        cfg = ModelConfig.from_hf_dict(d | extra)
    assert cfg == preset("tiny")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "num_nextn_predict_layers" in logged and "use_cache" in logged


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size",
                                 "num_attention_heads", "head_dim", "max_position_embeddings"])
def test_missing_required_key_is_named(key):
    d = hf()
    del d[key]
    with pytest.raises(ConfigError, match=rf"missing required key '{key}'"):
        ModelConfig.from_hf_dict(d)


def test_missing_rope_theta_is_named():
    d = hf()
    del d["rope_theta"]
    with pytest.raises(ConfigError, match=r"missing required key 'rope_theta'"):
        ModelConfig.from_hf_dict(d)


def test_sliding_window_and_sliding_window_size_must_agree():
    with pytest.raises(ConfigError, match=r"sliding_window_size=64 contradicts sliding_window=128"):
        ModelConfig.from_hf_dict(hf(sliding_window=128, sliding_window_size=64))
    assert ModelConfig.from_hf_dict(hf(sliding_window=None, sliding_window_size=64)).swa_attn.window == 64


def test_rope_parameters_must_agree_with_top_level_rope_keys():
    with pytest.raises(ConfigError, match=r"rope_theta=.* contradicts rope_parameters\.rope_theta=1\.0"):
        ModelConfig.from_hf_dict(hf(rope_parameters={"rope_type": "default", "rope_theta": 1.0}))


@pytest.mark.parametrize("rope_type", ["yarn", "linear", "dynamic"])
def test_rope_type_other_than_default_is_rejected(rope_type):
    with pytest.raises(ConfigError, match=rf"rope_type '{rope_type}' is not supported"):
        ModelConfig.from_hf_dict(hf(rope_parameters={"rope_type": rope_type}))


def test_shared_experts_are_rejected():
    with pytest.raises(ConfigError, match=r"n_shared_experts=1"):
        ModelConfig.from_hf_dict(hf(n_shared_experts=1))


@pytest.mark.parametrize("func", ["softmax", "sqrtsoftplus"])
def test_scoring_func_other_than_sigmoid_is_rejected(func):
    with pytest.raises(ConfigError, match=rf"scoring_func '{func}' unsupported"):
        ModelConfig.from_hf_dict(hf(scoring_func=func))


@pytest.mark.parametrize("freq,match", [
    (1, r"moe_layer_freq must be a per-layer list, got 1"),
    ([0, 1, 1], r"moe_layer_freq must list 0 \(dense\) / 1 \(MoE\) for each of 4 layers"),
    ([0, 1, 2, 1], r"moe_layer_freq must list 0 \(dense\) / 1 \(MoE\)"),
])
def test_bad_moe_layer_freq_is_rejected(freq, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_hf_dict(hf(moe_layer_freq=freq))


def test_moe_layers_without_experts_are_rejected():
    with pytest.raises(ConfigError, match=r"moe_layer_freq marks MoE layers but n_routed_experts is 0"):
        ModelConfig.from_hf_dict(hf(n_routed_experts=0))


def test_other_model_types_are_rejected():
    with pytest.raises(ConfigError, match=r"model_type 'llama' is not 'mimo_v2'"):
        ModelConfig.from_hf_dict(hf(model_type="llama"))


def test_heads_must_divide_into_kv_heads():
    with pytest.raises(ConfigError, match=r"num_attention_heads: 4 q heads is not a multiple of 3 kv heads"):
        ModelConfig.from_hf_dict(hf(num_key_value_heads=3))


def test_quantization_config_names_fp8_modules_and_the_expert_store():
    q = ModelConfig.from_hf_dict(hf("mimo-v2-flash")).quant
    assert (q.experts, q.attn_qkv, q.dense_mlp, q.mxfp4_block, q.fp8_block) == ("mxfp4", "fp8", "fp8", 32,
                                                                                (128, 128))
    with pytest.raises(ConfigError, match=r"unknown key quantization_config\.group_size"):
        ModelConfig.from_hf_dict(hf(quantization_config={"group_size": 64}))


# ================================================================ step bytes
def test_mimo_mini_single_token_step_reads_about_1_5_GB():
    sb = step_bytes(preset("mimo-mini"), tokens=1, context=4096)
    assert 1.4e9 < sb.total < 1.6e9


def test_step_bytes_grow_with_tokens_only_through_distinct_experts_and_kv():
    cfg = preset("mimo-mini")
    one, eight = step_bytes(cfg, 1), step_bytes(cfg, 8)
    for group in ("attention", "dense_mlp", "router", "lm_head"):
        assert one.by_group[group] == eight.by_group[group]
    assert one.by_group["experts"] < eight.by_group["experts"] < 8 * one.by_group["experts"]
    everything = step_bytes(cfg, 10_000).by_group["experts"]
    all_experts = sum(cfg.moe_layers) * cfg.num_experts * 3 * cfg.hidden_size * cfg.moe_intermediate * 4.25 / 8
    assert everything == pytest.approx(all_experts, rel=1e-6)


def test_swa_kv_bytes_are_bounded_by_the_window():
    cfg = preset("mimo-mini")
    short, long = step_bytes(cfg, 1, 4096), step_bytes(cfg, 1, 65536 - 1)
    growth = long.by_group["kv_cache"] - short.by_group["kv_cache"]
    assert growth == (65535 - 4096) * kv_bytes_per_token(cfg)        # only global layers grow
    all_swa = cfg.replace(layer_kinds=(SWA,) * cfg.num_layers)
    assert step_bytes(all_swa, 1, 4096).by_group["kv_cache"] == step_bytes(all_swa, 1, 60000).by_group["kv_cache"]
