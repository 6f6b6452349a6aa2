"""Quantized Hunyuan checkpoints: the parsed spec, one module per format, and how each one runs.

* :class:`QuantSpec` -- a checkpoint's ``quantization_config``, parsed and validated (every bad
  field raises ``ValueError`` naming ``quantization_config.<field>``).
* :data:`FORMATS` -- the registry, keyed by ``quant_method``: each format is a :class:`QuantFormat`
  in its own module (``fp8.py``: Tencent static per-tensor W8A8; ``gptq.py``: GPTQ-Int4 W4A16).
  A format owns its tensor suffixes and dtypes, shapes, config fields, (de)quantisation and
  activation semantics. Adding one = a new module that calls :func:`register`, plus its import at
  the bottom of this file.
* :func:`plan` -- THE rule deciding how a checkpoint's format runs (quantized through the engine's
  quantized layers, or dequantised at load). Every adapter calls it once per model build.
* ``stream.py`` -- load-time dequantisation of a canonical weight stream.

Nothing here imports an engine, the core or the ops.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor

#: Modules never quantized unless the config says otherwise: the LM head and every MoE router
#: (``mlp.gate.wg``). ``*`` matches exactly one dotted component (see :meth:`QuantSpec.is_quantized`).
DEFAULT_IGNORED = ("lm_head", "model.layers.*.mlp.gate.wg")

#: Shapes accepted for a per-tensor scalar (we write ``()``).
SCALAR_SHAPES = ((), (1,))


def is_scalar_shape(shape) -> bool:
    """True for the per-tensor scale shapes we accept: ``()`` or ``(1,)``."""
    return tuple(shape) in SCALAR_SHAPES


# --------------------------------------------------------------------------- formats


class QuantFormat:
    """One quantized checkpoint format. Subclass, fill in the class attributes, :func:`register`.

    ``suffixes`` maps each tensor suffix of one quantized linear ``<prefix>`` to its allowed dtypes.
    """

    method: ClassVar[str]                               # quantization_config.quant_method
    tiny_name: ClassVar[str]                            # `make-tiny --format` name
    ignore_field: ClassVar[str]                         # config key listing unquantized modules
    suffixes: ClassVar[Mapping[str, tuple[torch.dtype, ...]]]
    activations: ClassVar[str]                          # what the linear does to its input (docs, logs)

    def parse(self, qc: Mapping[str, Any]) -> dict[str, Any]:
        """Validate the method-specific fields of ``qc``: the QuantSpec fields they set
        (``group_size``, ``desc_act``); a bad field raises ValueError naming it."""
        raise NotImplementedError

    def to_hf(self, spec: QuantSpec) -> dict[str, Any]:
        """The ``quantization_config`` this format's producer (AngelSlim) writes for ``spec``."""
        raise NotImplementedError

    def tiny_spec(self, ignored: tuple[str, ...]) -> QuantSpec:
        """The spec `make-tiny` writes (like the released checkpoints)."""
        raise NotImplementedError

    def shapes(self, spec: QuantSpec | None, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
        """Tensor suffix -> shape for one quantized linear ``[out_features, in_features]``."""
        raise NotImplementedError

    def is_quantized_tensor(self, suffix: str, dtype: torch.dtype) -> bool:
        """True when a stored ``<prefix>.<suffix>`` of ``dtype`` belongs to a quantized linear
        (as opposed to a plain ``weight`` of an ignored module)."""
        return suffix in self.suffixes and (suffix != "weight" or dtype in self.suffixes["weight"])

    def dequantize(self, spec: QuantSpec | None, tensors: Mapping[str, Tensor], dtype: torch.dtype) -> Tensor:
        """Dense weight [out, in] of one quantized linear from its tensors by suffix."""
        raise NotImplementedError

    def quantize(self, spec: QuantSpec, prefix: str, w: Tensor) -> dict[str, Tensor]:
        """Tensors ``{<prefix>.<suffix>: tensor}`` of one linear ``w`` [out, in] (tiny checkpoints)."""
        raise NotImplementedError

    #: suffixes whose *values* :meth:`check_values` checks (read at validation, so keep them small)
    checked_suffixes: ClassVar[tuple[str, ...]] = ()

    def check_values(self, spec: QuantSpec, suffix: str, tensor: Tensor) -> str | None:
        """What is wrong with the values of a stored ``<prefix>.<suffix>`` (one of
        :attr:`checked_suffixes`) under ``spec``, or None when they are consistent with it."""
        return None

    def require(self, tensors: Mapping[str, Tensor], needed: tuple[str, ...]) -> None:
        missing = [s for s in needed if s not in tensors]
        if missing:
            raise ValueError(f"{self.method} linear is missing tensor(s) with suffix: {', '.join(missing)}")


#: quant_method -> format. Read it through :func:`get_format`.
FORMATS: dict[str, QuantFormat] = {}


def register(cls: type[QuantFormat]) -> type[QuantFormat]:
    """Class decorator: register a :class:`QuantFormat` under its ``method``."""
    if cls.method in FORMATS:
        raise ValueError(f"quantization method {cls.method!r} is registered twice")
    FORMATS[cls.method] = cls()
    return cls


def get_format(method: str, field: str = "quant method") -> QuantFormat:
    """The registered format of ``method``; an unknown one raises ValueError naming it and the known ones."""
    fmt = FORMATS.get(method.lower()) if isinstance(method, str) else None
    if fmt is None:
        raise ValueError(f"{field}={method!r} is not supported; supported: {', '.join(FORMATS)}")
    return fmt


def shared_input(prefix: str) -> str:
    """The name of what a linear reads: q/k/v read one input, as do an expert's (or MLP's) gate and
    up, so calibration gives them the same statistics (FP8 input scale, GPTQ act order). Used to
    make tiny checkpoints calibrated like real ones."""
    return prefix.replace(".k_proj", ".q_proj").replace(".v_proj", ".q_proj").replace(".up_proj", ".gate_proj")


def expected_quant_shapes(method: str, out_features: int, in_features: int,
                          group_size: int = 128) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors of one quantized linear ``[out_features, in_features]`` (per-tensor
    scales as ``()``; readers also accept ``(1,)``); ``group_size`` is for grouped formats."""
    fmt = get_format(method)
    return fmt.shapes(QuantSpec(fmt.method, group_size), out_features, in_features)


def dequantize_linear(method: str, tensors: Mapping[str, Tensor], dtype: torch.dtype = torch.float32,
                      spec: QuantSpec | None = None) -> Tensor:
    """Dense weight [out, in] of one quantized linear from its tensors by suffix."""
    return get_format(method).dequantize(spec, tensors, dtype)


# --------------------------------------------------------------------------- spec


def _ignore_matches(entry: str, module_prefix: str) -> bool:
    """``entry`` equals ``module_prefix`` or is a prefix of it on a "." boundary; a ``*`` component
    in ``entry`` matches exactly one dotted component."""
    e_parts = entry.split(".")
    m_parts = module_prefix.split(".")
    if len(e_parts) > len(m_parts):
        return False
    return all(e == "*" or e == m for e, m in zip(e_parts, m_parts))


def _ignored_tuple(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_IGNORED
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"quantization_config.{field} must be a list of module names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class QuantSpec:
    """Parsed ``quantization_config`` of a Hunyuan checkpoint.

    ``group_size`` is None for per-tensor formats; ``ignored`` lists module prefixes left in full
    precision (exact names, dotted prefixes, ``*`` = one component).
    """

    method: str
    group_size: int | None = None
    desc_act: bool = False
    ignored: tuple[str, ...] = DEFAULT_IGNORED
    static_groups: bool = False  # GPTQ act order with groups fixed before the permutation (contiguous g_idx)

    @property
    def format(self) -> QuantFormat:
        return get_format(self.method)

    @staticmethod
    def default_ignored(num_hidden_layers: int | None = None) -> tuple[str, ...]:
        """``lm_head`` + every ``mlp.gate.wg`` router; spelled out per layer when
        ``num_hidden_layers`` is given (the form AngelSlim writes), else with ``*``."""
        if num_hidden_layers is None:
            return DEFAULT_IGNORED
        return ("lm_head",) + tuple(f"model.layers.{i}.mlp.gate.wg" for i in range(num_hidden_layers))

    @classmethod
    def from_hf(cls, quantization_config: Mapping[str, Any] | None) -> QuantSpec | None:
        """Parse a HF ``config.json`` ``quantization_config``; None -> None (unquantized)."""
        if quantization_config is None:
            return None
        qc = quantization_config
        fmt = get_format(qc.get("quant_method"), "quantization_config.quant_method")
        options = fmt.parse(qc)
        return cls(fmt.method, ignored=_ignored_tuple(qc.get(fmt.ignore_field), fmt.ignore_field), **options)

    def to_hf(self) -> dict[str, Any]:
        """The ``quantization_config`` dict AngelSlim writes for this spec (``ignored`` verbatim; use
        :meth:`default_ignored` with the layer count for the per-layer names AngelSlim writes)."""
        return self.format.to_hf(self)

    def is_quantized(self, module_prefix: str) -> bool:
        """False if ``module_prefix`` (e.g. ``model.layers.0.mlp.gate.wg``) is ignored: an entry
        equals it or is a prefix of it on a "." boundary."""
        return not any(_ignore_matches(entry, module_prefix) for entry in self.ignored)

    def shapes(self, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
        return self.format.shapes(self, out_features, in_features)

    def dequantize(self, tensors: Mapping[str, Tensor], dtype: torch.dtype = torch.float32) -> Tensor:
        return self.format.dequantize(self, tensors, dtype)


def checkpoint_quantization(model_path: str) -> dict | None:
    """The ``quantization_config`` of a local checkpoint's own config.json (None if absent)."""
    path = os.path.join(model_path, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f).get("quantization_config")


# --------------------------------------------------------------------------- how a format runs


class Runtime(str, enum.Enum):
    UNQUANTIZED = "unquantized"
    QUANTIZED = "quantized"      # the engine's quantized layers load the tensors as stored; per layer
                                 # kind the adapter runs the engine's kernel or torch.ops.hunyuan
    DEQUANTIZED = "dequantized"  # layers built unquantized; each projection dequantised as it loads


@dataclass(frozen=True)
class QuantPlan:
    """How one model build runs its checkpoint's quantization (see :func:`plan`)."""

    spec: QuantSpec | None
    runtime: Runtime
    reason: str = ""

    @property
    def method(self) -> str | None:
        return None if self.spec is None else self.spec.method

    @property
    def dequantize(self) -> bool:
        return self.runtime is Runtime.DEQUANTIZED

    def describe(self, kernels: str = "engine kernels") -> str:
        """One phrase for the model's start-up log line; ``kernels`` says what runs each layer kind."""
        if self.runtime is Runtime.UNQUANTIZED:
            return f"unquantized; {kernels}"
        if self.runtime is Runtime.DEQUANTIZED:
            return f"{self.method} checkpoint dequantised at load ({self.reason}); {kernels}"
        return f"{self.method} ({self.spec.format.activations}) loaded quantized; {kernels}"


def dequantize_env(engine: str) -> str:
    """The variable that forces (``=1``) or forbids (``=0``) load-time dequantisation in ``engine``."""
    return f"HUNYUAN_{engine.upper()}_DEQUANTIZE"


def plan(quantization_config: Mapping[str, Any] | None, *, engine: str, on_cpu: bool = False,
         engine_has_config: bool = True) -> QuantPlan:
    """THE rule for how a checkpoint's quantization runs in ``engine``.

    * no ``quantization_config``: unquantized;
    * the engine was not given the config (hidden with ``--hf-overrides`` / ``--json-model-override-args``):
      only the plugin can read the files, so dequantise at load (weight-only: for FP8 this drops the
      W8A8 activation quantization the checkpoint specifies, and the log says so);
    * ``HUNYUAN_<ENGINE>_DEQUANTIZE=1`` forces that too (``=0``, the default, never);
    * otherwise quantized, on every platform: the engine's quantized layers load the tensors as
      stored, and each layer kind computes with the engine's kernel where it has one for the
      platform, else with ``torch.ops.hunyuan`` (the adapter decides per kind; ``on_cpu`` is kept
      for callers and no longer changes the answer).
    """
    spec = QuantSpec.from_hf(quantization_config)
    if spec is None:
        return QuantPlan(None, Runtime.UNQUANTIZED)
    if not engine_has_config:
        return QuantPlan(spec, Runtime.DEQUANTIZED, "the engine was not given the quantization config")
    forced = os.environ.get(dequantize_env(engine), "0")
    if forced not in ("0", "1"):
        raise ValueError(f"{dequantize_env(engine)}={forced!r} must be 0 or 1")
    if forced == "1":
        return QuantPlan(spec, Runtime.DEQUANTIZED, f"{dequantize_env(engine)}=1")
    return QuantPlan(spec, Runtime.QUANTIZED)


# The formats register themselves on import (after everything above is defined).
from hunyuan_plugins.quant import fp8, gptq  # noqa: E402,F401
