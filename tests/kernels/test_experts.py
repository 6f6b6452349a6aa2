"""Grouped expert GEMMs (all weight formats) through the public launchers, vs ops/reference.py."""

import pytest
import torch
from moe_testing import (
    DEVICE,
    FP8_TOL,
    INT4_TOL,
    QUANT_VS_DENSE,
    TOL,
    activations,
    assert_close,
    dense_weights,
    fp8_per_tensor,
    gptq_dequant,
    gptq_stacks,
    rel_err,
    routing,
    tiles,
    tol,
)

from hunyuan_plugins.ops import reference as ref
from hunyuan_plugins.quant import fp8, gptq
from hunyuan_plugins_kernels import (
    fused_experts,
    int4_weights,
    prepare_dense,
    prepare_fp8_block,
    prepare_fp8_per_tensor,
)

# (T, E, top_k): decode, ragged T, top-1 (Hunyuan-Large), A13B's E=64/top-8
SHAPES = [(1, 64, 8), (16, 64, 8), (67, 64, 8), (16, 8, 2), (67, 8, 2), (3, 16, 1)]


def _run(x, w, topk_weights, topk_ids, E, **kw):
    up, down = tiles(E)
    out = fused_experts(x.to(DEVICE), w, topk_weights.to(DEVICE), topk_ids.to(DEVICE),
                        config=up, down_config=down, **kw)
    return out.cpu()


def _dense(E, dtype):
    w13, w2 = dense_weights(E, dtype=dtype)
    return w13, w2, prepare_dense(w13.to(DEVICE), w2.to(DEVICE))


@pytest.mark.parametrize("T,E,k", SHAPES)
def test_dense_fp32(T, E, k):
    x, (tw, ti) = activations(T), routing(T, E, k, renormalize=k > 1)
    w13, w2, w = _dense(E, torch.float32)
    assert_close(_run(x, w, tw, ti, E), ref.expert_mlp(x, w13, w2, tw, ti), tol(TOL, torch.float32), "fp32")


@pytest.mark.parametrize("T,E,k", [(3, 64, 8), (67, 8, 2)])
def test_dense_fp16(T, E, k):
    x, (tw, ti) = activations(T, dtype=torch.float16), routing(T, E, k)
    w13, w2, w = _dense(E, torch.float16)
    assert_close(_run(x, w, tw, ti, E), ref.expert_mlp(x, w13, w2, tw, ti), tol(TOL, torch.float16), "fp16")


@pytest.mark.skipif(DEVICE.type == "cpu", reason="bf16 arithmetic is broken in Triton's interpreter (it computes "
                    "on raw bits, triton#11584); bf16 runs on GPU only. test_bf16_semantics_via_fp32 covers the math")
def test_dense_bf16():
    x, (tw, ti) = activations(16, dtype=torch.bfloat16), routing(16, 8, 2)
    w13, w2, w = _dense(8, torch.bfloat16)
    assert_close(_run(x, w, tw, ti, 8), ref.expert_mlp(x, w13, w2, tw, ti), tol(TOL, torch.bfloat16), "bf16")


def test_bf16_semantics_via_fp32():
    """The kernel's math on bf16 data (run in fp32, as a bf16 GPU kernel accumulates) is within the
    bf16 tolerance of the bf16 reference."""
    x, (tw, ti) = activations(16, dtype=torch.bfloat16), routing(16, 8, 2)
    w13, w2 = dense_weights(8, dtype=torch.bfloat16)
    out = _run(x.float(), prepare_dense(w13.float().to(DEVICE), w2.float().to(DEVICE)), tw, ti, 8)
    assert_close(out.bfloat16(), ref.expert_mlp(x, w13, w2, tw, ti), TOL[torch.bfloat16], "bf16 via fp32")


def test_atomic_reduction():
    x, (tw, ti) = activations(67), routing(67, 8, 2)
    w13, w2, w = _dense(8, torch.float32)
    assert_close(_run(x, w, tw, ti, 8, reduce="atomic"), ref.expert_mlp(x, w13, w2, tw, ti), tol(TOL, torch.float32))


