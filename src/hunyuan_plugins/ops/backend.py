"""Which MoE implementation a Hunyuan layer runs in an engine: the engine's own fused MoE or
``torch.ops.hunyuan.*`` (our Triton kernels on CUDA, the torch reference on CPU).

``HUNYUAN_MOE_BACKEND`` selects, the same in every engine:

* ``engine``  -- the engine's kernel; an error where the engine has none for the format and platform;
* ``hunyuan`` -- ours, always;
* ``auto`` (default) -- ours where the engine has no kernel for the format on this platform, or
  where a benchmark committed for this device (``measured.json`` beside this file, written from the
  GPU machine's results) shows ours faster than that engine's for the format; the engine's otherwise.

Each adapter knows whether its engine has a kernel (it reads the engine) and asks here once per
layer kind; the answer carries the reason for the start-up log line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache

MOE_BACKEND_ENV = "HUNYUAN_MOE_BACKEND"
CHOICES = ("engine", "hunyuan", "auto")
#: MoE weight formats, as the kernels' config tags name them.
FORMATS = ("fp32", "fp16", "bf16", "fp8_w8a8", "int4_w4a16")


@dataclass(frozen=True)
class MoEBackend:
    name: str    # "engine" | "hunyuan"
    reason: str  # for the start-up log line

    @property
    def ours(self) -> bool:
        return self.name == "hunyuan"


@lru_cache(maxsize=None)
def _measured() -> dict:
    """device name -> format -> engine -> speed-up of ours over that engine's MoE (>1: ours faster)."""
    with open(os.path.join(os.path.dirname(__file__), "measured.json")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def measured_speedup(engine: str, fmt: str, device_name: str | None) -> float | None:
    """Committed speed-up of our MoE over ``engine``'s for ``fmt`` on ``device_name`` (None: not measured)."""
    if device_name is None:
        return None
    value = _measured().get(device_name, {}).get(fmt, {}).get(engine)
    return None if value is None else float(value)


def moe_backend(engine: str, fmt: str, *, engine_has_kernel: bool, device_name: str | None = None) -> MoEBackend:
    """The MoE implementation for a layer of weight format ``fmt`` (one of :data:`FORMATS`) in
    ``engine`` on this platform (``device_name``: e.g. torch.cuda.get_device_name(); None on CPU)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown MoE weight format {fmt!r}; known: {', '.join(FORMATS)}")
    choice = os.environ.get(MOE_BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{MOE_BACKEND_ENV}={os.environ[MOE_BACKEND_ENV]!r} is not one of {', '.join(CHOICES)}")
    where = device_name or "cpu"
    if choice == "hunyuan":
        return MoEBackend("hunyuan", f"{MOE_BACKEND_ENV}=hunyuan")
    if choice == "engine":
        if not engine_has_kernel:
            raise ValueError(f"{MOE_BACKEND_ENV}=engine, but {engine} has no {fmt} MoE kernel on {where}; "
                             f"use {MOE_BACKEND_ENV}=hunyuan or auto")
        return MoEBackend("engine", f"{MOE_BACKEND_ENV}=engine")
    if not engine_has_kernel:
        return MoEBackend("hunyuan", f"{engine} has no {fmt} MoE kernel on {where}")
    speedup = measured_speedup(engine, fmt, device_name)
    if speedup is not None and speedup > 1.0:
        return MoEBackend("hunyuan", f"measured {speedup:.2f}x faster than {engine}'s on {where}")
    return MoEBackend("engine", f"{engine}'s kernel" + ("" if speedup is None else
                                                       f" (measured {speedup:.2f}x for ours on {where})")
                      + (", no benchmark of ours on this device" if speedup is None else ""))
