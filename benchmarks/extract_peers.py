#!/usr/bin/env python
"""Extract the peers' Triton fused-MoE kernels into a git-ignored folder for moe_layer.py.

The GPU machine cannot install anything, and vLLM / SGLang cannot be imported there without their
compiled extensions. Their GEMM kernels are plain ``@triton.jit`` Python, so this copies just those
functions (every top-level ``@triton.jit`` function of the given source file, which brings the
helpers they call) with triton imports in place of the engine's own, into
``<out>/<name>_fused_moe.py``. Run it on a machine with the wheels, carry ``<out>`` along:

    pip download vllm==<version> --no-deps -d /tmp/w && unzip -q /tmp/w/vllm-*.whl -d /tmp/w/vllm
    python benchmarks/extract_peers.py vllm /tmp/w/vllm/vllm/model_executor/layers/fused_moe/fused_moe.py
    pip download sglang==0.5.23 --no-deps -d /tmp/w && unzip -q /tmp/w/sglang-*.whl -d /tmp/w/sglang
    python benchmarks/extract_peers.py sglang <the sglang file that defines fused_moe_kernel>

This is third-party code (Apache-2.0): it stays in ``_peers/`` (git-ignored) and is never committed.
A kernel that needs something this copy lacks (a module constant, an engine helper) fails at import
or at its first call; moe_layer.py then reports that peer as an error and carries on.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

HEADER = '''# Extracted by benchmarks/extract_peers.py from {src}
# Third-party code ({name}); do not commit. Only the @triton.jit functions are kept.
import torch  # noqa: F401
import triton
import triton.language as tl

'''


def _is_jit(fn: ast.FunctionDef) -> bool:
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Attribute) and target.attr in ("jit", "heuristics", "autotune"):
            return True
        if isinstance(target, ast.Name) and target.id in ("jit",):
            return True
    return False


def extract(name: str, source: Path, out_dir: Path) -> Path:
    text = source.read_text()
    tree = ast.parse(text)
    pieces = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and _is_jit(node):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            pieces.append("\n".join(text.splitlines()[start:node.end_lineno]))
    if not any("def fused_moe_kernel(" in p for p in pieces):
        raise SystemExit(f"{source}: no @triton.jit fused_moe_kernel found")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}_fused_moe.py"
    out.write_text(HEADER.format(src=source, name=name) + "\n\n\n".join(pieces) + "\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=("vllm", "sglang"))
    p.add_argument("source", type=Path, help="the peer's python file defining fused_moe_kernel")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "_peers")
    args = p.parse_args(argv)
    print(extract(args.name, args.source, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
