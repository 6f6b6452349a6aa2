"""The engine a test directory runs needs to import, or the run stops with an error that says so.

A missing or broken engine must fail the run, never turn it into skips (a green run that tested
nothing). ``bash ci/test.sh`` runs each engine's directory in that engine's own venv.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest


def require_engine(module: str, engine: str, tests_dir: str | Path, venv: str) -> None:
    """Import `module` or raise pytest.UsageError naming the engine, the exception and how to run
    `tests_dir`. A test directory named like the engine is importable as an empty namespace
    package of that name (``tests/`` is on sys.path): a top-level package without a file counts
    as missing (sub-packages may be namespace packages in a real install: ``sglang.srt`` is)."""
    top = module.split(".")[0]
    try:
        package = importlib.import_module(top)
        if getattr(package, "__file__", None) is None:
            sys.modules.pop(top, None)
            raise ModuleNotFoundError(f"No module named {top!r} (only the namespace package "
                                      f"{list(getattr(package, '__path__', []))} was found)")
        importlib.import_module(module)
    except Exception as error:  # a broken install (any exception) is reported like a missing one
        raise pytest.UsageError(
            f"{engine} cannot be imported by {sys.executable}: {error!r}\n"
            f"tests/{Path(tests_dir).name} runs on {engine}: run `bash ci/test.sh` (it builds the engine venvs "
            f"and runs each suite in its own), or directly\n"
            f"    ~/.cache/hunyuan-plugins/venvs/{venv}/bin/python -m pytest -q -p no:cacheprovider "
            f"tests/{Path(tests_dir).name}") from error
