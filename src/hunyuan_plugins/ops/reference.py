"""Reference MoE math in plain torch: the semantics every kernel and engine must reproduce.

These functions are the CPU implementations behind ``torch.ops.hunyuan.*`` (``ops/__init__.py``);
the model calls the ops, never these directly, so a CUDA build swaps in the Triton kernels.

Semantics (docs/architecture.md, "MoE"):
  * router logits in fp32 -> softmax over all experts -> top-k (ties: lowest expert id first,
    as ``torch.topk``) -> renormalise over the k when k > 1; top-1 keeps the raw probability.
  * no capacity, no token dropping.
  * expert e: down_e(silu(gate_e x) * up_e x); ``w13[e]`` stacks gate rows first, then up rows.
  * an expert id of -1 marks a (token, slot) whose expert lives on another rank (expert
    parallel): it contributes nothing here.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from hunyuan_plugins.quant import fp8, gptq


def route(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, E] logits -> (weights [T, k] fp32, expert ids [T, k] int32)."""
    probs = torch.softmax(router_logits.float(), dim=-1)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-20)
    return weights, ids.to(torch.int32)


def expert_mlp(
    x: torch.Tensor,            # [T, H]
    w13: torch.Tensor,          # [E, 2I, H]  gate rows then up rows
    w2: torch.Tensor,           # [E, H, I]
    topk_weights: torch.Tensor,  # [T, k] fp32
    topk_ids: torch.Tensor,     # [T, k] int, -1 = not on this rank
) -> torch.Tensor:
    """Sum over the k chosen experts of weight * expert(x). Accumulates in fp32, returns x.dtype."""
    inter = w2.shape[-1]

    def expert(e: int, xs: torch.Tensor) -> torch.Tensor:
        h = F.linear(xs, w13[e])
        h = F.silu(h[:, :inter]) * h[:, inter:]
        return F.linear(h, w2[e])

    return routed_sum(x, topk_weights, topk_ids, expert)


def routed_sum(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
               expert: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """sum_j topk_weights[t, j] * expert(topk_ids[t, j], x[t]) in fp32 (ids < 0 skipped) -> x.dtype."""
    T, H = x.shape
    out = torch.zeros(T, H, dtype=torch.float32, device=x.device)
    flat_ids = topk_ids.reshape(-1).long()
    flat_w = topk_weights.reshape(-1).float()
    token_of = torch.arange(T, device=x.device).repeat_interleave(topk_ids.shape[1])
    for e in torch.unique(flat_ids).tolist():
        if e < 0:
            continue
        sel = (flat_ids == e).nonzero().squeeze(1)
        tokens = token_of[sel]
        y = expert(e, x[tokens])
        out.index_add_(0, tokens, y.float() * flat_w[sel, None])
    return out.to(x.dtype)


def apply_expert_map(topk_ids: torch.Tensor, expert_map: torch.Tensor) -> torch.Tensor:
    """Expert parallel: global ids -> local ids (``expert_map[global]``, -1 = another rank)."""
    return expert_map.to(torch.int32)[topk_ids.long()]


# --------------------------------------------------------------------------- #
# Quantized experts (references for hunyuan::moe_experts_fp8 / _fp8_block / _int4)
#
# A quantized kernel multiplies quantized activations with dequantized weights and keeps the
# SwiGLU intermediate in x.dtype. These references do exactly that, in fp32 on the dequantized
# operands, so a kernel differs from them only by summation order.
# --------------------------------------------------------------------------- #

def _swiglu_expert_quantized(xs, w13_e, w2_e, quant_a13, quant_a2):
    """One expert in fp32 on dequantized weights [2I, H] / [H, I]; activations fake-quantized."""
    inter = w2_e.shape[-1]
    h = F.linear(quant_a13(xs.float()), w13_e)
    h = (F.silu(h[:, :inter]) * h[:, inter:]).to(xs.dtype)  # the kernel's stored intermediate
    return F.linear(quant_a2(h.float()), w2_e)


def expert_mlp_fp8(x, w13, w2, w13_scale, w2_scale, a13_scale, a2_scale, topk_weights, topk_ids):
    """Static per-tensor W8A8 FP8 (Tencent). w13/w2 e4m3 as in :func:`expert_mlp`; w13_scale
    [E, 2] (gate, up) or [E] / [E, 1]; w2_scale [E] / [E, 1]; a13/a2_scale: static activation
    scales ([] / [1]; per expert [E] collapses to the max, as the kernels do)."""
    E, two_i, _ = w13.shape
    s13 = w13_scale.float().reshape(E, -1).expand(E, 2)
    s2 = w2_scale.float().reshape(E)
    a13, a2 = a13_scale.float().amax(), a2_scale.float().amax()
    inter = two_i // 2

    def expert(e, xs):
        gate = fp8.dequantize(w13[e, :inter], s13[e, 0])
        up = fp8.dequantize(w13[e, inter:], s13[e, 1])
        return _swiglu_expert_quantized(
            xs, torch.cat([gate, up]), fp8.dequantize(w2[e], s2[e]),
            lambda a: fp8.fake_quant_activation(a, a13), lambda a: fp8.fake_quant_activation(a, a2))

    return routed_sum(x, topk_weights, topk_ids, expert)


def expert_mlp_fp8_block(x, w13, w2, w13_scale, w2_scale, topk_weights, topk_ids):
    """FP8 with [128 x 128] weight-block scales (w13_scale [E, 2I/128, H/128], w2_scale
    [E, H/128, I/128]) and dynamic per-token-group(128) activation scales."""

    def expert(e, xs):
        return _swiglu_expert_quantized(
            xs, fp8.dequantize_block(w13[e], w13_scale[e]), fp8.dequantize_block(w2[e], w2_scale[e]),
            fp8.fake_quant_per_token_group, fp8.fake_quant_per_token_group)

    return routed_sum(x, topk_weights, topk_ids, expert)


def expert_mlp_int4(x, w13_qweight, w13_scales, w2_qweight, w2_scales, topk_weights, topk_ids,
                    w13_perm=None, w2_perm=None):
    """GPTQ int4 W4A16: :func:`expert_mlp` on weights dequantized to x.dtype (layout: see
    :func:`hunyuan_plugins.quant.gptq.int4_expert_layout`; stacks carry a leading expert dim)."""
    inter = w2_qweight.shape[1] * gptq.PACK_FACTOR

    def expert(e, xs):
        w13 = gptq.dequantize_int4_sorted(w13_qweight[e], w13_scales[e], None if w13_perm is None else w13_perm[e])
        w2 = gptq.dequantize_int4_sorted(w2_qweight[e], w2_scales[e], None if w2_perm is None else w2_perm[e])
        h = F.linear(xs, w13.to(xs.dtype))
        h = F.silu(h[:, :inter]) * h[:, inter:]
        return F.linear(h, w2.to(xs.dtype))

    return routed_sum(x, topk_weights, topk_ids, expert)
