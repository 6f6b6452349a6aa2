"""The serve wrapper, the --custom_module_dirs package, and tests that need the real TensorRT-LLM.

The real-TensorRT-LLM tests skip with the reason when tensorrt_llm==1.2.x (and a GPU) is absent,
which is always the case on our CI machines.
"""

import os

import pytest
import torch

from hunyuan_plugins.trtllm import plugin_module_dir
from hunyuan_plugins.trtllm.cli import serve_argv

PROMPT = [1, 17, 42, 99, 5, 300, 77, 12, 250, 8]


def test_serve_argv_adds_custom_module_dir():
    argv = serve_argv(["/m", "--tp_size", "2"])
    assert argv[:4] == ["trtllm-serve", "/m", "--tp_size", "2"]
    assert argv[-2:] == ["--custom_module_dirs", plugin_module_dir()]
    assert serve_argv(["/m", "--custom_module_dirs", "/x"]).count("--custom_module_dirs") == 1


def test_custom_module_dir_is_a_package_importing_ours():
    d = plugin_module_dir()
    init = open(os.path.join(d, "__init__.py")).read()
    assert "from hunyuan_plugins.trtllm import register" in init and "register()" in init
    # TRT-LLM puts the parent on sys.path and imports the directory name: nothing else lives there
    assert sorted(f for f in os.listdir(os.path.dirname(d)) if not f.startswith("__")) == ["hunyuan_trtllm_plugin"]


def _llm_tokens(path, tp=1):
    from tensorrt_llm import LLM, SamplingParams

    import hunyuan_plugins.trtllm  # noqa: F401  (registers our classes)

    llm = LLM(model=path, backend="pytorch", tensor_parallel_size=tp, trust_remote_code=True)
    out = llm.generate([PROMPT], SamplingParams(max_tokens=8, temperature=0.0), use_tqdm=False)
    return list(out[0].outputs[0].token_ids)


@pytest.mark.parametrize("model", ["a13b", "large", "dense"])
def test_real_trtllm_greedy_matches_reference(real_trtllm, tiny, tmp_path, model):
    from hunyuan_plugins.core.model import generate, load_model
    from hunyuan_plugins.trtllm.build import build

    src = tiny(model)
    build(src, str(tmp_path / "out"), progress=False)
    ref = generate(load_model(src, torch.bfloat16, "cuda"), PROMPT, 8)
    assert _llm_tokens(str(tmp_path / "out" / "pytorch")) == ref


def test_real_trtllm_registry_resolves_ours(real_trtllm):
    from tensorrt_llm._torch.models.modeling_utils import MODEL_CLASS_MAPPING

    import hunyuan_plugins.trtllm  # noqa: F401

    for arch in ("HunYuanMoEV1ForCausalLM", "HunYuanForCausalLM", "HunYuanDenseV1ForCausalLM"):
        assert MODEL_CLASS_MAPPING[arch].__module__ == "hunyuan_plugins.trtllm.model"
