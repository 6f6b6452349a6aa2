"""Tile configs: JSON files keyed by (op, E, N, K, dtype, device), with a default when none matches.

A config file ``configs/<op>.json`` looks like::

    {"E=64,N=3072,K=4096,dtype=bf16,device=NVIDIA_H100_80GB_HBM3":
        {"1": {"BLOCK_M": 16, ...}, "64": {...}, "1024": {...}}}

The inner keys are token counts M; the entry whose M is nearest to the call's M is used (as in
vLLM). Only defaults ship: no GPU was available to tune (docs/kernels.md). ``default.json``
holds the fallback rules (see ``default_config``); every GPU rule is compiled for sm_90a by
``compile_report`` in CI, which fails on one that does not compile, spills or overflows shared memory.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch

CONFIG_DIR = Path(__file__).parent / "configs"
# Environment override: a directory searched before the shipped one (for tuning runs).
CONFIG_DIR_ENV = "HUNYUAN_KERNEL_CONFIG_DIR"

DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
}


def interpreting() -> bool:
    """True when Triton runs in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "_")
    return device.type


def config_key(E: int, N: int, K: int, dtype: str, device: str) -> str:
    return f"E={E},N={N},K={K},dtype={dtype},device={device}"


@functools.lru_cache(maxsize=None)
def _load(name: str) -> dict:
    dirs = [Path(p) for p in os.environ.get(CONFIG_DIR_ENV, "").split(os.pathsep) if p] + [CONFIG_DIR]
    merged: dict = {}
    for d in reversed(dirs):  # earlier directories win
        path = d / f"{name}.json"
        if path.is_file():
            merged.update(json.loads(path.read_text()))
    return merged


def lookup(op: str, M: int, E: int, N: int, K: int, dtype: str, device: torch.device) -> dict:
    """Tile config for one launch: tuned entry nearest to M if present, else the default rule."""
    table = _load(op).get(config_key(E, N, K, dtype, device_name(device)))
    if table:
        best = min(table, key=lambda m: abs(int(m) - M))
        return dict(table[best])
    return default_config(M, E, device, dtype)


RULE_FIELDS = ("max_m_per_expert", "dtypes")  # rule metadata in default.json, not tile fields


def reachable_rules(rule_set: str, dtype: str) -> list[tuple[int, dict]]:
    """(index in default.json, rule) for the rules of ``rule_set`` ("gpu" / "interpreter") a launch
    of config-key dtype ``dtype`` can reach: those whose ``dtypes`` (prefixes; absent = every dtype)
    match, in order, up to the first without ``max_m_per_expert`` (a catch-all)."""
    out = []
    for i, rule in enumerate(_load("default")[rule_set]):
        if "dtypes" in rule and not any(dtype.startswith(p) for p in rule["dtypes"]):
            continue
        out.append((i, rule))
        if rule.get("max_m_per_expert") is None:
            return out
    raise AssertionError(f"default.json {rule_set}: no catch-all rule (without max_m_per_expert) for {dtype}")


def tile_fields(rule: dict) -> dict:
    return {k: v for k, v in rule.items() if k not in RULE_FIELDS}


def default_config(M: int, E: int, device: torch.device, dtype: str = "bf16") -> dict:
    """Shipped fallback: the first reachable rule (:func:`reachable_rules`) whose
    ``max_m_per_expert`` * E >= M (absent = any M) wins. The interpreter gets big tiles (its cost is
    per program and per op)."""
    rule_set = "interpreter" if (device.type == "cpu" or interpreting()) else "gpu"
    for _, rule in reachable_rules(rule_set, dtype):
        if rule.get("max_m_per_expert") is None or M <= rule["max_m_per_expert"] * E:
            return tile_fields(rule)
    raise AssertionError("unreachable: reachable_rules ends with a catch-all")
