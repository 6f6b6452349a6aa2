"""Shared fixtures: tiny generated checkpoints, written once per test session."""

import os
import shutil

# Triton kernels run in Triton's interpreter on machines without a CUDA GPU (CI). The variable
# must be set before anything imports triton.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from hunyuan_plugins.core.tiny import make_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """tiny(model, dialect="tencent", fmt="bf16", **kw) -> path of a cached tiny checkpoint."""
    root = tmp_path_factory.mktemp("tiny")
    made: dict[tuple, str] = {}

    def get(model: str, dialect: str = "tencent", fmt: str = "bf16", **kw) -> str:
        key = (model, dialect, fmt, tuple(sorted(kw.items())))
        if key not in made:
            name = "-".join([model, dialect, fmt] + [f"{k}{v}" for k, v in sorted(kw.items())])
            made[key] = make_tiny(os.path.join(root, name), model, dialect, fmt, **kw)
        return made[key]

    return get
