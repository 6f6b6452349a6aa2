"""Quantization formats of Tencent Hunyuan checkpoints (plain torch reference).

Two formats are covered, both as produced by Tencent's AngelSlim toolkit:

* ``fp8``  -- static per-tensor W8A8 FP8 (AutoFP8 layout). Per quantized linear
  ``<prefix>``::

      <prefix>.weight        float8_e4m3fn [out, in]
      <prefix>.weight_scale  float32 scalar   (real = fp8 * weight_scale)
      <prefix>.input_scale   float32 scalar   (static activation scale)

  Scalars are written 0-dim (shape ``[]``); readers accept ``[]`` and ``[1]``.

* ``gptq`` -- 4-bit symmetric GPTQ in the AutoGPTQ *v1* packing. Per linear::

      <prefix>.qweight  int32   [in/8, out]         8 nibbles along the INPUT dim
      <prefix>.qzeros   int32   [ceil(in/g), out/8] 8 nibbles along the OUTPUT dim,
                                                    stored as (zero - 1)
      <prefix>.scales   float16 [ceil(in/g), out]
      <prefix>.g_idx    int32   [in]                group of each input row

  ``w[o, i] = scales[g_idx[i], o] * (q[i, o] - (qzeros[g_idx[i], o] + 1))``.

Everything here is meant for writing tiny test checkpoints and for the
reference (dequantize-then-matmul) model; nothing is performance critical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

__all__ = [
    "FP8_E4M3_MAX",
    "GPTQ_BITS",
    "GPTQ_PACK_FACTOR",
    "GPTQ_SYM_ZERO",
    "SUPPORTED_QUANT_METHODS",
    "QUANT_SUFFIXES",
    "SCALAR_SHAPES",
    "DEFAULT_IGNORED",
    "quantize_fp8",
    "dequantize_fp8",
    "fp8_input_scale",
    "fake_quant_fp8_activation",
    "pack_int4_rows",
    "unpack_int4_rows",
    "pack_int4_cols",
    "unpack_int4_cols",
    "quantize_gptq",
    "dequantize_gptq",
    "expected_quant_shapes",
    "is_scalar_shape",
    "dequantize_linear",
    "QuantSpec",
]

# --------------------------------------------------------------------------- #
# Constants
# --------------------------------------------------------------------------- #

#: Largest finite magnitude of float8_e4m3fn.
FP8_E4M3_MAX = 448.0  # == torch.finfo(torch.float8_e4m3fn).max

GPTQ_BITS = 4
#: Number of 4-bit values packed in one int32.
GPTQ_PACK_FACTOR = 32 // GPTQ_BITS  # 8
#: Zero point of symmetric 4-bit GPTQ (stored as GPTQ_SYM_ZERO - 1 = 7 in v1).
GPTQ_SYM_ZERO = 2 ** (GPTQ_BITS - 1)  # 8
#: Largest |q - zero| that is used on the positive side: q in [1, 15] -> [-7, 7].
_GPTQ_QMAX = GPTQ_SYM_ZERO - 1  # 7

SUPPORTED_QUANT_METHODS = ("fp8", "gptq")

#: Tensor suffixes of one quantized linear, and their allowed dtypes.
QUANT_SUFFIXES: dict[str, dict[str, Any]] = {
    "fp8": {
        "weight": torch.float8_e4m3fn,
        "weight_scale": torch.float32,
        "input_scale": torch.float32,
    },
    "gptq": {
        "qweight": torch.int32,
        "qzeros": torch.int32,
        "scales": (torch.float16, torch.bfloat16),
        "g_idx": torch.int32,
    },
}

#: Shapes accepted for a per-tensor scalar (we write ``()``).
SCALAR_SHAPES = ((), (1,))

#: Modules never quantized unless the config says otherwise: the LM head and
#: every MoE router (``mlp.gate.wg``). ``*`` matches exactly one dotted
#: component (see :meth:`QuantSpec.is_quantized`).
DEFAULT_IGNORED = ("lm_head", "model.layers.*.mlp.gate.wg")


# --------------------------------------------------------------------------- #
# FP8 (static per-tensor W8A8)
# --------------------------------------------------------------------------- #


def _as_scalar(scale: Tensor, name: str) -> Tensor:
    """Return a per-tensor scale as a 0-dim float32 tensor (accepts [] and [1])."""
    if not isinstance(scale, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(scale).__name__}")
    if tuple(scale.shape) not in SCALAR_SHAPES:
        raise ValueError(
            f"{name} must be a per-tensor scalar of shape [] or [1], "
            f"got shape {list(scale.shape)}"
        )
    return scale.reshape(()).to(torch.float32)


def _amax_scale(t: Tensor, name: str) -> Tensor:
    """amax(|t|) / 448 as a 0-dim float32 tensor; 1.0 when t is all zeros."""
    t = t.detach().to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values")
    amax = t.abs().max() if t.numel() else torch.zeros((), dtype=torch.float32)
    if amax == 0:
        # Any positive scale reproduces an all-zero tensor exactly.
        return torch.ones((), dtype=torch.float32)
    return (amax / FP8_E4M3_MAX).reshape(())


def _to_fp8(x_fp32: Tensor, scale: Tensor) -> Tensor:
    """Scale, saturate to the e4m3 range and round (RNE) to float8_e4m3fn.

    The clamp matters: torch's float->e4m3fn cast does not saturate (it gives
    NaN beyond the range), and ``amax / (amax / 448)`` may round a hair above 448.
    """
    return (x_fp32 / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)


def quantize_fp8(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-tensor FP8 e4m3 quantization of a weight.

    Returns ``(qweight, weight_scale)`` with ``weight_scale = amax(|w|) / 448``
    (0-dim float32; 1.0 for an all-zero weight) and
    ``qweight = (w / weight_scale).clamp(-448, 448).to(float8_e4m3fn)``.
    """
    scale = _amax_scale(w, "weight")
    return _to_fp8(w.detach().to(torch.float32), scale), scale