def test_edge_cases():
    E = 8
    w13, w2, w = _dense(E, torch.float32)
    x = activations(67)
    # all tokens on one expert (every other expert empty); T not a multiple of BLOCK_M
    tw, _ = routing(67, E, 2)
    ti = torch.tensor([[5, 5]], dtype=torch.int32).expand(67, 2).contiguous()
    assert_close(_run(x, w, tw, ti, E), ref.expert_mlp(x, w13, w2, tw, ti), tol(TOL, torch.float32), "one expert")
    # expert parallel: slots whose expert lives on another rank (-1) contribute nothing
    tw, ti = routing(67, E, 2)
    ti = ti.clone()
    ti[::2, 0] = -1
    ti[7] = -1
    out = _run(x, w, tw, ti, E)
    assert_close(out, ref.expert_mlp(x, w13, w2, tw, ti), tol(TOL, torch.float32), "EP -1")
    assert torch.equal(out[7], torch.zeros(x.shape[1]))
    # T = 0
    assert _run(x[:0], w, tw[:0], ti[:0], E).shape == (0, x.shape[1])


def test_ep_expert_map_end_to_end():
    """Global routing -> expert map -> local weights only == the reference on local ids."""
    from hunyuan_plugins_kernels import topk_softmax
    E, k, T = 16, 2, 16
    expert_map = torch.full((E,), -1, dtype=torch.int32)
    expert_map[8:] = torch.arange(8, dtype=torch.int32)  # this rank owns experts 8..15
    w13, w2 = dense_weights(E)
    x = activations(T)
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(3))
    tw, _, local = topk_softmax(logits.to(DEVICE), k, True, expert_map.to(DEVICE))
    out = _run(x, prepare_dense(w13[8:].to(DEVICE), w2[8:].to(DEVICE)), tw.cpu(), local.cpu(), 8)
    assert_close(out, ref.expert_mlp(x, w13[8:], w2[8:], tw.cpu(), local.cpu()), tol(TOL, torch.float32))


@pytest.mark.parametrize("T,E,k,dtype", [(3, 64, 8, torch.float32), (67, 8, 2, torch.float32),
                                         (16, 8, 2, torch.float16), (1, 16, 1, torch.float16)])
def test_fp8_per_tensor(T, E, k, dtype):
    x, (tw, ti) = activations(T, dtype=dtype), routing(T, E, k)
    w13, w2 = dense_weights(E)
    q13, q2, s13, s2, a13, a2 = fp8_per_tensor(w13, w2, x.float())
    w = prepare_fp8_per_tensor(*(t.to(DEVICE) for t in (q13, q2, s13, s2, a13, a2)))
    out = _run(x, w, tw, ti, E)
    assert_close(out, ref.expert_mlp_fp8(x, q13, q2, s13, s2, a13, a2, tw, ti), tol(FP8_TOL, dtype), "fp8")
    assert rel_err(out, ref.expert_mlp(x.float(), w13, w2, tw, ti).to(dtype)) < QUANT_VS_DENSE


@pytest.mark.parametrize("a13_form", ["[E]", "[E, 2]", "[]"])
def test_fp8_per_tensor_scale_forms(a13_form):
    """One w13 scale per expert ([E]); input scales per expert ([E]), per expert and gate / up
    ([E, 2]) or one for all ([]), each applied exactly as stored (no max-collapsing); an input
    scale too small for the data saturates to +-448 exactly as the reference does."""
    E, T = 8, 16
    x, (tw, ti) = activations(T), routing(T, E, 2)
    w13, w2 = dense_weights(E)
    q13, q2, _, s2, a13, a2 = fp8_per_tensor(w13, w2, x)
    s13 = torch.rand(E) / 100 + 1e-3
    a13_e = {"[E]": a13 * torch.linspace(0.5, 1.0, E),
             "[E, 2]": a13 * torch.stack([torch.linspace(0.5, 1.0, E), torch.linspace(1.0, 0.3, E)], dim=1),
             "[]": a13.reshape(())}[a13_form]
    a2_e = a2 * torch.linspace(0.25, 1.0, E)  # the largest intermediates of some experts saturate
    w = prepare_fp8_per_tensor(*(t.to(DEVICE) for t in (q13, q2, s13, s2, a13_e, a2_e)))
    out = _run(x, w, tw, ti, E)
    assert_close(out, ref.expert_mlp_fp8(x, q13, q2, s13, s2, a13_e, a2_e, tw, ti), FP8_TOL[torch.float32])
    if a13_form != "[]":  # the per-expert scales matter: their max is a different (wrong) reading
        collapsed = ref.expert_mlp_fp8(x, q13, q2, s13, s2, a13_e.amax(), a2_e.amax(), tw, ti)
        assert rel_err(out, collapsed) > 10 * FP8_TOL[torch.float32]


