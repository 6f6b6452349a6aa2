"""Imports run one way: adapters -> core -> ops -> kernels (quant/ and config.py below the core).

Every import statement of every module is read from the source (module level and inside
functions alike), so a lazy import that points the wrong way fails here too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "hunyuan_plugins"
KERNELS = ROOT / "kernels" / "hunyuan_plugins_kernels"
ENGINES = ("vllm", "sglang", "tensorrt_llm")


def _module_name(path: Path, root: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Absolute names of everything `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            out.add(prefix)
            out.update(f"{prefix}.{alias.name}" for alias in node.names)
    return out


def imports_under(root: Path, package: str) -> dict[str, set[str]]:
    return {_module_name(p, root, package): imports_of(p, _module_name(p, root, package))
            for p in sorted(root.rglob("*.py"))}


def _offenders(graph: dict[str, set[str]], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{mod} imports {name}" for mod, names in graph.items() for name in names
                  if any(name == f or name.startswith(f + ".") for f in forbidden))


def test_the_kernel_library_imports_nothing_of_ours():
    graph = imports_under(KERNELS, "hunyuan_plugins_kernels")
    assert graph, "no kernel modules found"
    assert _offenders(graph, ("hunyuan_plugins",) + ENGINES) == []


def test_ops_import_neither_the_core_nor_an_adapter():
    graph = {m: n for m, n in imports_under(PKG, "hunyuan_plugins").items() if m.startswith("hunyuan_plugins.ops")}
    assert set(graph) == {"hunyuan_plugins.ops", "hunyuan_plugins.ops.reference", "hunyuan_plugins.ops.backend"}
    assert _offenders(graph, ("hunyuan_plugins.core", "hunyuan_plugins.vllm", "hunyuan_plugins.sglang",
                              "hunyuan_plugins.trtllm") + ENGINES) == []


def test_quant_imports_neither_the_core_nor_the_ops_nor_an_adapter():
    graph = {m: n for m, n in imports_under(PKG, "hunyuan_plugins").items() if m.startswith("hunyuan_plugins.quant")}
    assert {"hunyuan_plugins.quant", "hunyuan_plugins.quant.fp8", "hunyuan_plugins.quant.gptq",
            "hunyuan_plugins.quant.stream"} <= set(graph)
    assert _offenders(graph, ("hunyuan_plugins.core", "hunyuan_plugins.ops", "hunyuan_plugins.vllm",
                              "hunyuan_plugins.sglang", "hunyuan_plugins.trtllm") + ENGINES) == []


def test_the_core_imports_no_engine_and_no_adapter():
    graph = {m: n for m, n in imports_under(PKG, "hunyuan_plugins").items()
             if not m.startswith(("hunyuan_plugins.vllm", "hunyuan_plugins.sglang", "hunyuan_plugins.trtllm"))}
    assert _offenders(graph, ("hunyuan_plugins.vllm", "hunyuan_plugins.sglang", "hunyuan_plugins.trtllm")
                      + ENGINES) == []


def test_no_adapter_imports_another():
    graph = imports_under(PKG, "hunyuan_plugins")
    for adapter in ("vllm", "sglang", "trtllm"):
        mine = {m: n for m, n in graph.items() if m.startswith(f"hunyuan_plugins.{adapter}")}
        others = tuple(f"hunyuan_plugins.{a}" for a in ("vllm", "sglang", "trtllm") if a != adapter)
        assert _offenders(mine, others) == [], adapter


def test_the_walker_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text("def f():\n    from . import sibling\n    import hunyuan_plugins.core.model\n")
    names = imports_of(pkg / "m.py", "p.m")
    assert {"p.sibling", "hunyuan_plugins.core.model"} <= names
    assert _offenders({"p.m": names}, ("hunyuan_plugins.core",)) == ["p.m imports hunyuan_plugins.core.model"]


@pytest.mark.parametrize("module", ["hunyuan_plugins.ops", "hunyuan_plugins.quant"])
def test_at_run_time_the_ops_and_quant_load_no_core(module):
    """(That no import loads an engine or triton is test_cli.py's test.)"""
    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m.startswith('hunyuan_plugins.core')); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
