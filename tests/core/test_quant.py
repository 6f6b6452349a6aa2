"""Tests for hunyuan_plugins.quant (FP8 static W8A8 and GPTQ v1 int4, the registry and the runtime rule)."""

from __future__ import annotations

import pytest
import torch

from hunyuan_plugins.quant import (
    DEFAULT_IGNORED,
    QuantSpec,
    dequantize_linear,
    expected_quant_shapes,
    get_format,
    is_scalar_shape,
)
from hunyuan_plugins.quant.fp8 import E4M3_MAX as FP8_E4M3_MAX
from hunyuan_plugins.quant.fp8 import dequantize as dequantize_fp8
from hunyuan_plugins.quant.fp8 import fake_quant_activation as fake_quant_fp8_activation
from hunyuan_plugins.quant.fp8 import input_scale as fp8_input_scale
from hunyuan_plugins.quant.fp8 import quantize as quantize_fp8
from hunyuan_plugins.quant.gptq import dequantize as dequantize_gptq
from hunyuan_plugins.quant.gptq import pack_int4_cols, pack_int4_rows, unpack_int4_cols, unpack_int4_rows
from hunyuan_plugins.quant.gptq import quantize as quantize_gptq


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _to_i32(u: int) -> int:
    """Unsigned 32-bit pattern -> two's-complement int32 value (numpy uint32.view(int32))."""
    return u - (1 << 32) if u >= (1 << 31) else u


# --------------------------------------------------------------------------- #
# FP8
# --------------------------------------------------------------------------- #


def test_fp8_round_trip_error_bound():
    """Error bound of per-tensor e4m3 round-to-nearest.

    e4m3 has 3 explicit mantissa bits, so for a scaled value x = w/scale in the
    normal range [2**e, 2**(e+1)) the spacing is 2**(e-3) and rounding to nearest
    errs by at most half of it, 2**(e-4) <= 2**-4 * |x|. Below 2**-6 (subnormals)
    the spacing is 2**-9, i.e. absolute error <= 2**-10. No value saturates
    because |x| <= amax/scale = 448. Scaling back by `scale`:

        |deq - w| <= 2**-4 * |w| + 2**-10 * scale

    and hence max |deq - w| <= 2**-4 * amax (+ the tiny subnormal term), which is
    well inside "2**-3 of amax". The (1 + 2**-16) factor covers the two float32
    roundings (w/scale and q*scale), each <= 2**-24 relative.
    """
    w = torch.randn(64, 96, generator=_gen(1)) * 0.02
    w[0, :8] = torch.tensor([1e-9, -1e-8, 3e-7, 0.0, 1e-6, -2e-6, 5e-5, 0.5])  # subnormal/normal mix
    q, scale = quantize_fp8(w)
    deq = dequantize_fp8(q, scale)
    err = (deq - w).abs()
    bound = (2.0**-4 * w.abs() + 2.0**-10 * scale) * (1 + 2.0**-16)
    assert bool((err <= bound).all()), float((err - bound).max())
    amax = w.abs().max()
    assert float(err.max()) <= float(2.0**-4 * amax * (1 + 2.0**-16) + 2.0**-10 * scale)
    assert float(err.max()) <= float(2.0**-3 * amax)


