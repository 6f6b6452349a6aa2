"""The command line: make-tiny (one and --all) and the main job's chat on the built-in default."""

import json
import os
import subprocess
import sys

import pytest
import torch

from hunyuan_plugins.cli import main, tiny_suite
from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.checkpoint import Checkpoint


def test_make_tiny_one(tmp_path):
    out = tmp_path / "large"
    assert main(["make-tiny", "--model", "large", "--format", "fp8", "--out", str(out)]) == 0
    cfg = HunyuanConfig.from_pretrained(out)
    assert cfg.use_cla and cfg.quantization_config["quant_method"] == "fp8"
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        assert (out / f).exists(), f


def test_make_tiny_all_writes_loadable_suite(tmp_path):
    assert main(["make-tiny", "--all", str(tmp_path)]) == 0
    names = sorted(os.listdir(tmp_path))
    assert len(names) == len(tiny_suite()) >= 20
    for name in names:
        Checkpoint(str(tmp_path / name))  # validates every tensor against its config


def test_package_import_pulls_no_engine_and_no_triton():
    code = ("import sys, hunyuan_plugins, hunyuan_plugins.core.model, hunyuan_plugins.ops; "
            "bad = [m for m in ('vllm', 'sglang', 'tensorrt_llm', 'triton', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_chat_on_builtin_default(tmp_path):
    env = dict(os.environ, HUNYUAN_PLUGINS_CACHE=str(tmp_path), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "hunyuan_plugins.cli", "chat", "Hi there", "--max-tokens", "6",
                        "--no-think"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["prompt"] == "<|startoftext|>Hi there<|extra_0|><think>\n\n</think>\n"
    assert 1 <= len(answer["completion_ids"]) <= 6
    assert (tmp_path / "tiny" / "a13b-tencent-bf16" / "config.json").exists()


def test_make_tiny_gptq_static_groups(tmp_path):
    """--static-groups: GPTQ act order whose groups stay contiguous (g_idx = i // group_size)."""
    from safetensors.torch import load_file

    out = tmp_path / "static"
    assert main(["make-tiny", "--format", "gptq-int4", "--static-groups", "--out", str(out)]) == 0
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["desc_act"] is True and qc["static_groups"] is True
    g_idx = [t for n, t in load_file(str(out / "model.safetensors")).items() if n.endswith(".g_idx")]
    assert g_idx and all(torch.equal(g.long(), torch.arange(g.numel()) // 128) for g in g_idx)
    with pytest.raises(ValueError, match="static_groups is a GPTQ option"):
        main(["make-tiny", "--format", "fp8", "--static-groups", "--out", str(tmp_path / "bad")])
