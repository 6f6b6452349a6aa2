"""Fixtures for the TensorRT-LLM adapter tests.

`trt_standin` installs the TEST-ONLY pure-torch stand-in of TensorRT-LLM 1.2.1's API (trtllm_stand_in.py)
under the real module paths for the duration of a test module, and imports our model classes on
it. Tests that need the real TensorRT-LLM use `real_trtllm` and skip, with the reason, without it.
"""

import importlib
import importlib.metadata
import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def real_trtllm_version():
    try:
        return importlib.metadata.version("tensorrt_llm")
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture(scope="session")
def real_trtllm():
    v = real_trtllm_version()
    if v is None:
        pytest.skip("real TensorRT-LLM is not installed (its PyPI wheels are stubs that download from "
                    "pypi.nvidia.com, unreachable here); this test needs tensorrt_llm==1.2.1 and a GPU")
    if not torch.cuda.is_available():
        pytest.skip(f"TensorRT-LLM {v} is installed but there is no CUDA GPU")
    return v


@pytest.fixture(scope="module")
def trt_standin():
    if real_trtllm_version() is not None:
        pytest.skip("a real TensorRT-LLM is installed: the stand-in must not shadow it")
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import trtllm_stand_in as stand_in

    stand_in.install()
    _forget_model_module()
    # what the adapter's import does when TensorRT-LLM is present (it may have been imported earlier
    # in the session without one): register the config dialect and the model classes
    importlib.import_module("hunyuan_plugins.trtllm").register()
    model = sys.modules["hunyuan_plugins.trtllm.model"]
    yield stand_in, model
    _forget_model_module()
    stand_in.uninstall()


def _forget_model_module():
    """Drop hunyuan_plugins.trtllm.model so the next import re-runs it (and registers on the current
    stand-in): from sys.modules and from its package, or `from ... import model` returns the old one."""
    sys.modules.pop("hunyuan_plugins.trtllm.model", None)
    pkg = sys.modules.get("hunyuan_plugins.trtllm")
    if pkg is not None and "model" in vars(pkg):
        delattr(pkg, "model")
