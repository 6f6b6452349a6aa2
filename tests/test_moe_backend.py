"""HUNYUAN_MOE_BACKEND: the one rule every adapter asks for its MoE implementation."""

import json

import pytest

from hunyuan_plugins.ops import backend


@pytest.mark.parametrize("env, has_kernel, name, reason", [
    (None, False, "hunyuan", "vllm has no fp8_w8a8 MoE kernel on cpu"),
    ("auto", True, "engine", "vllm's kernel, no benchmark of ours on this device"),
    ("hunyuan", True, "hunyuan", "HUNYUAN_MOE_BACKEND=hunyuan"),
    ("engine", True, "engine", "HUNYUAN_MOE_BACKEND=engine"),
    (" Hunyuan ", False, "hunyuan", "HUNYUAN_MOE_BACKEND=hunyuan"),
])
def test_the_rule(monkeypatch, env, has_kernel, name, reason):
    if env is None:
        monkeypatch.delenv(backend.MOE_BACKEND_ENV, raising=False)
    else:
        monkeypatch.setenv(backend.MOE_BACKEND_ENV, env)
    got = backend.moe_backend("vllm", "fp8_w8a8", engine_has_kernel=has_kernel)
    assert (got.name, got.reason) == (name, reason)
    assert got.ours == (name == "hunyuan")


def test_engine_without_a_kernel_and_bad_values_are_errors(monkeypatch):
    monkeypatch.setenv(backend.MOE_BACKEND_ENV, "engine")
    with pytest.raises(ValueError, match="sglang has no int4_w4a16 MoE kernel on cpu"):
        backend.moe_backend("sglang", "int4_w4a16", engine_has_kernel=False)
    monkeypatch.setenv(backend.MOE_BACKEND_ENV, "triton")
    with pytest.raises(ValueError, match="HUNYUAN_MOE_BACKEND='triton' is not one of engine, hunyuan, auto"):
        backend.moe_backend("vllm", "bf16", engine_has_kernel=True)
    monkeypatch.delenv(backend.MOE_BACKEND_ENV)
    with pytest.raises(ValueError, match="unknown MoE weight format 'int8'"):
        backend.moe_backend("vllm", "int8", engine_has_kernel=True)


def test_auto_follows_a_committed_measurement(monkeypatch, tmp_path):
    measured = {"_note": "x", "NVIDIA H200": {"bf16": {"vllm": 1.2, "sglang": 0.9}}}
    monkeypatch.setattr(backend, "_measured", lambda: {k: v for k, v in measured.items() if k[0] != "_"})
    monkeypatch.delenv(backend.MOE_BACKEND_ENV, raising=False)
    assert backend.moe_backend("vllm", "bf16", engine_has_kernel=True, device_name="NVIDIA H200") == \
        backend.MoEBackend("hunyuan", "measured 1.20x faster than vllm's on NVIDIA H200")
    assert backend.moe_backend("sglang", "bf16", engine_has_kernel=True, device_name="NVIDIA H200").name == "engine"
    assert backend.moe_backend("vllm", "bf16", engine_has_kernel=True, device_name="NVIDIA H100").name == "engine"


def test_the_shipped_measurements_file_is_valid():
    backend._measured.cache_clear()
    table = backend._measured()
    for device, formats in table.items():
        assert set(formats) <= set(backend.FORMATS), device
        assert all(isinstance(v, (int, float)) for f in formats.values() for v in f.values())
    with open(backend.__file__.replace("backend.py", "measured.json")) as f:
        assert "_note" in json.load(f)
