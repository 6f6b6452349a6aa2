"""The one place that registers torch custom ops (namespace ``hunyuan``).

Each op = a reference torch implementation (the default on CPU) + a CUDA implementation on our
Triton kernels (``hunyuan_plugins_kernels``, imported on first use; a CUDA machine without triton
gets an error naming it, unless ``HUNYUAN_OPS_REFERENCE=1`` asks for the reference everywhere) +
a fake implementation (shapes only, for torch.compile / meta tensors).
Callers never see the difference: the reference core calls them for every MoE layer and FP8
linear; the engine adapters where ``ops.backend.moe_backend`` picks ours (``HUNYUAN_MOE_BACKEND``).

The Triton implementations allocate from shapes only and never sync with the host, so they can
be captured in CUDA graphs. On CPU the reference runs unless Triton is switched on for CPU
(``HUNYUAN_TRITON_ON_CPU=1`` or :func:`triton_on_cpu`), which runs the same Triton kernels in
Triton's interpreter (``TRITON_INTERPRET=1`` must be set before triton is imported): that is how
CI, which has no GPU, tests the kernels through the ops.

Ops (the weight layouts are documented in ``ops/reference.py`` and docs/kernels.md):
  moe_route(router_logits, top_k, renormalize) -> (weights fp32 [T, k], ids int32 [T, k])
  moe_experts(x, w13, w2, topk_weights, topk_ids) -> [T, H]
  moe_experts_fp8(x, w13, w2, w13_scale, w2_scale, a13_scale, a2_scale, topk_weights, topk_ids)
      exact per projection: a13_scale [E, 2] (gate, up input scales) / [E] / [], a2_scale [E] / []
  moe_experts_fp8_block(x, w13, w2, w13_scale, w2_scale, topk_weights, topk_ids)
  moe_experts_int4(x, w13_qweight, w13_scales, w2_qweight, w2_scales, topk_weights, topk_ids,
                   w13_perm=None, w2_perm=None)
  linear_fp8(x, weight, weight_scale [S], input_scale [S], output_sizes [S]) -> [.., N]   (W8A8 static)
  linear_gptq(x, qweight, qzeros, scales, g_idx) -> [.., N]                         (W4A16, as stored)

The two linear ops are the torch reference on every device: on a GPU the engines' own quantized
GEMMs serve linears; these are for platforms where an engine has none (CPU) and for the core.

Importing this package imports neither an engine nor triton, nor anything of ``hunyuan_plugins.core``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Optional

import torch

from hunyuan_plugins.ops import reference as _ref

TRITON_ON_CPU_ENV = "HUNYUAN_TRITON_ON_CPU"
# "1": the torch reference on every device, Triton never imported (an explicit, slow choice on GPU)
REFERENCE_ENV = "HUNYUAN_OPS_REFERENCE"
_state = {"triton_on_cpu": os.environ.get(TRITON_ON_CPU_ENV, "0") == "1",
          "reference": os.environ.get(REFERENCE_ENV, "0") == "1", "impls": None}


def set_triton_on_cpu(enabled: bool) -> None:
    """Run the ops' Triton implementations for CPU tensors too (in Triton's interpreter)."""
    _state["triton_on_cpu"] = bool(enabled)


@contextlib.contextmanager
def triton_on_cpu(enabled: bool = True) -> Iterator[None]:
    previous = _state["triton_on_cpu"]
    set_triton_on_cpu(enabled)
    try:
        yield
    finally:
        set_triton_on_cpu(previous)


def _triton_impls(device: torch.device):
    """hunyuan_plugins_kernels.torch_ops. A device that should run Triton but cannot import it is
    an error, never a silent fallback: on CUDA the reference syncs with the host, dequantises int4
    on every call and cannot be captured in a CUDA graph. Imported once (ops run per layer)."""
    if _state["impls"] is not None:
        return _state["impls"]
    try:
        from hunyuan_plugins_kernels import torch_ops
    except ImportError as e:
        raise RuntimeError(
            f"torch.ops.hunyuan on {device.type}: the Triton kernels cannot be imported ({e}). Install "
            f"triton (pip install 'hunyuan-plugins[kernels]'), or set {REFERENCE_ENV}=1 to run the torch "
            "reference instead (slow on a GPU: host syncs, int4 dequantised per call, no CUDA graphs)") from e
    _state["impls"] = torch_ops
    return torch_ops


def _impl(name: str, reference: Callable, device: torch.device) -> Callable:
    """The implementation of op ``name`` for tensors on ``device``."""
    if _state["reference"]:
        return reference
    if device.type == "cuda" or (device.type == "cpu" and _state["triton_on_cpu"]):
        return getattr(_triton_impls(device), name)
    return reference


def implementation(device: str | torch.device) -> str:
    """What the MoE ops run for tensors on ``device`` in this process, in words (for engines' start-up
    log lines): "Triton", "Triton interpreter" (CPU with Triton switched on) or "torch reference"."""
    kind = torch.device(device).type
    if _state["reference"]:
        return "torch reference"
    if kind == "cuda":
        return "Triton"
    return "Triton interpreter" if kind == "cpu" and _state["triton_on_cpu"] else "torch reference"


def _register_cuda(op, name: str, reference: Callable) -> None:
    op.register_kernel("cuda")(lambda *args: _impl(name, reference, torch.device("cuda"))(*args))


# --------------------------------------------------------------------------- routing


@torch.library.custom_op("hunyuan::moe_route", mutates_args=())
def moe_route(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, E] router logits -> (weights [T, k] fp32, expert ids [T, k] int32)."""
    return _impl("moe_route", _ref.route, router_logits.device)(router_logits, top_k, renormalize)


