"""Reference MoE math in plain torch: the semantics every kernel and engine must reproduce.

These functions are the CPU implementations behind ``torch.ops.hunyuan.*`` (see ``ops.py``);
the model calls the ops, never these directly, so a CUDA build swaps in the Triton kernels.

Semantics (facts: hunyuan-architecture.md section 2, "Reference semantics"):
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

from hunyuan_plugins.core import quant


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

FP8_BLOCK = 128  # block edge of block-scaled fp8 weights and of per-token activation groups


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
        gate = quant.dequantize_fp8(w13[e, :inter], s13[e, 0])
        up = quant.dequantize_fp8(w13[e, inter:], s13[e, 1])
        return _swiglu_expert_quantized(
            xs, torch.cat([gate, up]), quant.dequantize_fp8(w2[e], s2[e]),
            lambda a: quant.fake_quant_fp8_activation(a, a13), lambda a: quant.fake_quant_fp8_activation(a, a2))

    return routed_sum(x, topk_weights, topk_ids, expert)


def quantize_fp8_block(w: torch.Tensor, block: int = FP8_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., N, K] -> (e4m3 weight, fp32 scales [..., ceil(N/b), ceil(K/b)]): amax/448 per block."""
    *lead, N, K = w.shape
    nb, kb = -(-N // block), -(-K // block)
    padded = F.pad(w.float(), (0, kb * block - K, 0, nb * block - N))
    blocks = padded.reshape(*lead, nb, block, kb, block)
    amax = blocks.abs().amax(dim=(-3, -1), keepdim=True)
    scale = torch.where(amax > 0, amax / quant.FP8_E4M3_MAX, torch.ones_like(amax))
    q = (blocks / scale).clamp(-quant.FP8_E4M3_MAX, quant.FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    q = q.reshape(*lead, nb * block, kb * block)[..., :N, :K]
    return q.contiguous(), scale.reshape(*lead, nb, kb)


def dequantize_fp8_block(q: torch.Tensor, scale: torch.Tensor, block: int = FP8_BLOCK) -> torch.Tensor:
    """Inverse of :func:`quantize_fp8_block` (fp32)."""
    N, K = q.shape[-2:]
    s = scale.repeat_interleave(block, dim=-2)[..., :N, :].repeat_interleave(block, dim=-1)[..., :K]
    return q.float() * s


def fake_quant_fp8_per_token_group(x: torch.Tensor, group: int = FP8_BLOCK) -> torch.Tensor:
    """Dynamic activation quantization of block fp8: per token and K-group, scale = amax / 448
    (1 for an all-zero group), e4m3 round trip, in fp32."""
    T, K = x.shape
    g = x.float().reshape(T, K // group, group)
    amax = g.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / quant.FP8_E4M3_MAX, torch.ones_like(amax))
    q = (g / scale).clamp(-quant.FP8_E4M3_MAX, quant.FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return (q.float() * scale).reshape(T, K)


def expert_mlp_fp8_block(x, w13, w2, w13_scale, w2_scale, topk_weights, topk_ids):
    """FP8 with [128 x 128] weight-block scales (w13_scale [E, 2I/128, H/128], w2_scale
    [E, H/128, I/128]) and dynamic per-token-group(128) activation scales."""

    def expert(e, xs):
        return _swiglu_expert_quantized(
            xs, dequantize_fp8_block(w13[e], w13_scale[e]), dequantize_fp8_block(w2[e], w2_scale[e]),
            fake_quant_fp8_per_token_group, fake_quant_fp8_per_token_group)

    return routed_sum(x, topk_weights, topk_ids, expert)


def dequantize_int4_sorted(qweight: torch.Tensor, scales: torch.Tensor, perm: torch.Tensor | None) -> torch.Tensor:
    """The int4 layout of hunyuan::moe_experts_int4 (one expert) -> dense fp32 [N, K].

    It is GPTQ v1 sym with the K rows sorted by group: qweight [K/8, N] int32, scales [K/G, N],
    zero point 8, and ``perm[k']`` = the original input row of sorted row k' (None: identity).
    """
    K, N = qweight.shape[0] * quant.GPTQ_PACK_FACTOR, qweight.shape[1]
    G = K // scales.shape[0]
    zeros = quant.pack_int4_cols(torch.full((scales.shape[0], N), quant.GPTQ_SYM_ZERO - 1))
    g_idx = (torch.arange(K) // G).to(torch.int32)
    w_sorted = quant.dequantize_gptq(qweight.cpu(), zeros, scales.cpu(), g_idx).to(qweight.device)
    if perm is None:
        return w_sorted
    w = torch.empty_like(w_sorted)
    w[:, perm.long()] = w_sorted
    return w


def expert_mlp_int4(x, w13_qweight, w13_scales, w2_qweight, w2_scales, topk_weights, topk_ids,
                    w13_perm=None, w2_perm=None):
    """GPTQ int4 W4A16: :func:`expert_mlp` on weights dequantized to x.dtype (layout: see
    :func:`dequantize_int4_sorted`; stacks carry a leading expert dim)."""
    inter = w2_qweight.shape[1] * quant.GPTQ_PACK_FACTOR

    def expert(e, xs):
        w13 = dequantize_int4_sorted(w13_qweight[e], w13_scales[e], None if w13_perm is None else w13_perm[e])
        w2 = dequantize_int4_sorted(w2_qweight[e], w2_scales[e], None if w2_perm is None else w2_perm[e])
        h = F.linear(xs, w13.to(xs.dtype))
        h = F.silu(h[:, :inter]) * h[:, inter:]
        return F.linear(h, w2.to(xs.dtype))

    return routed_sum(x, topk_weights, topk_ids, expert)
