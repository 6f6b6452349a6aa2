"""Kernel tests run the Triton kernels on CPU in Triton's interpreter (TRITON_INTERPRET=1, set by
the root conftest before triton is imported) or on a CUDA GPU when one is present."""

import os

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton==3.7.1)")

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    raise pytest.UsageError("no CUDA GPU: run the kernel tests with TRITON_INTERPRET=1 (tests/conftest.py sets it)")
