"""In-process checks of the plugin's SGLang glue (no engine started): entry point, registration,
the CPU padding hook, and our parsers driven through SGLang's own parser classes."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from types import SimpleNamespace

import pytest
from conftest import sglang_env


def test_entry_point_is_installed():
    eps = [ep for ep in entry_points(group="sglang.srt.plugins") if ep.value == "hunyuan_plugins.sglang:register"]
    assert len(eps) == 1


def test_register_selects_our_models_package_in_a_fresh_process():
    code = ("import os; from sglang.srt.plugins import load_plugins; load_plugins(); "
            "from sglang.srt.models.registry import ModelRegistry as R; "
            "print(os.environ.get('SGLANG_EXTERNAL_MODEL_PACKAGE')); "
            "print(*[R.resolve_model_cls([a])[0].__module__ for a in "
            "('HunYuanMoEV1ForCausalLM', 'HunYuanForCausalLM', 'HunYuanDenseV1ForCausalLM')])")
    out = subprocess.run([sys.executable, "-c", code], env=sglang_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "hunyuan_plugins.sglang.models"
    assert lines[-1].split() == ["hunyuan_plugins.sglang.model"] * 3


def test_cpu_padding_hook():
    from hunyuan_plugins.sglang import _cpu_padding_hook

    calls = []
    original = lambda mc, name, pad: calls.append((name, pad)) or mc  # noqa: E731
    cfg = SimpleNamespace(hf_config=SimpleNamespace(moe_intermediate_size=[256, 256], intermediate_size=512))
    assert _cpu_padding_hook(original, cfg, "moe_intermediate_size", 64) is cfg and calls == []
    assert cfg.hf_config.moe_intermediate_size == [256, 256]
    _cpu_padding_hook(original, cfg, "intermediate_size", 64)
    assert calls == [("intermediate_size", 64)]  # plain ints still go through SGLang's own padding
    with pytest.raises(ValueError, match="not divisible by 96"):
        _cpu_padding_hook(original, cfg, "moe_intermediate_size", 96)


TEXT = ('<think>\nplan <tool_calls>[{"name": "x", "arguments": {}}]</tool_calls>\n</think>\n<answer>\n'
        'Sure.\n<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>\n</answer>')


def _parsers():
    from hunyuan_plugins.sglang import parsers

    parsers.register()
    from sglang.srt.entrypoints.openai.protocol import Function, Tool
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    tools = [Tool(type="function", function=Function(name="get_weather", parameters={"type": "object"}))]
    return ReasoningParser, FunctionCallParser, tools


def test_parsers_non_streaming_through_sglang_classes():
    ReasoningParser, FunctionCallParser, tools = _parsers()
    reasoning, content = ReasoningParser("hunyuan_a13b", force_reasoning=True).parse_non_stream(TEXT)
    assert reasoning.startswith("plan <tool_calls>")  # a call inside <think> is reasoning
    fcp = FunctionCallParser(tools, "hunyuan_a13b")
    assert fcp.has_tool_call(content)
    normal, calls = fcp.parse_non_stream(content)
    assert normal == "Sure."
    assert [(c.name, json.loads(c.parameters)) for c in calls] == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize("step", [1, 3, 7])
def test_parsers_streaming_any_split(step):
    ReasoningParser, FunctionCallParser, tools = _parsers()
    rp, fcp = ReasoningParser("hunyuan_a13b", stream_reasoning=True), FunctionCallParser(tools, "hunyuan_a13b")
    reasoning, content, calls = "", "", []
    for i in range(0, len(TEXT), step):
        r, c = rp.parse_stream_chunk(TEXT[i:i + step])
        reasoning += r or ""
        normal, items = fcp.parse_stream_chunk(c or "")
        content += normal
        calls += items
    r, c = rp.parse_stream_end()
    reasoning += r or ""
    assert reasoning.strip().startswith("plan <tool_calls>")
    assert content.strip() == "Sure."
    assert [(c.name, json.loads(c.parameters)) for c in calls] == [("get_weather", {"city": "Paris"})]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=sglang_env(), capture_output=True, text=True, timeout=300)


def test_model_import_error_is_loud_on_the_env_var_path():
    """SGLang swallows model-module import errors; ours must surface (no fall-back to the built-in)."""
    out = _run("import os, sys; os.environ['SGLANG_EXTERNAL_MODEL_PACKAGE'] = 'hunyuan_plugins.sglang.models'; "
               "sys.modules['hunyuan_plugins.sglang.model'] = None; "  # any import of it now fails
               "import sglang.srt.models.registry")
    assert out.returncode != 0
    assert "hunyuan_plugins.sglang.model" in out.stderr


def test_model_import_error_is_loud_on_the_direct_path():
    out = _run("import sys; import sglang.srt.models.registry as r; "
               "sys.modules['hunyuan_plugins.sglang.model'] = None; "
               "from hunyuan_plugins.sglang import _register_models; print(_register_models()); "
               "r.ModelRegistry.models['HunYuanMoEV1ForCausalLM'](config=None)")
    assert "via ModelRegistry.models" in out.stdout
    assert out.returncode != 0
    assert "RuntimeError: hunyuan_plugins could not import its SGLang model classes" in out.stderr


def test_quant_configs_accept_fp32_and_choose_kernels_per_layer_kind():
    """Our SGLang quant configs (what the plugin's hook hands SGLang for our classes), in a fresh
    CPU process: fp32 accepted (SGLang's own refuse it), per layer kind SGLang's kernel or ours,
    the ignore list applied to fused modules, HUNYUAN_MOE_BACKEND honoured and checked."""
    code = r'''
import json, os, torch
from types import SimpleNamespace
from sglang.srt.layers.quantization.fp8 import Fp8Config
from sglang.srt.layers.quantization.gptq import CPUGPTQConfig
from hunyuan_plugins.quant import QuantSpec
from hunyuan_plugins.sglang.model import HunyuanForCausalLMBase
from hunyuan_plugins.sglang.quant_methods import build_quant_config
packed = HunyuanForCausalLMBase.packed_modules_mapping
fp8 = {"quant_method": "fp8", "activation_scheme": "static",
       "ignored_layers": ["lm_head", "model.layers.0.mlp.gate.wg"]}
gptq = QuantSpec("gptq", 128, True).to_hf()
out = {"sglang_fp8_dtypes": [str(d) for d in Fp8Config.get_supported_act_dtypes()],
       "sglang_gptq_dtypes": [str(d) for d in CPUGPTQConfig.get_supported_act_dtypes()]}
for name, qc in (("fp8", fp8), ("gptq", gptq)):
    c = build_quant_config(SimpleNamespace(quantization_config=qc), torch.float32, packed)
    out[name] = {"type": type(c).__mro__[2].__name__, "fp32": torch.float32 in c.get_supported_act_dtypes(),
                 "linear": c.linear_choice.kernel, "moe": c.moe_choice.kernel, "moe_why": c.moe_choice.reason,
                 "skip": [c.is_skipped(p) for p in ("lm_head", "model.layers.0.mlp.gate.wg",
                          "model.layers.0.self_attn.qkv_proj", "model.layers.1.mlp.experts")]}
os.environ["HUNYUAN_MOE_BACKEND"] = "engine"
try:
    build_quant_config(SimpleNamespace(quantization_config=fp8), torch.float32, packed)
    out["engine"] = "accepted"
except ValueError as e:
    out["engine"] = str(e)
print("OUT " + json.dumps(out))
'''
    res = _run(code)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("OUT "))[4:])
    assert "torch.float32" not in out["sglang_fp8_dtypes"] + out["sglang_gptq_dtypes"]  # why the hook exists
    assert out["fp8"] == {"type": "Fp8Config", "fp32": True, "linear": "hunyuan::linear_fp8",
                          "moe": "hunyuan::moe_experts_fp8", "moe_why": "sglang has no fp8_w8a8 MoE kernel on cpu",
                          "skip": [True, True, False, False]}
    assert out["gptq"]["type"] == "GPTQConfig" and out["gptq"]["fp32"]
    assert (out["gptq"]["linear"], out["gptq"]["moe"]) == ("hunyuan::linear_gptq", "hunyuan::moe_experts_int4")
    assert out["gptq"]["skip"] == [True, True, False, False]
    assert "HUNYUAN_MOE_BACKEND=engine" in out["engine"] and "fp8_w8a8" in out["engine"]
