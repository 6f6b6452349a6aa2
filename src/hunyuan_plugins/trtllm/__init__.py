"""TensorRT-LLM adapter (pinned: TensorRT-LLM 1.2.1, PyTorch backend) and engine builder.

* ``import hunyuan_plugins.trtllm`` registers our ``HunYuanMoEV1ForCausalLM``, ``HunYuanForCausalLM``
  (CLA) and ``HunYuanDenseV1ForCausalLM`` with TensorRT-LLM's ``register_auto_model``, and Tencent's
  ``model_type: "hunyuan"`` with transformers' ``AutoConfig``, when TensorRT-LLM is installed; then
  ``LLM(model=...)`` uses them. A registration failure is an ImportError, never a warning. For ``trtllm-serve`` pass
  ``--custom_module_dirs`` :func:`plugin_module_dir` (or use ``hunyuan-trtllm serve``).
* ``hunyuan-trtllm-build`` (:mod:`hunyuan_plugins.trtllm.build`) converts a checkpoint; it needs
  only torch and safetensors.

Every ``tensorrt_llm`` import of this project lives in this package (``_api.py``).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from hunyuan_plugins.trtllm.convert import TRTLLM_PINNED_VERSION

__all__ = ["TRTLLM_PINNED_VERSION", "plugin_module_dir", "register", "trtllm_available"]

def trtllm_available() -> bool:
    if "tensorrt_llm" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("tensorrt_llm") is not None
    except (ImportError, ValueError):
        return False


def plugin_module_dir() -> str:
    """Directory for ``trtllm-serve --custom_module_dirs``: a one-line package importing this one."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "custom_module", "hunyuan_trtllm_plugin")


def register() -> list[str]:
    """Import the model classes, which registers them; returns the registered architecture names."""
    if not trtllm_available():
        raise ImportError(f"TensorRT-LLM is not installed; hunyuan_plugins.trtllm targets tensorrt_llm=="
                          f"{TRTLLM_PINNED_VERSION} (pip install 'hunyuan-plugins[trtllm]' on a machine with "
                          "access to pypi.nvidia.com)")
    # Tencent's model_type "hunyuan" (A13B's GitHub config, every Hunyuan-Large config) is unknown to
    # transformers; TensorRT-LLM loads configs with AutoConfig, so register ours (as for vLLM and SGLang)
    from hunyuan_plugins import hf_config

    hf_config.register()
    from hunyuan_plugins.trtllm import model

    return list(model.REGISTERED)


if trtllm_available() and os.environ.get("HUNYUAN_TRTLLM_NO_REGISTER") != "1":
    try:
        register()
    except Exception as e:  # loud: TensorRT-LLM's own classes would then load our checkpoints wrongly
        raise ImportError(
            f"hunyuan_plugins.trtllm: TensorRT-LLM is installed, but registering the Hunyuan model classes with it "
            f"failed ({e!r}). Without them TensorRT-LLM loads Hunyuan checkpoints with its built-in classes, "
            "which cannot read the tensors hunyuan-trtllm-build writes and have no CLA. This adapter targets "
            f"tensorrt_llm=={TRTLLM_PINNED_VERSION}; set HUNYUAN_TRTLLM_NO_REGISTER=1 to import only the builder."
        ) from e
