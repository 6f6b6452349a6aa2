"""torch.ops.hunyuan.*: opcheck on every op, Triton implementation == reference through the ops,
and graph capture under torch.compile(fullgraph=True).

On CPU the ops run their torch reference by default; ``ops.triton_on_cpu()`` routes CPU tensors
through the Triton kernels in the interpreter, so both implementations of each op are checked.
On a GPU the tensors are CUDA and the Triton implementation is the registered CUDA kernel.
"""

import pytest
import torch
from moe_testing import (
    DEVICE,
    FP8_TOL,
    INT4_TOL,
    TOL,
    I,
    activations,
    assert_close,
    dense_weights,
    fp8_per_tensor,
    gptq_stacks,
    routing,
    tol,
)

from hunyuan_plugins import ops
from hunyuan_plugins.quant import fp8, gptq

E, T, K = 4, 5, 2  # tiny: opcheck calls each op several times


def _triton_ctx():
    return ops.triton_on_cpu(True) if DEVICE.type == "cpu" else ops.triton_on_cpu(False)


def _cases():
    """(op name, args on DEVICE, tolerance of Triton vs reference)."""
    x, (tw, ti) = activations(T), routing(T, E, K)
    w13, w2 = dense_weights(E)
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(5))
    q13, q2, s13, s2, a13, a2 = fp8_per_tensor(w13, w2, x)
    b13, bs13 = fp8.quantize_block(w13)
    b2, bs2 = fp8.quantize_block(w2)
    from hunyuan_plugins_kernels import int4_weights
    gate, up, down = gptq_stacks(w13, w2, desc_act=True)
    w4 = int4_weights(*gptq.int4_expert_layout(gate, up, down))
    xh = x.half()
    cases = [
        ("moe_route", (logits, K, True), 0.0),
        ("moe_route", (logits, 1, False), 0.0),
        ("moe_experts", (x, w13, w2, tw, ti), tol(TOL, torch.float32)),
        ("moe_experts", (xh, w13.half(), w2.half(), tw, ti), tol(TOL, torch.float16)),
        ("moe_experts_fp8", (x, q13, q2, s13, s2, a13, a2, tw, ti), tol(FP8_TOL, torch.float32)),
        # per expert and per gate / up input scales, as the core passes them
        ("moe_experts_fp8", (x, q13, q2, s13, s2, a13 * torch.linspace(0.5, 1, 2 * E).reshape(E, 2),
                             a2 * torch.linspace(1, 0.5, E), tw, ti), tol(FP8_TOL, torch.float32)),
        ("moe_experts_fp8_block", (xh, b13, b2, bs13, bs2, tw, ti), tol(FP8_TOL, torch.float16)),
        ("moe_experts_int4", (xh, w4.w13.weight, w4.w13.scale, w4.w2.weight, w4.w2.scale, tw, ti,
                              w4.w13.perm, w4.w2.perm), tol(INT4_TOL, torch.float16)),
        ("moe_experts_int4", (x, w4.w13.weight, w4.w13.scale, w4.w2.weight, w4.w2.scale, tw, ti),
         None),  # no act order: only opcheck (the kernel path is test_experts.py's)
        # the linear ops are the torch reference on every device: opcheck only
        ("linear_fp8", (x, q13[0], s13[0], a13.reshape(1).expand(2).contiguous(), [I, I]), None),
        ("linear_gptq", (x, gate["qweight"][0], gate["qzeros"][0], gate["scales"][0], gate["g_idx"][0]), None),
    ]
    dev = [(name, tuple(a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args), t)
           for name, args, t in cases]
    return dev


CASES = _cases()
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def test_every_op_is_covered():
    registered = {n for n in dir(torch.ops.hunyuan) if n.startswith(("moe_", "linear_"))}
    assert registered == {name for name, _, _ in CASES}, registered


ALL_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _utils(args, wanted=ALL_UTILS):
    """opcheck's test_schema compares every inner aten op's inputs bitwise with ops torch lacks
    for CPU float8 (NotImplementedError "mul_cpu_reduced_float"): for fp8 ops on CPU it is
    replaced by :func:`_assert_no_mutation` (the part of it that concerns a mutates_args=() op)."""
    has_fp8_cpu = any(isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn and a.device.type == "cpu"
                      for a in args)
    return tuple(u for u in wanted if not (has_fp8_cpu and u == "test_schema"))


