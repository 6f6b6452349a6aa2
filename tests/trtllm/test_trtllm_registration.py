"""A TensorRT-LLM that is installed but rejects our registration stops the import with an error
naming the cause (it used to be a warning, after which TensorRT-LLM silently used its own Hunyuan
classes, which cannot read the builder's tensors). HUNYUAN_TRTLLM_NO_REGISTER=1 imports the builder."""

import os
import subprocess
import sys


def _import(tmp_path, **env):
    fake = tmp_path / "tensorrt_llm"
    fake.mkdir(exist_ok=True)  # a tensorrt_llm without the PyTorch backend's modules
    (fake / "__init__.py").write_text("__version__ = '0.0-broken'\n")
    code = "import hunyuan_plugins.trtllm.build; print('imported')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]), **env))


def test_registration_failure_is_an_import_error(tmp_path):
    r = _import(tmp_path)
    assert r.returncode != 0
    assert "registering the Hunyuan model classes with it failed" in r.stderr
    assert "tensorrt_llm._torch" in r.stderr and "HUNYUAN_TRTLLM_NO_REGISTER=1" in r.stderr


def test_no_register_imports_the_builder(tmp_path):
    r = _import(tmp_path, HUNYUAN_TRTLLM_NO_REGISTER="1")
    assert r.returncode == 0 and "imported" in r.stdout, r.stderr


def test_tencent_model_type_loads_through_autoconfig(tiny):
    """TensorRT-LLM loads the HF config with AutoConfig (trust_remote_code=True, but a checkpoint
    without Tencent's remote code has nothing to trust): importing our adapter registers Tencent's
    model_type "hunyuan", as the vLLM and SGLang plugins do. Fresh interpreter: nothing else of ours
    has registered it there."""
    path = tiny("large", "tencent")
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {here!r}); import trtllm_stand_in as s; s.install()\n"
            "import transformers\n"
            "try:\n"
            f"    s.ModelConfig.from_pretrained({path!r})\n"
            "except ValueError as e:\n"
            "    print('unregistered:', 'hunyuan' in str(e))\n"
            "import hunyuan_plugins.trtllm\n"
            f"mc = s.ModelConfig.from_pretrained({path!r})\n"
            "print('loaded:', type(mc.pretrained_config).__name__, mc.pretrained_config.architectures[0])\n"
            "print('built:', type(s.AutoModelForCausalLM.from_config(mc)).__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert r.returncode == 0, r.stderr
    assert "unregistered: True" in r.stdout
    assert "loaded: HunYuanConfig HunYuanForCausalLM" in r.stdout and "built: HunYuanForCausalLM" in r.stdout
