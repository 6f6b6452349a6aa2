"""Tencent FP8: static per-tensor W8A8 (AngelSlim, AutoFP8 layout). Per quantized linear ``<prefix>``::

    <prefix>.weight        float8_e4m3fn [out, in]
    <prefix>.weight_scale  float32 scalar   (real = fp8 * weight_scale)
    <prefix>.input_scale   float32 scalar   (static activation scale)

Scalars are written 0-dim (shape ``[]``); readers accept ``[]`` and ``[1]``. Activations: the
linear quantizes its input with the stored static ``input_scale`` (x / s, saturate to +-448, e4m3,
* s) before the GEMM -- :func:`fake_quant_activation` is exactly that.

Also here: the 128 x 128 block-scaled FP8 variant (weights with per-block scales, activations with
dynamic per-token-group scales), which our kernels support beside Tencent's per-tensor format.
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from hunyuan_plugins.quant import SCALAR_SHAPES, QuantFormat, QuantSpec, register, shared_input

#: Largest finite magnitude of float8_e4m3fn.
E4M3_MAX = 448.0  # == torch.finfo(torch.float8_e4m3fn).max
#: Block edge of block-scaled fp8 weights and of per-token activation groups.
BLOCK = 128


def _as_scalar(scale: Tensor, name: str) -> Tensor:
    """Return a per-tensor scale as a 0-dim float32 tensor (accepts [] and [1])."""
    if not isinstance(scale, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(scale).__name__}")
    if tuple(scale.shape) not in SCALAR_SHAPES:
        raise ValueError(f"{name} must be a per-tensor scalar of shape [] or [1], got shape {list(scale.shape)}")
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
    return (amax / E4M3_MAX).reshape(())


def _to_fp8(x_fp32: Tensor, scale: Tensor) -> Tensor:
    """Scale, saturate to the e4m3 range and round (RNE) to float8_e4m3fn.

    The clamp matters: torch's float->e4m3fn cast does not saturate (it gives NaN beyond the
    range), and ``amax / (amax / 448)`` may round a hair above 448.
    """
    return (x_fp32 / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def quantize(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-tensor e4m3 quantization of a weight: ``(qweight, weight_scale)`` with
    ``weight_scale = amax(|w|) / 448`` (0-dim fp32; 1.0 for an all-zero weight) and
    ``qweight = (w / weight_scale).clamp(-448, 448).to(float8_e4m3fn)``."""
    scale = _amax_scale(w, "weight")
    return _to_fp8(w.detach().to(torch.float32), scale), scale