def _assert_no_mutation(op, args):
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    op(*args)
    for a, b in zip(args, before):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), "op mutated an input"


@pytest.mark.parametrize("name,args,tolerance", CASES, ids=IDS)
def test_opcheck_reference(name, args, tolerance):
    op = getattr(torch.ops.hunyuan, name)
    with ops.triton_on_cpu(False):
        torch.library.opcheck(op, args, test_utils=_utils(args))
        _assert_no_mutation(op, args)


@pytest.mark.parametrize("name,args,tolerance", [c for c in CASES if c[2] is not None],
                         ids=[i for i, c in zip(IDS, CASES) if c[2] is not None])
def test_opcheck_triton_and_agreement(name, args, tolerance):
    op = getattr(torch.ops.hunyuan, name)
    with ops.triton_on_cpu(False):
        want = op(*(a.cpu() if isinstance(a, torch.Tensor) else a for a in args))
    with _triton_ctx():
        torch.library.opcheck(op, args, test_utils=_utils(args, ("test_schema", "test_faketensor")))
        _assert_no_mutation(op, args)
        got = op(*args)
    if name == "moe_route":
        # tie-free random logits: identical ids, weights to fp32 rounding
        assert torch.equal(got[1].cpu(), want[1])
        torch.testing.assert_close(got[0].cpu(), want[0], rtol=1e-5, atol=1e-7)
    else:
        assert_close(got.cpu(), want, tolerance, name)


def test_triton_on_cpu_switch_really_switches():
    """Guards the tests above: with the switch on, the Triton kernels run (not the reference)."""
    if DEVICE.type != "cpu":
        pytest.skip("CPU-only switch")
    import hunyuan_plugins_kernels.torch_ops as tops
    calls = []
    orig = tops.moe_route
    tops.moe_route = lambda *a: calls.append(1) or orig(*a)
    try:
        logits = torch.randn(3, 8)
        with ops.triton_on_cpu(False):
            torch.ops.hunyuan.moe_route(logits, 2, True)
        assert not calls
        with ops.triton_on_cpu(True):
            torch.ops.hunyuan.moe_route(logits, 2, True)
        assert calls
    finally:
        tops.moe_route = orig


def test_compile_fullgraph():
    """The MoE path traces into one graph (fake impls, no graph breaks) and matches eager.
    aot_eager runs dynamo + AOTAutograd on the fake implementations without Inductor's C++
    compile (minutes on the CI machine); Inductor treats the ops as opaque calls either way."""
    x = activations(T)
    w13, w2 = dense_weights(E)
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(5))

    def layer(x, logits, w13, w2):
        weights, ids = torch.ops.hunyuan.moe_route(logits, K, True)
        return torch.ops.hunyuan.moe_experts(x, w13, w2, weights, ids) + x

    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    with ops.triton_on_cpu(False):
        eager = layer(x, logits, w13, w2)
        assert torch.equal(compiled(x, logits, w13, w2), eager)


def test_cuda_without_triton_is_an_error_unless_the_reference_is_asked_for(monkeypatch):
    """No silent fallback: a device that should run Triton and cannot import it names the package."""
    import sys

    import hunyuan_plugins_kernels
    from hunyuan_plugins.ops import reference as _ref
    monkeypatch.setitem(sys.modules, "hunyuan_plugins_kernels.torch_ops", None)  # import -> ImportError
    monkeypatch.delattr(hunyuan_plugins_kernels, "torch_ops", raising=False)
    monkeypatch.setitem(ops._state, "impls", None)  # forget an earlier successful import
    with pytest.raises(RuntimeError, match=r"on cuda: the Triton kernels cannot be imported.*triton.*"
                                           + ops.REFERENCE_ENV):
        ops._impl("moe_experts", _ref.expert_mlp, torch.device("cuda"))
    with ops.triton_on_cpu(True), pytest.raises(RuntimeError, match="on cpu"):
        ops._impl("moe_experts", _ref.expert_mlp, torch.device("cpu"))
    with ops.triton_on_cpu(False):
        assert ops._impl("moe_experts", _ref.expert_mlp, torch.device("cpu")) is _ref.expert_mlp
    monkeypatch.setitem(ops._state, "reference", True)
    assert ops._impl("moe_experts", _ref.expert_mlp, torch.device("cuda")) is _ref.expert_mlp
