"""compile_report compiles the launchers' real launches for sm_90a without a GPU, and fails on a
shipped config that does not fit: here a tuned entry whose fp32 gate/up tile needs more shared
memory than an H100 has (3 stages of 64x128x64 fp32: 241 KB > 227 KB)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton.backends.nvidia", reason="triton without its NVIDIA backend cannot compile for sm_90a")


def _report(tmp_path, *args, config_dir=None):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if config_dir:
        env["HUNYUAN_KERNEL_CONFIG_DIR"] = str(config_dir)
    r = subprocess.run([sys.executable, "-m", "hunyuan_plugins_kernels.compile_report", "--targets", "sm_90a",
                        "--tp", "1", "--out", str(tmp_path / "out"), *args],
                       capture_output=True, text=True, env=env, timeout=900)
    rows = json.loads((tmp_path / "out" / "compile_report.json").read_text())["kernels"]
    return r, rows


def test_overflowing_tuned_config_fails_the_report(tmp_path):
    big = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    key = "E=64,N=3072,K=4096,dtype=fp32,device=NVIDIA_H100_80GB_HBM3"
    (tmp_path / "moe_up.json").write_text(json.dumps({key: {"1024": big}}))
    (tmp_path / "moe_down.json").write_text(json.dumps({key: {"1024": big}}))
    r, rows = _report(tmp_path, "--formats", "fp32,int4", config_dir=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    tuned = [x for x in rows if x["source"].startswith("moe_up.json")]
    up = [x for x in tuned if x["kernel"] == "gemm up (SwiGLU)"]
    assert up and all("shared" in p for x in up for p in x["problems"]), up
    assert all(x["shared"] > 227 * 1024 for x in up)
    # everything that ships by default compiles cleanly, int4 included (it once failed: int32 tl.dot)
    default = [x for x in rows if x["source"].startswith("default.json") or x["source"] == "launcher default"]
    assert default and all(not x["problems"] for x in default), [x for x in default if x["problems"]]
    assert {x["format"] for x in default} == {"fp32", "int4", "bf16"}  # bf16: the routing kernels
    assert any(x["wgmma"] for x in default if x["format"] == "int4")  # the 64-row tile uses Hopper MMA
    assert "FAIL" in r.stderr and "shared" in r.stderr


def test_refuses_to_run_under_the_interpreter(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hunyuan_plugins_kernels.compile_report", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=dict(os.environ, TRITON_INTERPRET="1"), timeout=300)
    assert r.returncode == 2 and "TRITON_INTERPRET" in r.stderr