def test_fp8_input_scale_shapes_are_checked():
    E = 8
    q13, q2, s13, s2, a13, a2 = fp8_per_tensor(*dense_weights(E), activations(4))
    with pytest.raises(ValueError, match=r"a2_scale must be \[\], \[1\], \[E\] with E=8, got \[8, 2\]"):
        prepare_fp8_per_tensor(q13, q2, s13, s2, a13, a2.reshape(1).expand(E, 2))
    with pytest.raises(ValueError, match=r"a13_scale must be .* or \[E, 2\] with E=8, got \[7\]"):
        prepare_fp8_per_tensor(q13, q2, s13, s2, a13.reshape(1).expand(7), a2)


@pytest.mark.parametrize("T,E,k,dtype", [(3, 64, 8, torch.float16), (67, 8, 2, torch.float32),
                                         (16, 8, 2, torch.float16)])
def test_fp8_block(T, E, k, dtype):
    x, (tw, ti) = activations(T, dtype=dtype), routing(T, E, k)
    w13, w2 = dense_weights(E)
    q13, s13 = fp8.quantize_block(w13)
    q2, s2 = fp8.quantize_block(w2)
    out = _run(x, prepare_fp8_block(*(t.to(DEVICE) for t in (q13, q2, s13, s2))), tw, ti, E)
    assert_close(out, ref.expert_mlp_fp8_block(x, q13, q2, s13, s2, tw, ti), tol(FP8_TOL, dtype), "fp8 block")
    assert rel_err(out, ref.expert_mlp(x.float(), w13, w2, tw, ti).to(dtype)) < QUANT_VS_DENSE


def _to(stack):
    return {n: t.to(DEVICE) for n, t in stack.items()}


@pytest.mark.parametrize("T,E,k,dtype,desc_act", [
    (3, 32, 8, torch.float16, True), (67, 8, 2, torch.float32, False), (16, 8, 2, torch.float32, True),
    (16, 8, 2, torch.float16, False), (1, 16, 1, torch.float16, True)])
def test_int4_gptq(T, E, k, dtype, desc_act):
    x, (tw, ti) = activations(T, dtype=dtype), routing(T, E, k)
    w13, w2 = dense_weights(E)
    gate, up, down = gptq_stacks(w13, w2, desc_act)
    w = int4_weights(*gptq.int4_expert_layout(_to(gate), _to(up), _to(down)))
    assert (w.w13.perm is not None) == desc_act
    dq13 = torch.cat([gptq_dequant(gate), gptq_dequant(up)], dim=1).to(dtype)  # straight from GPTQ
    out = _run(x, w, tw, ti, E)
    assert_close(out, ref.expert_mlp(x, dq13, gptq_dequant(down).to(dtype), tw, ti), tol(INT4_TOL, dtype), "int4")
    # the op reference reads the prepared layout and agrees
    p = [t.cpu() if t is not None else None for t in (w.w13.weight, w.w13.scale, w.w2.weight, w.w2.scale,
                                                       w.w13.perm, w.w2.perm)]
    assert_close(out, ref.expert_mlp_int4(x, *p[:4], tw, ti, *p[4:]), tol(INT4_TOL, dtype), "int4 sorted ref")


def test_int4_prepare_rejects_what_it_cannot_run():
    w13, w2 = dense_weights(2)
    gate, up, down = gptq_stacks(w13, w2, desc_act=True)
    up_other = dict(up, g_idx=torch.stack([g.flip(0) for g in up["g_idx"]]))
    with pytest.raises(ValueError, match="act order"):
        gptq.int4_expert_layout(gate, up_other, down)
    asym = dict(gate, qzeros=torch.zeros_like(gate["qzeros"]))
    with pytest.raises(ValueError, match="symmetric"):
        gptq.int4_expert_layout(asym, up, down)


def test_input_validation():
    w13, w2, w = _dense(8, torch.float32)
    tw, ti = routing(4, 8, 2)
    with pytest.raises(ValueError):
        fused_experts(activations(4).half().to(DEVICE), w, tw.to(DEVICE), ti.to(DEVICE))  # dtype mismatch
    with pytest.raises(ValueError):
        prepare_dense(w13, w2[:, :, :64])