def dequantize(qweight: Tensor, weight_scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``qweight.float() * weight_scale`` cast to ``dtype`` (scale: shape [] or [1])."""
    if qweight.dtype != torch.float8_e4m3fn:
        raise ValueError(f"fp8 weight must be float8_e4m3fn, got {qweight.dtype}")
    scale = _as_scalar(weight_scale, "weight_scale")
    return (qweight.to(torch.float32) * scale).to(dtype)


def input_scale(x_calibration: Tensor) -> Tensor:
    """Static activation scale from calibration activations: amax(|x|) / 448 (0-dim fp32)."""
    return _amax_scale(x_calibration, "x_calibration")


def fake_quant_activation(x: Tensor, input_scale: Tensor) -> Tensor:
    """Quantize ``x`` to e4m3 with the static ``input_scale`` and dequantize it back: the activation
    a static W8A8 kernel multiplies with (beyond ``448 * input_scale`` it saturates). In ``x.dtype``."""
    scale = _as_scalar(input_scale, "input_scale")
    q = _to_fp8(x.to(torch.float32), scale)
    return (q.to(torch.float32) * scale).to(x.dtype)


# --------------------------------------------------------------------------- 128 x 128 blocks


def quantize_block(w: Tensor, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """[..., N, K] -> (e4m3 weight, fp32 scales [..., ceil(N/b), ceil(K/b)]): amax/448 per block."""
    *lead, N, K = w.shape
    nb, kb = -(-N // block), -(-K // block)
    padded = F.pad(w.float(), (0, kb * block - K, 0, nb * block - N))
    blocks = padded.reshape(*lead, nb, block, kb, block)
    amax = blocks.abs().amax(dim=(-3, -1), keepdim=True)
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    q = (blocks / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    q = q.reshape(*lead, nb * block, kb * block)[..., :N, :K]
    return q.contiguous(), scale.reshape(*lead, nb, kb)


def dequantize_block(q: Tensor, scale: Tensor, block: int = BLOCK) -> Tensor:
    """Inverse of :func:`quantize_block` (fp32)."""
    N, K = q.shape[-2:]
    s = scale.repeat_interleave(block, dim=-2)[..., :N, :].repeat_interleave(block, dim=-1)[..., :K]
    return q.float() * s


def fake_quant_per_token_group(x: Tensor, group: int = BLOCK) -> Tensor:
    """Dynamic activation quantization of block fp8: per token and K-group, scale = amax / 448
    (1 for an all-zero group), e4m3 round trip, in fp32."""
    T, K = x.shape
    g = x.float().reshape(T, K // group, group)
    amax = g.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    q = (g / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return (q.float() * scale).reshape(T, K)


# --------------------------------------------------------------------------- the checkpoint format


@register
class TencentFP8(QuantFormat):
    method = "fp8"
    tiny_name = "fp8"
    ignore_field = "ignored_layers"
    suffixes = {"weight": (torch.float8_e4m3fn,), "weight_scale": (torch.float32,),
                "input_scale": (torch.float32,)}
    activations = "static per-tensor e4m3 with the stored input_scale (W8A8)"

    def parse(self, qc: Mapping[str, Any]) -> dict[str, Any]:
        scheme = qc.get("activation_scheme")
        if scheme != "static":
            raise ValueError(f"quantization_config.activation_scheme={scheme!r} is not supported; "
                             "only 'static' per-tensor FP8 (AngelSlim) is supported")
        if qc.get("weight_block_size") is not None:
            raise ValueError(f"quantization_config.weight_block_size={qc['weight_block_size']!r} is not "
                             "supported; only per-tensor FP8 scales are supported")
        return {}

    def to_hf(self, spec: QuantSpec) -> dict[str, Any]:
        return {"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": list(spec.ignored)}

    def tiny_spec(self, ignored: tuple[str, ...]) -> QuantSpec:
        return QuantSpec("fp8", None, False, ignored)

    def shapes(self, spec, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
        return {"weight": (out_features, in_features), "weight_scale": (), "input_scale": ()}

    def dequantize(self, spec, tensors: Mapping[str, Tensor], dtype: torch.dtype) -> Tensor:
        # input_scale is not part of the weight
        self.require(tensors, ("weight", "weight_scale"))
        return dequantize(tensors["weight"], tensors["weight_scale"], dtype)

    def quantize(self, spec: QuantSpec, prefix: str, w: Tensor) -> dict[str, Tensor]:
        q, scale = quantize(w)
        return {f"{prefix}.weight": q, f"{prefix}.weight_scale": scale,
                f"{prefix}.input_scale": input_scale(_calibration_input(prefix, w.shape[1]))}


def _calibration_input(prefix: str, in_features: int) -> Tensor:
    """Stand-in calibration activations for one linear of a tiny checkpoint, as AngelSlim's static
    observer would see them: projections that read the same input (q/k/v; an expert's gate/up) see
    the same tensor, so they get the same input_scale; every other input (each expert's tokens, the
    down projections) its own, with amplitudes that differ by up to 2x."""
    g = torch.Generator().manual_seed(zlib.crc32(shared_input(prefix).encode()))
    amplitude = 0.6 + 0.6 * torch.rand((), generator=g)
    return torch.randn(64, in_features, generator=g) * amplitude
