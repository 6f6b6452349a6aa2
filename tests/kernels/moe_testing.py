"""Shared helpers for the kernel tests: inputs in every weight format, references, comparisons.

Tolerances (docs/kernels.md, "Tolerances"; interpreter): relative Frobenius error of the kernel
against the reference on the same (dequantized) operands.
"""

from __future__ import annotations

import os

import torch

from hunyuan_plugins.ops import reference as ref
from hunyuan_plugins.quant import fp8, gptq

H, I = 256, 128  # 2 K-tiles / 2 N-tiles at 128, 2 int4 groups, 128x128 fp8 blocks

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
FP8_TOL = {torch.float32: 1e-4, torch.float16: 2e-3}   # vs the dequantized reference
INT4_TOL = {torch.float32: 1e-5, torch.float16: 2e-3}  # vs the dequantized reference
QUANT_VS_DENSE = 0.1  # fp8 vs the unquantized model: a sanity bound, not a kernel tolerance

# Small tiles (several N- and K-tiles per GEMM) for E=8; big tiles for E=64 (interpreter cost).
SMALL_TILES = (dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128), dict(BLOCK_N=128, BLOCK_K=64))
BIG_TILES = (dict(BLOCK_M=16, BLOCK_N=128, BLOCK_K=128), dict(BLOCK_N=256, BLOCK_K=128))


# CPU (Triton interpreter) in CI; a CUDA GPU when present and not interpreting.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = torch.device("cuda" if torch.cuda.is_available() and not INTERPRET else "cpu")


def tol(table: dict, dtype: torch.dtype) -> float:
    """GPU: fp32 dots run in TF32 and fp8 accumulates fast, so loosen (docs/kernels.md, "Tolerances")."""
    t = table[dtype]
    return max(t, 1e-2) if DEVICE.type == "cuda" and dtype == torch.float32 else t * (3 if DEVICE.type == "cuda" else 1)


def tiles(E: int) -> tuple[dict, dict]:
    return SMALL_TILES if E <= 16 else BIG_TILES


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    out, expected = out.double(), expected.double()
    return float((out - expected).norm() / expected.norm().clamp_min(1e-30))


def assert_close(out: torch.Tensor, expected: torch.Tensor, tol: float, what: str = "") -> None:
    assert out.shape == expected.shape and out.dtype == expected.dtype, (out.shape, out.dtype, expected.dtype)
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    err = rel_err(out, expected)
    max_abs = float((out.double() - expected.double()).abs().max()) if out.numel() else 0.0
    scale = float(expected.double().abs().max()) if out.numel() else 0.0
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"
    assert max_abs <= 50 * tol * max(scale, 1e-30) + 1e-30, \
        f"{what}: max abs error {max_abs:.3g} (max |ref| {scale:.3g})"


def dense_weights(E: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w13 = torch.randn(E, 2 * I, H, generator=g) / H ** 0.5
    w2 = torch.randn(E, H, I, generator=g) / I ** 0.5
    return w13.to(dtype), w2.to(dtype)


def activations(T: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(T, H, generator=torch.Generator().manual_seed(seed)).to(dtype)


def routing(T: int, E: int, k: int, seed: int = 2, renormalize: bool = True):
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(seed))
    return ref.route(logits, k, renormalize)


def fp8_per_tensor(w13: torch.Tensor, w2: torch.Tensor, x: torch.Tensor):
    """Tencent FP8: gate and up quantized separately (w13 scale [E, 2]), static input scales."""
    E = w13.shape[0]
    q13, q2 = torch.empty_like(w13, dtype=torch.float8_e4m3fn), torch.empty_like(w2, dtype=torch.float8_e4m3fn)
    s13, s2 = torch.empty(E, 2), torch.empty(E)
    for e in range(E):
        q13[e, :I], s13[e, 0] = fp8.quantize(w13[e, :I])
        q13[e, I:], s13[e, 1] = fp8.quantize(w13[e, I:])
        q2[e], s2[e] = fp8.quantize(w2[e])
    # Static input scales calibrated as Tencent's are: amax of what each GEMM actually sees over
    # a calibration set (here the test's own tokens), through every expert, / 448. So nothing
    # saturates (one scale for every expert here; test_fp8_per_tensor_scale_forms varies them).
    a13 = fp8.input_scale(x)
    h = torch.einsum("th,eih->eti", x.float(), w13.float())
    a2 = fp8.input_scale(torch.nn.functional.silu(h[..., :I]) * h[..., I:])
    return q13, q2, s13, s2, a13, a2


def gptq_stacks(w13: torch.Tensor, w2: torch.Tensor, desc_act: bool):
    """AutoGPTQ v1 dicts for gate / up / down stacked over experts. With desc_act, gate and up
    share one act order (as GPTQ gives them: same input)."""
    E = w13.shape[0]

    def stack(ws, perms):
        d = [gptq.quantize(w, 128, desc_act=desc_act, perm=p) for w, p in zip(ws, perms)]
        return {n: torch.stack([di[n] for di in d]) for n in d[0]}

    act13 = [torch.randperm(H, generator=torch.Generator().manual_seed(e)) if desc_act else None for e in range(E)]
    act2 = [torch.randperm(I, generator=torch.Generator().manual_seed(100 + e)) if desc_act else None for e in range(E)]
    return stack(w13[:, :I], act13), stack(w13[:, I:], act13), stack(w2, act2)


def gptq_dequant(stack: dict) -> torch.Tensor:
    names = ("qweight", "qzeros", "scales", "g_idx")
    return torch.stack([gptq.dequantize(*(stack[n][e] for n in names)) for e in range(stack["qweight"].shape[0])])


def align_reference(local_ids: torch.Tensor, num_experts: int, block_m: int):
    """moe_align_block_size in torch: stable sort of slots by expert, runs padded to block_m."""
    flat = local_ids.reshape(-1).long()
    sentinel = flat.numel()
    sorted_ids, expert_ids = [], []
    for e in range(num_experts):
        slots = (flat == e).nonzero().flatten().tolist()
        n_blocks = -(-len(slots) // block_m)
        sorted_ids += slots + [sentinel] * (n_blocks * block_m - len(slots))
        expert_ids += [e] * n_blocks
    return torch.tensor(sorted_ids, dtype=torch.int32), torch.tensor(expert_ids, dtype=torch.int32), len(sorted_ids)
