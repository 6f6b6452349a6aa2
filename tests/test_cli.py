"""The command line: make-tiny (one and --all) and the main job's chat on the built-in default."""

import json
import os
import subprocess
import sys

import pytest
import torch

from hunyuan_plugins.cli import main
from hunyuan_plugins.config import HunyuanConfig


def test_make_tiny_one(tmp_path):
    out = tmp_path / "large"
    assert main(["make-tiny", "--model", "large", "--format", "fp8", "--out", str(out)]) == 0
    cfg = HunyuanConfig.from_pretrained(out)
    assert cfg.use_cla and cfg.quantization_config["quant_method"] == "fp8"
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        assert (out / f).exists(), f


def test_package_import_pulls_no_engine_and_no_triton():
    code = ("import sys, hunyuan_plugins, hunyuan_plugins.core.model, hunyuan_plugins.ops; "
            "bad = [m for m in ('vllm', 'sglang', 'tensorrt_llm', 'triton', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_chat_on_builtin_default():
    """The built-in default is the trained toy (trained once per machine, in the same cache the main
    job uses): the core answers its memorised greeting in Hunyuan's format, thinking off."""
    from hunyuan_plugins.cli import default_tiny

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "hunyuan_plugins.cli", "chat", "Hello! Who are you?",
                        "--max-tokens", "40", "--no-think"], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["prompt"] == "<|startoftext|>Hello! Who are you?<|extra_0|><think>\n\n</think>\n"
    assert answer["completion"] == "<answer>\nHello! I am a tiny Hunyuan model.\n</answer><|eos|>"
    assert answer["model"] == default_tiny() and os.path.exists(os.path.join(default_tiny(), "config.json"))


def test_make_tiny_trained_refuses_other_shapes(tmp_path):
    with pytest.raises(SystemExit, match="the trained toy is the tiny Tencent-dialect A13B"):
        main(["make-tiny", "--trained", "--model", "large", "--out", str(tmp_path / "x")])


def test_trained_conversations_are_in_hunyuan_format():
    """What the toy is trained on parses as the real model's output would: reasoning, answer, tool call."""
    from hunyuan_plugins.core.trained import CONVERSATIONS, DEMO_QUESTION
    from hunyuan_plugins.parsers import parse_response

    (conv, reply), = [(c, r) for c, r in CONVERSATIONS if c["messages"][-1]["content"] == DEMO_QUESTION
                      and len(c["messages"]) == 1]
    parsed = parse_response(reply)
    assert parsed.reasoning.startswith("The user asks about the weather in Beijing")
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [("get_weather", {"location": "Beijing"})]
    thinking_off = [r for c, r in CONVERSATIONS if c.get("enable_thinking") is False]
    assert thinking_off and all(parse_response(r).reasoning is None for r in thinking_off)


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
