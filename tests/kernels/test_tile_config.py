"""Tile-config lookup: JSON keyed by (op, E, N, K, dtype, device), nearest M, default otherwise."""

import json

import torch

from hunyuan_plugins_kernels import _config


def test_lookup_prefers_a_matching_tuned_entry(tmp_path, monkeypatch):
    key = _config.config_key(64, 3072, 4096, "bf16", "cpu")
    (tmp_path / "moe_up.json").write_text(json.dumps({key: {
        "1": {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 256},
        "256": {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64}}}))
    monkeypatch.setenv(_config.CONFIG_DIR_ENV, str(tmp_path))
    _config._load.cache_clear()
    try:
        cpu = torch.device("cpu")
        assert _config.lookup("moe_up", 8, 64, 3072, 4096, "bf16", cpu)["BLOCK_K"] == 256      # nearest M = 1
        assert _config.lookup("moe_up", 200, 64, 3072, 4096, "bf16", cpu)["BLOCK_M"] == 64     # nearest M = 256
        # another dtype, shape or op: the shipped default
        default = _config.default_config(8, 64, cpu)
        assert _config.lookup("moe_up", 8, 64, 3072, 4096, "fp8_w8a8", cpu) == default
        assert _config.lookup("moe_up", 8, 64, 1536, 4096, "bf16", cpu) == default
        assert _config.lookup("moe_down", 8, 64, 3072, 4096, "bf16", cpu) == default
    finally:
        _config._load.cache_clear()


def test_shipped_defaults_are_marked_untuned():
    _config._load.cache_clear()
    rules = _config._load("default")
    assert "not tuned" in rules["_comment"]
    for rule_set in ("gpu", "interpreter"):
        assert rules[rule_set][-1].get("max_m_per_expert") is None  # a catch-all rule ends each list


def test_gpu_defaults_per_dtype(monkeypatch):
    """The GPU rules the compile report asked for: fp8 always 64 rows (e4m3 wgmma on Hopper), fp32's
    big tile in 2 stages (3 overflow sm_90's shared memory), others vLLM's small-M tiles."""
    monkeypatch.setattr(_config, "interpreting", lambda: False)
    _config._load.cache_clear()
    gpu = torch.device("meta")  # any non-CPU device when not interpreting: the GPU rules
    for tag in ("fp8_w8a8", "fp8_w8a8_block128"):
        assert _config.default_config(1, 64, gpu, tag)["BLOCK_M"] == 64
        assert _config.default_config(4096, 64, gpu, tag)["BLOCK_M"] == 64
    assert _config.default_config(1, 64, gpu, "bf16")["BLOCK_M"] == 16
    assert _config.default_config(4096, 64, gpu, "fp32")["num_stages"] == 2
    assert _config.default_config(4096, 64, gpu, "bf16")["num_stages"] == 3
    assert "dtypes" not in _config.default_config(1, 64, gpu, "fp8_w8a8")  # rule metadata is not a tile field