@moe_route.register_fake
def _(router_logits, top_k, renormalize):
    T = router_logits.shape[0]
    return (router_logits.new_empty(T, top_k, dtype=torch.float32),
            router_logits.new_empty(T, top_k, dtype=torch.int32))


_register_cuda(moe_route, "moe_route", _ref.route)


# --------------------------------------------------------------------------- experts


@torch.library.custom_op("hunyuan::moe_experts", mutates_args=())
def moe_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """Routed-expert SwiGLU MLP, weighted and summed over the top-k: [T, H] -> [T, H]."""
    return _impl("moe_experts", _ref.expert_mlp, x.device)(x, w13, w2, topk_weights, topk_ids)


@torch.library.custom_op("hunyuan::moe_experts_fp8", mutates_args=())
def moe_experts_fp8(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, w13_scale: torch.Tensor,
                    w2_scale: torch.Tensor, a13_scale: torch.Tensor, a2_scale: torch.Tensor,
                    topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """Static per-tensor W8A8 FP8 (Tencent), exact per projection: e4m3 w13/w2, w13_scale [E, 2]
    (gate, up) or [E], w2_scale [E]; static input scales a13 [E, 2] (gate, up) / [E] / [] and
    a2 [E] / [] (``reference.expert_activation_scales``)."""
    return _impl("moe_experts_fp8", _ref.expert_mlp_fp8, x.device)(
        x, w13, w2, w13_scale, w2_scale, a13_scale, a2_scale, topk_weights, topk_ids)


@torch.library.custom_op("hunyuan::moe_experts_fp8_block", mutates_args=())
def moe_experts_fp8_block(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, w13_scale: torch.Tensor,
                          w2_scale: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """FP8 with [128 x 128] weight-block scales and dynamic per-token-group(128) activation scales."""
    return _impl("moe_experts_fp8_block", _ref.expert_mlp_fp8_block, x.device)(
        x, w13, w2, w13_scale, w2_scale, topk_weights, topk_ids)


@torch.library.custom_op("hunyuan::moe_experts_int4", mutates_args=())
def moe_experts_int4(x: torch.Tensor, w13_qweight: torch.Tensor, w13_scales: torch.Tensor,
                     w2_qweight: torch.Tensor, w2_scales: torch.Tensor, topk_weights: torch.Tensor,
                     topk_ids: torch.Tensor, w13_perm: Optional[torch.Tensor] = None,
                     w2_perm: Optional[torch.Tensor] = None) -> torch.Tensor:
    """GPTQ int4 W4A16 in the layout ``hunyuan_plugins.quant.gptq.int4_expert_layout`` makes once at
    load: qweight [E, K/8, N] int32 with K sorted by group, scales [E, K/G, N], perm [E, K]."""
    return _impl("moe_experts_int4", _ref.expert_mlp_int4, x.device)(
        x, w13_qweight, w13_scales, w2_qweight, w2_scales, topk_weights, topk_ids, w13_perm, w2_perm)


_EXPERT_OPS = {
    "moe_experts": (moe_experts, _ref.expert_mlp),
    "moe_experts_fp8": (moe_experts_fp8, _ref.expert_mlp_fp8),
    "moe_experts_fp8_block": (moe_experts_fp8_block, _ref.expert_mlp_fp8_block),
    "moe_experts_int4": (moe_experts_int4, _ref.expert_mlp_int4),
}
for _name, (_op, _reference) in _EXPERT_OPS.items():
    _op.register_fake(lambda x, *rest: torch.empty_like(x))
    _register_cuda(_op, _name, _reference)


# --------------------------------------------------------------------------- quantized linears


@torch.library.custom_op("hunyuan::linear_fp8", mutates_args=())
def linear_fp8(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, input_scale: torch.Tensor,
               output_sizes: list[int]) -> torch.Tensor:
    """Static per-tensor W8A8 linear (Tencent FP8), each of the S fused shards (``output_sizes``)
    with its own weight and input scale: x [.., K] -> [.., N] in x.dtype."""
    return _ref.linear_fp8(x, weight, weight_scale, input_scale, output_sizes)


@linear_fp8.register_fake
def _(x, weight, weight_scale, input_scale, output_sizes):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@torch.library.custom_op("hunyuan::linear_gptq", mutates_args=())
def linear_gptq(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                g_idx: torch.Tensor) -> torch.Tensor:
    """GPTQ v1 int4 W4A16 linear on the stored tensors: x [.., K] -> [.., N] in x.dtype."""
    return _ref.linear_gptq(x, qweight, qzeros, scales, g_idx)


@linear_gptq.register_fake
def _(x, qweight, qzeros, scales, g_idx):
    return x.new_empty(*x.shape[:-1], qweight.shape[1])
