"""benchmarks/moe_layer.py smoke test: its --check mode runs every implementation it would time
(ours through torch.ops.hunyuan, here routed through the Triton kernels in the interpreter, and
the torch._grouped_mm peer) at tiny shapes against the torch references, without a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "moe_layer.py"


def _run(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_gpu_it_says_so():
    r = _run("--out", "/nonexistent-never-written")
    assert r.returncode == 2
    assert "no CUDA GPU" in r.stderr and "--check" in r.stderr


def test_check_mode(tmp_path):
    r = _run("--check", "--tokens", "1,33", "--out", str(tmp_path),
             env={"TRITON_INTERPRET": "1", "HUNYUAN_TRITON_ON_CPU": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    (result,) = tmp_path.glob("moe_layer-check-*.json")
    data = json.loads(result.read_text())
    rows = data["rows"]
    assert {row["dtype"] for row in rows} == {"bf16", "fp8", "fp8_block", "int4"}
    assert sorted({row["T"] for row in rows}) == [1, 33] and len(rows) == 8
    for row in rows:
        assert row["ours_correct"], row
        assert "ours_us" not in row  # --check never times
    # the Triton kernels ran (the reference compared with itself would be exactly 0 everywhere)
    assert any(row["ours_rel_err"] > 0 for row in rows)
    dense = [row for row in rows if row["dtype"] == "bf16"]
    assert all(row["torch._grouped_mm_correct"] for row in dense)
    assert data["environment"]["torch"] == torch.__version__
    assert (tmp_path / result.name.replace(".json", ".md")).is_file()


def test_extract_peers(tmp_path):
    """extract_peers keeps only the @triton.jit functions; moe_layer loads the result."""
    src = tmp_path / "fused_moe.py"
    src.write_text(
        "from vllm.triton_utils import tl, triton\nimport vllm._C\n\n"
        "@triton.jit\ndef helper(x):\n    return x\n\n"
        "@triton.jit\ndef fused_moe_kernel(a_ptr, N, BLOCK_SIZE_M: tl.constexpr):\n    pass\n\n"
        "def invoke_fused_moe_kernel():\n    vllm._C.ops.something()\n")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "extract_peers.py"), "vllm", str(src),
                        "--out", str(tmp_path / "peers")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "peers" / "vllm_fused_moe.py").read_text()
    assert "def helper" in text and "def fused_moe_kernel" in text and "invoke_fused_moe_kernel" not in text
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import moe_layer
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    mods = moe_layer.load_peer_modules(str(tmp_path / "peers"))
    assert set(mods) == {"vllm"}
    kernel = mods["vllm"].fused_moe_kernel
    assert moe_layer._bind(kernel, {"a_ptr": 1, "N": 2, "BLOCK_SIZE_M": 16}) == {"a_ptr": 1, "N": 2, "BLOCK_SIZE_M": 16}
    with pytest.raises(TypeError, match="BLOCK_SIZE_M"):
        moe_layer._bind(kernel, {"a_ptr": 1, "N": 2})
