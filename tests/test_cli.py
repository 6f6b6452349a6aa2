"""The command line: make-tiny (one and --all) and the main job's chat on the built-in default."""

import json
import os
import subprocess
import sys

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
