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


def expert_activation_scales(a13_scale: torch.Tensor, a2_scale: torch.Tensor, num_experts: int
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Static activation scales of a layer's experts in canonical form: (a13 [E, 2] fp32, the
    input scales of gate and up; a2 [E] fp32, of down). Accepted: ``[]`` / ``[1]`` (one scale for
    every expert), ``[E]`` (one per expert; gate and up share it), and for a13 ``[E, 2]``. Each
    expert's projections quantize their input with their own scale, as the checkpoint specifies."""
    E = num_experts

    def canon(s: torch.Tensor, name: str, parts: int) -> torch.Tensor:
        s = s.float()
        if s.numel() == 1:
            return s.reshape(1, 1).expand(E, parts)
        if tuple(s.shape) == (E,):
            return s.reshape(E, 1).expand(E, parts)
        if parts == 2 and tuple(s.shape) == (E, 2):
            return s
        allowed = "[], [1], [E]" + (" or [E, 2]" if parts == 2 else "")
        raise ValueError(f"{name} must be {allowed} with E={E}, got shape {list(s.shape)}")

    return canon(a13_scale, "a13_scale", 2), canon(a2_scale, "a2_scale", 1).reshape(E)


def expert_mlp_fp8(x, w13, w2, w13_scale, w2_scale, a13_scale, a2_scale, topk_weights, topk_ids):
    """Static per-tensor W8A8 FP8 (Tencent), exact per projection. w13/w2 e4m3 as in
    :func:`expert_mlp`; w13_scale [E, 2] (gate, up) or [E] / [E, 1]; w2_scale [E] / [E, 1];
    static activation scales as :func:`expert_activation_scales` accepts them: expert e's gate
    projection quantizes its input with a13[e, 0], up with a13[e, 1], down with a2[e]."""
    E, two_i, _ = w13.shape
    s13 = w13_scale.float().reshape(E, -1).expand(E, 2)
    s2 = w2_scale.float().reshape(E)
    a13, a2 = expert_activation_scales(a13_scale, a2_scale, E)
    inter = two_i // 2

    def expert(e, xs):
        gate = F.linear(fp8.fake_quant_activation(xs.float(), a13[e, 0]), fp8.dequantize(w13[e, :inter], s13[e, 0]))
        up = F.linear(fp8.fake_quant_activation(xs.float(), a13[e, 1]), fp8.dequantize(w13[e, inter:], s13[e, 1]))
        h = (F.silu(gate) * up).to(xs.dtype)  # the kernel's stored intermediate
        return F.linear(fp8.fake_quant_activation(h.float(), a2[e]), fp8.dequantize(w2[e], s2[e]))

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


# --------------------------------------------------------------------------- #
# Quantized linears (references for hunyuan::linear_fp8 / linear_gptq)
# --------------------------------------------------------------------------- #

def linear_fp8(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, input_scale: torch.Tensor,
               output_sizes: list[int]) -> torch.Tensor:
    """Static per-tensor W8A8 linear, exact per logical shard: ``weight`` e4m3 [N, K] holds S shards
    of ``output_sizes`` rows (q/k/v or gate/up fused, or one), shard s dequantised with
    ``weight_scale[s]`` and multiplied with x quantized by ``input_scale[s]``. fp32 math, x.dtype out."""
    S = len(output_sizes)
    if sum(output_sizes) != weight.shape[0]:
        raise ValueError(f"output_sizes {list(output_sizes)} do not add up to the weight's {weight.shape[0]} rows")
    ws, xs = weight_scale.float().reshape(-1), input_scale.float().reshape(-1)
    if ws.numel() == 1 and S > 1:
        ws = ws.expand(S)
    if xs.numel() == 1 and S > 1:
        xs = xs.expand(S)
    if ws.numel() != S or xs.numel() != S:
        raise ValueError(f"weight_scale {list(weight_scale.shape)} and input_scale {list(input_scale.shape)} "
                         f"must hold one scale per shard ({S}) or one in all")
    x32 = x.float()
    outs, row = [], 0
    for s, n in enumerate(output_sizes):
        w = fp8.dequantize(weight[row:row + n], ws[s])
        outs.append(F.linear(fp8.fake_quant_activation(x32, xs[s]), w))
        row += n
    return torch.cat(outs, dim=-1).to(x.dtype)


def linear_gptq(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                g_idx: torch.Tensor) -> torch.Tensor:
    """GPTQ v1 int4 W4A16 linear on the tensors as stored (see :mod:`hunyuan_plugins.quant.gptq`):
    the weight dequantised exactly to x.dtype, activations untouched."""
    return F.linear(x, gptq.dequantize(qweight, qzeros, scales, g_idx, x.dtype))