def _format_case(fmt, x, E):
    """(ExpertWeights on DEVICE, reference output fn(tw, ti)) for one weight format."""
    w13, w2 = dense_weights(E)
    if fmt == "fp32":
        return prepare_dense(w13.to(DEVICE), w2.to(DEVICE)), lambda tw, ti: ref.expert_mlp(x, w13, w2, tw, ti)
    if fmt == "fp8":
        args = fp8_per_tensor(w13, w2, x)
        return (prepare_fp8_per_tensor(*(t.to(DEVICE) for t in args)),
                lambda tw, ti: ref.expert_mlp_fp8(x, *args, tw, ti))
    if fmt == "fp8_block":
        (q13, s13), (q2, s2) = fp8.quantize_block(w13), fp8.quantize_block(w2)
        return (prepare_fp8_block(*(t.to(DEVICE) for t in (q13, q2, s13, s2))),
                lambda tw, ti: ref.expert_mlp_fp8_block(x, q13, q2, s13, s2, tw, ti))
    gate, up, down = gptq_stacks(w13, w2, True)
    dq13, dq2 = torch.cat([gptq_dequant(gate), gptq_dequant(up)], dim=1), gptq_dequant(down)
    return (int4_weights(*gptq.int4_expert_layout(_to(gate), _to(up), _to(down))),
            lambda tw, ti: ref.expert_mlp(x, dq13, dq2, tw, ti))


@pytest.mark.parametrize("fmt", ["fp32", "fp8", "fp8_block", "int4"])
@pytest.mark.parametrize("split", [2, 3])
def test_split_k(fmt, split):
    """Split-K (fp32 partials, SwiGLU / top-k sum finished in a fixed order) == the reference, in
    every format; split 3 leaves one split without K-steps (its partials are zeros)."""
    E, T, k = 8, 5, 2
    x, (tw, ti) = activations(T), routing(T, E, k)
    w, want = _format_case(fmt, x, E)
    up, down = tiles(E)
    tol_ = {"fp32": TOL, "int4": INT4_TOL}.get(fmt, FP8_TOL)[torch.float32]
    for reduce in ("sum", "atomic"):
        out = fused_experts(x.to(DEVICE), w, tw.to(DEVICE), ti.to(DEVICE), config=dict(up, SPLIT_K=split),
                            down_config=dict(down, SPLIT_K=split), reduce=reduce).cpu()
        assert_close(out, want(tw, ti), tol_, f"{fmt} split {split} {reduce}")


def test_split_k_rule():
    from hunyuan_plugins_kernels.experts import split_k
    cpu = torch.device("cpu")
    cfg = {"BLOCK_K": 128}
    # A13B decode at TP 8: gate/up GEMM = 8 M-blocks x 6 N-blocks on an H100's 132 SMs
    assert split_k(cfg, 48, 4096, cpu, sm_count=132) == 2
    assert split_k(cfg, 16, 4096, cpu, sm_count=132) == 8
    assert split_k(cfg, 512, 4096, cpu, sm_count=132) == 1          # enough programs already
    assert split_k(cfg, 8, 512, cpu, sm_count=132) == 1             # 4 K-steps: nothing to split
    assert split_k(dict(cfg, SPLIT_K=3), 512, 4096, cpu, sm_count=132) == 3  # a config's own value wins
    assert split_k(cfg, 8, 4096, cpu) == 1                          # no GPU: no split


def test_canonical_scales_are_used_in_place():
    """Scales in the canonical forms (prepared once at load) are not rebuilt per call: the kernel
    operands are the caller's tensors (same storage), for fp8 per-tensor and int4."""
    E = 8
    x = activations(4)
    w13, w2 = dense_weights(E)
    q13, q2, s13, s2, a13, a2 = (t.to(DEVICE) for t in fp8_per_tensor(w13, w2, x))
    s13, s2 = s13.float().reshape(E, -1).expand(E, 2).contiguous(), s2.float().reshape(E)
    a13, a2 = a13.float().reshape(1), a2.float().reshape(1)
    w = prepare_fp8_per_tensor(q13, q2, s13, s2, a13, a2)
    for got, given in ((w.w13.scale, s13), (w.w2.scale, s2), (w.w13.input_scale, a13), (w.w2.input_scale, a2)):
        assert got.data_ptr() == given.data_ptr()
    gate, up, down = gptq_stacks(w13, w2, True)
    layout = gptq.int4_expert_layout(_to(gate), _to(up), _to(down))
    w4 = int4_weights(*layout)
    got = (w4.w13.weight, w4.w13.scale, w4.w2.weight, w4.w2.scale, w4.w13.perm, w4.w2.perm)
    assert all((a is None and b is None) or a.data_ptr() == b.data_ptr() for a, b in zip(got, layout))
    assert w4.w13.perm is not None  # act order: the permutation is passed through too