def test_fp8_exact_scale_semantics():
    w = torch.randn(16, 32, generator=_gen(2))
    q, scale = quantize_fp8(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == ()
    assert torch.equal(scale, w.abs().max() / 448.0)
    ref_q = (w / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
    assert torch.equal(q.view(torch.uint8), ref_q.view(torch.uint8))
    # The amax element maps to +-448 exactly.
    assert float(q.float().abs().max()) == FP8_E4M3_MAX

    # Power-of-two amax: scale exact, amax element reproduces exactly.
    w2 = torch.tensor([[3.5, -1.0, 0.25, 0.0], [-3.5, 2.0, 0.125, 1.75]])
    q2, s2 = quantize_fp8(w2)
    assert float(s2) == 3.5 / 448.0 == 2.0**-7
    assert q2.float()[0, 0] == 448.0 and q2.float()[1, 0] == -448.0
    # All these values are exactly representable after scaling -> exact round trip.
    assert torch.equal(dequantize_fp8(q2, s2), w2)
    assert dequantize_fp8(q2, s2, dtype=torch.bfloat16).dtype == torch.bfloat16

    # amax == 0 guard: scale 1, exact zeros, no NaN.
    qz, sz = quantize_fp8(torch.zeros(8, 8))
    assert float(sz) == 1.0
    assert torch.equal(dequantize_fp8(qz, sz), torch.zeros(8, 8))


def test_fp8_input_scale_and_fake_quant():
    x = torch.randn(4, 32, generator=_gen(3)) * 3
    s = fp8_input_scale(x)
    assert s.shape == () and s.dtype == torch.float32
    assert torch.equal(s, x.abs().max() / 448.0)
    assert float(fp8_input_scale(torch.zeros(3))) == 1.0

    fq = fake_quant_fp8_activation(x, s)
    assert fq.dtype == x.dtype and fq.shape == x.shape
    ref = (x / s).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s
    assert torch.equal(fq, ref)
    # Idempotent: the result already lies on the e4m3 grid of that scale.
    assert torch.equal(fake_quant_fp8_activation(fq, s), fq)
    # Static scale: out-of-range activations saturate at 448 * scale.
    big = torch.tensor([1000.0, -1000.0])
    assert torch.equal(fake_quant_fp8_activation(big, torch.tensor(1.0)), torch.tensor([448.0, -448.0]))
    # bf16 activations stay bf16.
    assert fake_quant_fp8_activation(x.bfloat16(), s).dtype == torch.bfloat16


def test_fp8_scale_shape_0dim_and_1_accepted():
    w = torch.randn(8, 16, generator=_gen(4))
    q, scale = quantize_fp8(w)
    ref = dequantize_fp8(q, scale)
    assert torch.equal(dequantize_fp8(q, scale.reshape(1)), ref)
    assert torch.equal(dequantize_linear("fp8", {"weight": q, "weight_scale": scale.reshape(1)}), ref)
    x = torch.randn(2, 16, generator=_gen(5))
    s = fp8_input_scale(x)
    assert torch.equal(fake_quant_fp8_activation(x, s.reshape(1)), fake_quant_fp8_activation(x, s))
    assert is_scalar_shape(()) and is_scalar_shape((1,)) and is_scalar_shape(torch.Size([1]))
    assert not is_scalar_shape((2,)) and not is_scalar_shape((1, 1))
    with pytest.raises(ValueError, match="weight_scale"):
        dequantize_fp8(q, torch.ones(2))
    with pytest.raises(ValueError, match="input_scale"):
        fake_quant_fp8_activation(x, torch.ones(1, 1))
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        dequantize_fp8(w, scale)


# --------------------------------------------------------------------------- #
# int4 packing
# --------------------------------------------------------------------------- #


def test_pack_unpack_round_trip_and_sign_bit():
    q = torch.randint(0, 16, (32, 24), generator=_gen(6))
    q[7, :] = torch.arange(24) % 8 + 8  # top nibble of row-block 0 in 8..15 -> sign bit set
    q[:, 7] = 15  # top nibble of col-block 0 for every row
    pr = pack_int4_rows(q)
    pc = pack_int4_cols(q)
    assert pr.dtype == torch.int32 and pr.shape == (4, 24)
    assert pc.dtype == torch.int32 and pc.shape == (32, 3)
    assert torch.equal(unpack_int4_rows(pr), q)
    assert torch.equal(unpack_int4_cols(pc), q)
    assert bool((pr[0] < 0).all()) and bool((pc[:, 0] < 0).all())

    # Element-wise comparison against the AutoGPTQ recipe (uint32 OR-shift, view as int32).
    for r in range(4):
        for c in range(24):
            u = 0
            for j in range(8):
                u |= int(q[8 * r + j, c]) << (4 * j)
            assert int(pr[r, c]) == _to_i32(u)
    for r in range(32):
        for c in range(3):
            u = 0
            for j in range(8):
                u |= int(q[r, 8 * c + j]) << (4 * j)
            assert int(pc[r, c]) == _to_i32(u)


def test_pack_known_values():
    # Nibble 7 == 8, rest 0 -> 0x80000000 -> int32 min.
    col = torch.zeros(8, 1, dtype=torch.int64)
    col[7, 0] = 8
    assert int(pack_int4_rows(col)) == -(2**31)
    assert torch.equal(unpack_int4_rows(torch.tensor([[-(2**31)]], dtype=torch.int32)), col)
    # All 15 -> 0xFFFFFFFF -> -1; lowest row in lowest bits.
    assert int(pack_int4_rows(torch.full((8, 1), 15))) == -1
    assert int(pack_int4_cols(torch.arange(8).view(1, 8))) == 0x76543210
    assert int(pack_int4_cols(torch.arange(8, 16).view(1, 8))) == _to_i32(0xFEDCBA98)


def test_pack_errors():
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack_int4_rows(torch.full((8, 1), 16))
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack_int4_cols(torch.full((1, 8), -1))
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_int4_rows(torch.zeros(12, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_int4_cols(torch.zeros(1, 12, dtype=torch.int64))
    with pytest.raises(ValueError, match="int32"):
        unpack_int4_rows(torch.zeros(1, 1, dtype=torch.int64))


# --------------------------------------------------------------------------- #
# GPTQ
# --------------------------------------------------------------------------- #


def _rtn_reference(w: torch.Tensor, groups: list[torch.Tensor]) -> torch.Tensor:
    """Independent symmetric 4-bit RTN: for each group (list of input-column indices)
    and each output row: s = fp16(max|w|/7) (1 if zero), w_hat = s * clamp(round(w/s), -8, 7)."""
    out = torch.empty_like(w)
    for cols in groups:
        blk = w[:, cols]  # [out, g]
        amax = blk.abs().amax(dim=1, keepdim=True)
        s = torch.where(amax == 0, torch.ones_like(amax), amax / 7).half().float()
        out[:, cols] = s * torch.clamp(torch.round(blk / s), -8, 7)
    return out


def test_gptq_round_trip_no_desc_act():
    out_f, in_f, g = 24, 64, 16
    w = torch.randn(out_f, in_f, generator=_gen(7))
    w[3, 16:32] = 0.0  # an all-zero (group, column) cell
    t = quantize_gptq(w, group_size=g)
    assert torch.equal(t["g_idx"], (torch.arange(in_f) // g).to(torch.int32))
    for k, shape in expected_quant_shapes("gptq", out_f, in_f, g).items():
        assert tuple(t[k].shape) == shape, k
        allowed = get_format("gptq").suffixes[k]
        assert t[k].dtype in (allowed if isinstance(allowed, tuple) else (allowed,)), k
    # Symmetric v1: zero point 8 stored as 7 in every nibble.
    assert bool((t["qzeros"] == 0x77777777).all())
    deq = dequantize_gptq(t["qweight"], t["qzeros"], t["scales"], t["g_idx"])
    assert deq.shape == (out_f, in_f) and deq.dtype == torch.float32
    ref = _rtn_reference(w, [torch.arange(k * g, (k + 1) * g) for k in range(in_f // g)])
    torch.testing.assert_close(deq, ref, rtol=0, atol=1e-6)
    assert torch.equal(deq[3, 16:32], torch.zeros(16))
    # Sanity: RTN 4-bit error is at most half a step per element.
    scale_rows = t["scales"].float()[t["g_idx"].long()].t()
    assert bool(((deq - w).abs() <= 0.5 * scale_rows * (1 + 1e-3)).all())
    assert dequantize_gptq(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("explicit_perm", [False, True])
def test_gptq_round_trip_desc_act(explicit_perm):
    out_f, in_f, g = 16, 64, 16
    col_scale = torch.linspace(0.1, 2.0, in_f)[torch.randperm(in_f, generator=_gen(9))]
    w = torch.randn(out_f, in_f, generator=_gen(8)) * col_scale
    if explicit_perm:
        perm = torch.randperm(in_f, generator=_gen(10))
        t = quantize_gptq(w, group_size=g, desc_act=True, perm=perm)
    else:
        # Documented default: activation order = descending column norm.
        perm = torch.argsort(w.norm(dim=0), descending=True)
        t = quantize_gptq(w, group_size=g, desc_act=True)
    g_idx = t["g_idx"]
    assert g_idx.dtype == torch.int32 and g_idx.shape == (in_f,)
    # Non-trivial assignment, and exactly the permutation-based one.
    assert not torch.equal(g_idx, (torch.arange(in_f) // g).to(torch.int32))
    expected = torch.empty(in_f, dtype=torch.int32)
    for j in range(in_f):
        expected[perm[j]] = j // g
    assert torch.equal(g_idx, expected)
    assert torch.equal(torch.bincount(g_idx.long()), torch.full((in_f // g,), g))

    deq = dequantize_gptq(t["qweight"], t["qzeros"], t["scales"], g_idx)
    ref = _rtn_reference(w, [perm[k * g : (k + 1) * g] for k in range(in_f // g)])
    torch.testing.assert_close(deq, ref, rtol=0, atol=1e-6)
    assert torch.equal(dequantize_linear("gptq", t), deq)


def test_gptq_group_size_minus_one_is_single_group():
    w = torch.randn(8, 32, generator=_gen(11))
    t = quantize_gptq(w, group_size=-1)
    assert t["scales"].shape == (1, 8) and bool((t["g_idx"] == 0).all())
    torch.testing.assert_close(
        dequantize_gptq(**t), _rtn_reference(w, [torch.arange(32)]), rtol=0, atol=1e-6
    )


def test_gptq_known_answer():
    """Hand-packed in=8, out=8, g=8 tensors; catches the v1 "zero - 1" convention."""
    in_f = out_f = 8
    q = [[(i + o) % 16 for o in range(out_f)] for i in range(in_f)]  # q[i][o], includes 8..15 in row 7
    stored_zero = list(range(out_f))  # stored z = o  ->  actual zero point o + 1
    scale = [0.5 * (o + 1) for o in range(out_f)]  # exact in fp16

    qweight = torch.tensor(
        [[_to_i32(sum(q[i][o] << (4 * i) for i in range(8))) for o in range(out_f)]], dtype=torch.int32
    )
    qzeros = torch.tensor([[_to_i32(sum(stored_zero[o] << (4 * o) for o in range(8)))]], dtype=torch.int32)
    assert int(qzeros) == 0x76543210
    scales = torch.tensor([scale], dtype=torch.float16)
    g_idx = torch.zeros(in_f, dtype=torch.int32)

    w = dequantize_gptq(qweight, qzeros, scales, g_idx)
    expected = torch.tensor(
        [[scale[o] * (q[i][o] - (stored_zero[o] + 1)) for i in range(in_f)] for o in range(out_f)]
    )
    assert torch.equal(w, expected)
    # Spot checks written out by hand: o=0 (zero 1, scale 0.5), o=7 (zero 8, scale 4).
    assert float(w[0, 0]) == 0.5 * (0 - 1)
    assert float(w[0, 7]) == 0.5 * (7 - 1)
    assert float(w[7, 0]) == 4.0 * (7 - 8)
    assert float(w[7, 7]) == 4.0 * (14 - 8)

    # Standard symmetric checkpoint: stored 7 (=0x77777777), all q = 15 (=-1 as int32) -> +7 * scale.
    w_sym = dequantize_gptq(
        torch.full((1, 8), -1, dtype=torch.int32),
        torch.tensor([[0x77777777]], dtype=torch.int32),
        torch.full((1, 8), 0.25, dtype=torch.float16),
        g_idx,
    )
    assert torch.equal(w_sym, torch.full((8, 8), 7 * 0.25))

    # Two groups with a non-monotone g_idx: rows 0..3 -> group 1, rows 4..7 -> group 0.
    w2 = dequantize_gptq(
        torch.full((1, 8), _to_i32(0x99999999), dtype=torch.int32),  # q = 9 everywhere
        torch.full((2, 1), 0x77777777, dtype=torch.int32),
        torch.tensor([[1.0] * 8, [2.0] * 8], dtype=torch.float16),
        torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.int32),
    )
    assert torch.equal(w2, torch.tensor([[2.0] * 4 + [1.0] * 4] * 8))


def test_gptq_shape_errors():
    with pytest.raises(ValueError, match="in_features"):
        quantize_gptq(torch.randn(8, 12), group_size=4)
    with pytest.raises(ValueError, match="out_features"):
        quantize_gptq(torch.randn(12, 16), group_size=8)
    with pytest.raises(ValueError, match="group_size"):
        quantize_gptq(torch.randn(8, 24), group_size=16)
    with pytest.raises(ValueError, match="perm"):
        quantize_gptq(torch.randn(8, 16), group_size=8, desc_act=True, perm=torch.zeros(16, dtype=torch.long))
    t = quantize_gptq(torch.randn(8, 16), group_size=8)
    with pytest.raises(ValueError, match="g_idx"):
        dequantize_gptq(t["qweight"], t["qzeros"], t["scales"], torch.full((16,), 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="scales"):
        dequantize_gptq(t["qweight"], t["qzeros"], t["scales"][:, :4], t["g_idx"])


# --------------------------------------------------------------------------- #
# Checkpoint description helpers
# --------------------------------------------------------------------------- #


def test_expected_quant_shapes():
    assert expected_quant_shapes("fp8", 64, 256) == {
        "weight": (64, 256),
        "weight_scale": (),
        "input_scale": (),
    }
    assert expected_quant_shapes("gptq", 64, 256, 128) == {
        "qweight": (32, 64),
        "qzeros": (2, 8),
        "scales": (2, 64),
        "g_idx": (256,),
    }
    # ceil(in / g) groups.
    assert expected_quant_shapes("gptq", 64, 192, 128)["scales"] == (2, 64)
    assert set(expected_quant_shapes("fp8", 1, 1)) == set(get_format("fp8").suffixes)
    assert set(expected_quant_shapes("gptq", 8, 8, 8)) == set(get_format("gptq").suffixes)
    with pytest.raises(ValueError, match="supported"):
        expected_quant_shapes("awq", 8, 8)


def test_dequantize_linear_dispatch_and_missing():
    w = torch.randn(8, 16, generator=_gen(12))
    q, s = quantize_fp8(w)
    fp8 = {"weight": q, "weight_scale": s, "input_scale": torch.tensor(1.0)}
    assert torch.equal(dequantize_linear("fp8", fp8, torch.float32), dequantize_fp8(q, s))
    with pytest.raises(ValueError, match="weight_scale"):
        dequantize_linear("fp8", {"weight": q})
    t = quantize_gptq(w, group_size=8)
    assert torch.equal(dequantize_linear("gptq", t, torch.float32), dequantize_gptq(**t))
    for missing in ("qweight", "qzeros", "scales", "g_idx"):
        with pytest.raises(ValueError, match=missing):
            dequantize_linear("gptq", {k: v for k, v in t.items() if k != missing})
    with pytest.raises(ValueError, match="fp8, gptq"):
        dequantize_linear("int8", t)


def test_quantspec_fp8_parse_and_to_hf():
    ignored = ["model.layers.0.mlp.gate.wg", "model.layers.1.mlp.gate.wg", "lm_head"]
    cfg = {"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ignored}
    spec = QuantSpec.from_hf(cfg)
    assert spec == QuantSpec("fp8", None, False, tuple(ignored))
    assert spec.to_hf() == cfg
    assert QuantSpec.from_hf(spec.to_hf()) == spec
    assert not spec.is_quantized("model.layers.0.mlp.gate.wg")
    assert not spec.is_quantized("lm_head")
    assert spec.is_quantized("model.layers.0.mlp.experts.0.gate_proj")
    assert spec.is_quantized("model.layers.2.mlp.gate.wg")  # not listed
    assert spec.is_quantized("lm_head_extra")  # not on a "." boundary
    assert QuantSpec.from_hf(None) is None


def test_quantspec_default_ignored_and_prefix_matching():
    spec = QuantSpec.from_hf({"quant_method": "fp8", "activation_scheme": "static"})
    assert spec.ignored == DEFAULT_IGNORED
    for layer in (0, 7, 31):
        assert not spec.is_quantized(f"model.layers.{layer}.mlp.gate.wg")
        assert spec.is_quantized(f"model.layers.{layer}.mlp.shared_mlp.down_proj")
        assert spec.is_quantized(f"model.layers.{layer}.self_attn.qkv_proj")
    assert not spec.is_quantized("lm_head")
    assert spec.is_quantized("model.layers.mlp.gate.wg")  # "*" needs exactly one component

    assert QuantSpec.default_ignored(2) == ("lm_head", "model.layers.0.mlp.gate.wg", "model.layers.1.mlp.gate.wg")

    pref = QuantSpec("fp8", None, False, ("model.layers.1", "model.layers.2.self_attn"))
    assert not pref.is_quantized("model.layers.1")
    assert not pref.is_quantized("model.layers.1.mlp.down_proj")
    assert pref.is_quantized("model.layers.10.mlp.down_proj")  # prefix only on "." boundary
    assert not pref.is_quantized("model.layers.2.self_attn.o_proj")
    assert pref.is_quantized("model.layers.2.mlp.up_proj")
    assert pref.is_quantized("model.layers.2.self_attn_extra.o_proj")


def test_quantspec_gptq_parse_and_to_hf():
    cfg = {
        "bits": 4,
        "checkpoint_format": "gptq",
        "desc_act": True,
        "group_size": 128,
        "quant_method": "gptq",
        "static_groups": False,
        "sym": True,
        "true_sequential": True,
    }
    spec = QuantSpec.from_hf(cfg)
    assert spec == QuantSpec("gptq", 128, True, DEFAULT_IGNORED)
    assert spec.to_hf() == cfg  # exactly what AngelSlim writes
    assert not spec.is_quantized("lm_head") and not spec.is_quantized("model.layers.3.mlp.gate.wg")
    assert spec.is_quantized("model.layers.3.mlp.experts.5.down_proj")

    spec2 = QuantSpec.from_hf({**cfg, "desc_act": False, "group_size": 64, "modules_to_not_convert": ["lm_head"]})
    assert spec2 == QuantSpec("gptq", 64, False, ("lm_head",))
    assert spec2.to_hf()["modules_to_not_convert"] == ["lm_head"]
    assert QuantSpec.from_hf(spec2.to_hf()) == spec2
    assert spec2.is_quantized("model.layers.0.mlp.gate.wg")


@pytest.mark.parametrize(
    "cfg, field",
    [
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "quantization_config.activation_scheme"),
        ({"quant_method": "fp8"}, "quantization_config.activation_scheme"),
        (
            {"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]},
            "quantization_config.weight_block_size",
        ),
        ({"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": "lm_head"}, "ignored_layers"),
        ({"quant_method": "gptq", "bits": 8, "group_size": 128, "sym": True}, "quantization_config.bits"),
        ({"quant_method": "gptq", "group_size": 128, "sym": True}, "quantization_config.bits"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": False}, "quantization_config.sym"),
        (
            {"quant_method": "gptq", "bits": 4, "sym": True, "checkpoint_format": "gptq_v2"},
            "quantization_config.checkpoint_format",
        ),
        ({"quant_method": "gptq", "bits": 4, "sym": True, "group_size": 0}, "quantization_config.group_size"),
        ({"quant_method": "awq", "bits": 4}, "quantization_config.quant_method"),
        ({"activation_scheme": "static"}, "quantization_config.quant_method"),
    ],
)
def test_quantspec_errors_name_the_field(cfg, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as exc:
        QuantSpec.from_hf(cfg)
    if field.endswith("quant_method"):
        assert "fp8" in str(exc.value) and "gptq" in str(exc.value)