def dequantize_fp8(qweight: Tensor, weight_scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``qweight.float() * weight_scale`` cast to ``dtype`` (scale: shape [] or [1])."""
    if qweight.dtype != torch.float8_e4m3fn:
        raise ValueError(f"fp8 weight must be float8_e4m3fn, got {qweight.dtype}")
    scale = _as_scalar(weight_scale, "weight_scale")
    return (qweight.to(torch.float32) * scale).to(dtype)


def fp8_input_scale(x_calibration: Tensor) -> Tensor:
    """Static activation scale from calibration activations: amax(|x|) / 448 (0-dim fp32)."""
    return _amax_scale(x_calibration, "x_calibration")


def fake_quant_fp8_activation(x: Tensor, input_scale: Tensor) -> Tensor:
    """Quantize ``x`` to e4m3 with the static ``input_scale`` and dequantize it back.

    This is the activation a static W8A8 FP8 kernel actually multiplies with
    (values beyond ``448 * input_scale`` saturate). Returned in ``x.dtype``.
    """
    scale = _as_scalar(input_scale, "input_scale")
    q = _to_fp8(x.to(torch.float32), scale)
    return (q.to(torch.float32) * scale).to(x.dtype)


# --------------------------------------------------------------------------- #
# int4 packing (AutoGPTQ v1)
# --------------------------------------------------------------------------- #

_U32 = 1 << 32
_I32_SIGN = 1 << 31


def _u32_to_i32(packed: Tensor) -> Tensor:
    """int64 holding values in [0, 2**32) -> int32 with the same bit pattern."""
    return torch.where(packed >= _I32_SIGN, packed - _U32, packed).to(torch.int32)


def _i32_to_u32(packed: Tensor) -> Tensor:
    """int32 (two's complement) -> int64 holding the unsigned bit pattern."""
    if packed.dtype != torch.int32:
        raise ValueError(f"packed int4 tensor must be int32, got {packed.dtype}")
    return packed.to(torch.int64) & (_U32 - 1)


def _check_nibbles(q: Tensor) -> Tensor:
    if q.dtype.is_floating_point or q.dtype.is_complex or q.dtype == torch.bool:
        raise ValueError(f"int4 values must be an integer tensor, got {q.dtype}")
    if q.dim() != 2:
        raise ValueError(f"int4 values must be 2-D, got shape {list(q.shape)}")
    q = q.to(torch.int64)
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise ValueError("int4 values must lie in [0, 15]")
    return q


_SHIFTS = torch.arange(GPTQ_PACK_FACTOR, dtype=torch.int64) * GPTQ_BITS  # 0, 4, ..., 28


def pack_int4_rows(q: Tensor) -> Tensor:
    """Pack ``q`` [rows, cols] (values 0..15) into int32 [rows/8, cols] along dim 0.

    Row ``8*r + j`` goes to bits ``4j .. 4j+3`` of ``packed[r]`` (lowest bits =
    lowest row), i.e. GPTQ ``qweight`` packing along the input dim.
    """
    q = _check_nibbles(q)
    rows, cols = q.shape
    if rows % GPTQ_PACK_FACTOR:
        raise ValueError(f"number of rows ({rows}) must be a multiple of {GPTQ_PACK_FACTOR}")
    q = q.reshape(rows // GPTQ_PACK_FACTOR, GPTQ_PACK_FACTOR, cols)
    packed = (q << _SHIFTS.view(1, -1, 1)).sum(dim=1)
    return _u32_to_i32(packed)


def unpack_int4_rows(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_int4_rows`: int32 [R, cols] -> int64 [R*8, cols] in 0..15."""
    p = _i32_to_u32(packed)
    if p.dim() != 2:
        raise ValueError(f"packed int4 tensor must be 2-D, got shape {list(p.shape)}")
    q = (p.unsqueeze(1) >> _SHIFTS.view(1, -1, 1)) & 0xF
    return q.reshape(p.shape[0] * GPTQ_PACK_FACTOR, p.shape[1])


def pack_int4_cols(q: Tensor) -> Tensor:
    """Pack ``q`` [rows, cols] (values 0..15) into int32 [rows, cols/8] along dim 1.

    Column ``8*c + j`` goes to bits ``4j .. 4j+3`` of ``packed[:, c]``, i.e. GPTQ
    ``qzeros`` packing along the output dim.
    """
    q = _check_nibbles(q)
    rows, cols = q.shape
    if cols % GPTQ_PACK_FACTOR:
        raise ValueError(f"number of columns ({cols}) must be a multiple of {GPTQ_PACK_FACTOR}")
    q = q.reshape(rows, cols // GPTQ_PACK_FACTOR, GPTQ_PACK_FACTOR)
    packed = (q << _SHIFTS.view(1, 1, -1)).sum(dim=2)
    return _u32_to_i32(packed)


def unpack_int4_cols(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_int4_cols`: int32 [rows, C] -> int64 [rows, C*8] in 0..15."""
    p = _i32_to_u32(packed)
    if p.dim() != 2:
        raise ValueError(f"packed int4 tensor must be 2-D, got shape {list(p.shape)}")
    q = (p.unsqueeze(2) >> _SHIFTS.view(1, 1, -1)) & 0xF
    return q.reshape(p.shape[0], p.shape[1] * GPTQ_PACK_FACTOR)


# --------------------------------------------------------------------------- #
# GPTQ int4 (sym, v1)
# --------------------------------------------------------------------------- #


def _resolve_group_size(group_size: int, in_features: int) -> int:
    """``-1`` (HF "no grouping") means one group spanning the whole input dim."""
    if group_size == -1:
        return in_features
    if not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int or -1, got {group_size!r}")
    return group_size


def _default_act_order(w: Tensor) -> Tensor:
    """Deterministic stand-in for GPTQ's activation order: input columns sorted by
    descending L2 norm (ties broken by index, as the sort is stable)."""
    norms = w.to(torch.float32).norm(dim=0)
    return torch.sort(norms, descending=True, stable=True).indices


def quantize_gptq(
    w: Tensor,
    group_size: int = 128,
    desc_act: bool = False,
    perm: Tensor | None = None,
) -> dict[str, Tensor]:
    """Round-to-nearest symmetric 4-bit quantization written in GPTQ v1 layout.

    ``w`` is a linear weight [out, in]. Input rows are split into groups of
    ``group_size`` (``-1``: a single group). With ``desc_act`` the groups are
    formed along the permutation ``perm`` (default: descending column norm),
    i.e. ``g_idx[perm[j]] = j // group_size``; otherwise ``g_idx[i] = i // group_size``.

    Per (group, output column): ``scale = max|w| / 7`` (rounded to float16, 1.0
    where the group is all zero), ``q = clamp(round(w / scale) + 8, 0, 15)``,
    zero point 8 stored as 7.

    Returns ``dict(qweight=int32 [in/8, out], qzeros=int32 [in/g, out/8],
    scales=float16 [in/g, out], g_idx=int32 [in])``.
    """
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {list(w.shape)}")
    out_features, in_features = w.shape
    if in_features % GPTQ_PACK_FACTOR:
        raise ValueError(
            f"in_features ({in_features}) must be a multiple of {GPTQ_PACK_FACTOR} for GPTQ int4 packing"
        )
    if out_features % GPTQ_PACK_FACTOR:
        raise ValueError(
            f"out_features ({out_features}) must be a multiple of {GPTQ_PACK_FACTOR} for GPTQ int4 packing"
        )
    g = _resolve_group_size(group_size, in_features)
    if in_features % g:
        raise ValueError(f"in_features ({in_features}) must be a multiple of group_size ({g})")
    n_groups = in_features // g

    wt = w.detach().to(torch.float32).t().contiguous()  # [in, out]
    if not bool(torch.isfinite(wt).all()):
        raise ValueError("weight contains non-finite values")

    # Group assignment of every input row.
    if desc_act:
        if perm is None:
            perm = _default_act_order(w)
        perm = perm.to(torch.int64).flatten()
        if perm.numel() != in_features or not torch.equal(
            torch.sort(perm).values, torch.arange(in_features)
        ):
            raise ValueError(f"perm must be a permutation of range({in_features})")
        g_idx = torch.empty(in_features, dtype=torch.int64)
        g_idx[perm] = torch.arange(in_features) // g
    else:
        if perm is not None:
            raise ValueError("perm is only meaningful with desc_act=True")
        g_idx = torch.arange(in_features) // g

    # Per-(group, out) scale: max |w| over the rows of the group / 7.
    # Every group has exactly g rows, so sorting rows by group gives [groups, g, out].
    rows_by_group = torch.sort(g_idx, stable=True).indices
    amax = wt[rows_by_group].abs().reshape(n_groups, g, out_features).amax(dim=1)
    fp16 = torch.finfo(torch.float16)
    scale = amax / _GPTQ_QMAX
    scale = torch.where(amax == 0, torch.ones_like(scale), scale)
    # Keep the scale a positive, finite, normal float16 so it survives storage.
    scale = scale.clamp(fp16.tiny, fp16.max).to(torch.float16)

    # Quantize with the *stored* (float16) scale so dequantization is exact RTN.
    s_rows = scale.to(torch.float32)[g_idx]  # [in, out]
    q = (torch.round(wt / s_rows) + GPTQ_SYM_ZERO).clamp(0, 15).to(torch.int64)

    zeros = torch.full((n_groups, out_features), GPTQ_SYM_ZERO - 1, dtype=torch.int64)  # v1: zero - 1
    return {
        "qweight": pack_int4_rows(q),
        "qzeros": pack_int4_cols(zeros),
        "scales": scale,
        "g_idx": g_idx.to(torch.int32),
    }


def dequantize_gptq(
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    g_idx: Tensor,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """GPTQ v1 int4 -> dense weight [out, in].

    ``w[o, i] = scales[g_idx[i], o] * (q[i, o] - (zero[g_idx[i], o] + 1))``,
    computed in float32 (exact: a float16 times a small integer) and cast to ``dtype``.
    """
    q = unpack_int4_rows(qweight)  # [in, out]
    zeros = unpack_int4_cols(qzeros) + 1  # [groups, out]; v1 stores zero - 1
    in_features, out_features = q.shape
    n_groups = scales.shape[0] if scales.dim() == 2 else -1
    if scales.dim() != 2 or scales.shape[1] != out_features:
        raise ValueError(
            f"scales must have shape [groups, {out_features}] to match qweight {list(qweight.shape)}, "
            f"got {list(scales.shape)}"
        )
    if tuple(zeros.shape) != (n_groups, out_features):
        raise ValueError(
            f"qzeros must have shape [{n_groups}, {out_features // GPTQ_PACK_FACTOR}] to match scales, "
            f"got {list(qzeros.shape)}"
        )
    if tuple(g_idx.shape) != (in_features,):
        raise ValueError(f"g_idx must have shape [{in_features}], got {list(g_idx.shape)}")
    g = g_idx.to(torch.int64)
    if in_features and (int(g.min()) < 0 or int(g.max()) >= n_groups):
        raise ValueError(f"g_idx values must lie in [0, {n_groups})")
    w = scales.to(torch.float32)[g] * (q - zeros[g]).to(torch.float32)  # [in, out]
    return w.t().contiguous().to(dtype)


# --------------------------------------------------------------------------- #
# Checkpoint description helpers
# --------------------------------------------------------------------------- #


def is_scalar_shape(shape) -> bool:
    """True for the per-tensor scale shapes we accept: ``()`` or ``(1,)``."""
    return tuple(shape) in SCALAR_SHAPES


def _check_method(method: str) -> str:
    if method not in SUPPORTED_QUANT_METHODS:
        raise ValueError(
            f"unsupported quantization method {method!r}; supported: {', '.join(SUPPORTED_QUANT_METHODS)}"
        )
    return method


def expected_quant_shapes(
    method: str, out_features: int, in_features: int, group_size: int = 128
) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors of one quantized linear ``[out_features, in_features]``.

    fp8 scales are reported as ``()``; readers must also accept ``(1,)``
    (see :func:`is_scalar_shape`). ``group_size`` is ignored for fp8; ``-1``
    means a single group for gptq.
    """
    method = _check_method(method)
    if method == "fp8":
        return {"weight": (out_features, in_features), "weight_scale": (), "input_scale": ()}
    if in_features % GPTQ_PACK_FACTOR:
        raise ValueError(f"in_features ({in_features}) must be a multiple of {GPTQ_PACK_FACTOR} for gptq")
    if out_features % GPTQ_PACK_FACTOR:
        raise ValueError(f"out_features ({out_features}) must be a multiple of {GPTQ_PACK_FACTOR} for gptq")
    g = _resolve_group_size(group_size, in_features)
    n_groups = math.ceil(in_features / g)
    return {
        "qweight": (in_features // GPTQ_PACK_FACTOR, out_features),
        "qzeros": (n_groups, out_features // GPTQ_PACK_FACTOR),
        "scales": (n_groups, out_features),
        "g_idx": (in_features,),
    }


def dequantize_linear(
    method: str, tensors: Mapping[str, Tensor], dtype: torch.dtype = torch.float32
) -> Tensor:
    """Dense weight [out, in] of one quantized linear from its tensors by suffix.

    fp8 needs ``weight`` and ``weight_scale`` (``input_scale`` is not part of
    the weight); gptq needs ``qweight``, ``qzeros``, ``scales`` and ``g_idx``.
    """
    method = _check_method(method)
    required = ("weight", "weight_scale") if method == "fp8" else ("qweight", "qzeros", "scales", "g_idx")
    missing = [s for s in required if s not in tensors]
    if missing:
        raise ValueError(f"{method} linear is missing tensor(s) with suffix: {', '.join(missing)}")
    if method == "fp8":
        return dequantize_fp8(tensors["weight"], tensors["weight_scale"], dtype)
    return dequantize_gptq(tensors["qweight"], tensors["qzeros"], tensors["scales"], tensors["g_idx"], dtype)


def _ignore_matches(entry: str, module_prefix: str) -> bool:
    """``entry`` equals ``module_prefix`` or is a prefix of it on a "." boundary.

    A ``*`` component in ``entry`` matches exactly one dotted component.
    """
    e_parts = entry.split(".")
    m_parts = module_prefix.split(".")
    if len(e_parts) > len(m_parts):
        return False
    return all(e == "*" or e == m for e, m in zip(e_parts, m_parts))


@dataclass(frozen=True)
class QuantSpec:
    """Parsed ``quantization_config`` of a Hunyuan checkpoint.

    ``group_size`` is None for fp8; ``ignored`` lists module prefixes left in
    full precision (exact names, dotted prefixes, ``*`` = one component).
    """

    method: str
    group_size: int | None = None
    desc_act: bool = False
    ignored: tuple[str, ...] = DEFAULT_IGNORED

    @staticmethod
    def default_ignored(num_hidden_layers: int | None = None) -> tuple[str, ...]:
        """``lm_head`` + every ``mlp.gate.wg`` router; spelled out per layer when
        ``num_hidden_layers`` is given (the form AngelSlim writes), else with ``*``."""
        if num_hidden_layers is None:
            return DEFAULT_IGNORED
        return ("lm_head",) + tuple(f"model.layers.{i}.mlp.gate.wg" for i in range(num_hidden_layers))

    @classmethod
    def from_hf(cls, quantization_config: Mapping[str, Any] | None) -> "QuantSpec | None":
        """Parse a HF ``config.json`` ``quantization_config``; None -> None (unquantized)."""
        if quantization_config is None:
            return None
        qc = quantization_config
        method = qc.get("quant_method")
        if not isinstance(method, str) or method.lower() not in SUPPORTED_QUANT_METHODS:
            raise ValueError(
                f"quantization_config.quant_method={method!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_QUANT_METHODS)}"
            )
        method = method.lower()

        if method == "fp8":
            scheme = qc.get("activation_scheme")
            if scheme != "static":
                raise ValueError(
                    f"quantization_config.activation_scheme={scheme!r} is not supported; "
                    "only 'static' per-tensor FP8 (AngelSlim) is supported"
                )
            if qc.get("weight_block_size") is not None:
                raise ValueError(
                    f"quantization_config.weight_block_size={qc['weight_block_size']!r} is not supported; "
                    "only per-tensor FP8 scales are supported"
                )
            ignored = qc.get("ignored_layers")
            return cls("fp8", None, False, _ignored_tuple(ignored, "ignored_layers"))

        # gptq
        bits = qc.get("bits")
        if bits != GPTQ_BITS:
            raise ValueError(f"quantization_config.bits={bits!r} is not supported; only 4-bit GPTQ is supported")
        if qc.get("sym", True) is not True:
            raise ValueError(
                f"quantization_config.sym={qc.get('sym')!r} is not supported; only symmetric GPTQ is supported"
            )
        fmt = qc.get("checkpoint_format", "gptq")
        if fmt != "gptq":
            raise ValueError(
                f"quantization_config.checkpoint_format={fmt!r} is not supported; "
                "only 'gptq' (v1, zeros stored minus one) is supported"
            )
        group_size = qc.get("group_size", 128)
        if isinstance(group_size, bool) or not isinstance(group_size, int) or not (group_size > 0 or group_size == -1):
            raise ValueError(
                f"quantization_config.group_size={group_size!r} is invalid; expected a positive int or -1"
            )
        desc_act = qc.get("desc_act", False)
        if not isinstance(desc_act, bool):
            raise ValueError(f"quantization_config.desc_act={desc_act!r} is invalid; expected a bool")
        ignored = qc.get("modules_to_not_convert")
        return cls("gptq", group_size, desc_act, _ignored_tuple(ignored, "modules_to_not_convert"))

    def to_hf(self) -> dict[str, Any]:
        """The ``quantization_config`` dict AngelSlim writes for this spec.

        ``ignored`` is written verbatim; use :meth:`default_ignored` with the
        layer count to get the per-layer names AngelSlim writes instead of ``*``.
        """
        if self.method == "fp8":
            return {
                "quant_method": "fp8",
                "activation_scheme": "static",
                "ignored_layers": list(self.ignored),
            }
        if self.method == "gptq":
            cfg = {
                "bits": GPTQ_BITS,
                "checkpoint_format": "gptq",
                "desc_act": self.desc_act,
                "group_size": 128 if self.group_size is None else self.group_size,
                "quant_method": "gptq",
                "static_groups": False,
                "sym": True,
                "true_sequential": True,
            }
            if self.ignored != DEFAULT_IGNORED:
                # AngelSlim omits this key; write it only when it carries information.
                cfg["modules_to_not_convert"] = list(self.ignored)
            return cfg
        raise ValueError(
            f"quant method {self.method!r} is not supported; supported: {', '.join(SUPPORTED_QUANT_METHODS)}"
        )

    def is_quantized(self, module_prefix: str) -> bool:
        """False if ``module_prefix`` (e.g. ``model.layers.0.mlp.gate.wg``) is
        ignored: an entry equals it or is a prefix of it on a "." boundary."""
        return not any(_ignore_matches(entry, module_prefix) for entry in self.ignored)


def _ignored_tuple(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_IGNORED
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"quantization_config.{field} must be a list of module names, got {value!r}")
    return tuple(value)
