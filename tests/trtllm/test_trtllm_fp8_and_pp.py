"""Tencent FP8 (static per-tensor W8A8) and pipeline parallelism in our TensorRT-LLM classes, on the
TEST-ONLY stand-in of TensorRT-LLM 1.2.1 (tests/trtllm/trtllm_stand_in.py).

The stand-in's FP8 layers follow TensorRT-LLM's source (docs/trtllm.md, "Checked against source"):
its FP8 QDQ Linear gives a fused q/k/v or gate/up ONE input scale (the max) and requantises the
shards to the max weight scale; its FP8 QDQ MoE gives a whole layer one input scale per GEMM. So:

* what TensorRT-LLM's own layers compute is checked against the reference core run on the same
  checkpoint rescaled that way (``fp8_as_trtllm_loads_it``), and the difference from the core on the
  checkpoint as stored is printed;
* our expert op (``hunyuan::moe_experts_fp8``, exact per expert and per gate/up input scale) runs
  with ``HUNYUAN_MOE_BACKEND=hunyuan``, counted at the dispatcher.
"""

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from trtllm_helpers import fp8_as_trtllm_loads_it, hf_config, load_weights_dict

from hunyuan_plugins.core.model import generate, load_model, prompt_logprobs

PROMPT = [1, 17, 42, 99, 5, 300, 77, 12, 250, 8]
NEW = 6



class HunyuanOpCalls(TorchDispatchMode):
    """Counts the torch.ops.hunyuan.* calls the dispatcher sees."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if name.startswith("hunyuan::"):
            self.calls[name.split("::", 1)[1].split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


def built(tmp_path, src, name):
    """hunyuan-trtllm-build, then TensorRT-LLM's config loading (hf_quant_config.json) and model loading."""
    from hunyuan_plugins.trtllm.build import build as trt_build

    out = tmp_path / name
    trt_build(src, str(out), progress=False)
    return str(out / "pytorch")


def load(stand_in, path, **mc_kwargs):
    mc = stand_in.ModelConfig.from_pretrained(path, **mc_kwargs)
    mc.pretrained_config.torch_dtype = torch.float32  # fp32 activations (the builder writes the checkpoint's dtype)
    return stand_in.load_model(mc, load_weights_dict(path))


def compare(stand_in, trt, ref, what, new=NEW, counter=None):
    """Greedy tokens identical, prompt logprobs within 1e-4; prints the figure. ``counter``: a dispatch
    mode active around the TensorRT-LLM model's calls only."""
    import contextlib

    tokens = generate(ref, PROMPT, new)
    lp_ref = prompt_logprobs(ref, PROMPT + tokens)
    with counter if counter is not None else contextlib.nullcontext():
        got = stand_in.generate(trt, PROMPT, new)
        lp = stand_in.prompt_logprobs(trt, PROMPT + tokens)
    err = float((lp - lp_ref).abs().max())
    print(f"{what}: tokens {'identical' if got == tokens else 'DIFFER'} ({len(tokens)}), max |dlogprob| {err:.2e}")
    assert got == tokens
    assert err < 1e-4
    return err


@pytest.mark.parametrize("model", ["a13b", "large"])
def test_fp8_w8a8_our_experts_trtllm_linears(trt_standin, tiny, tmp_path, monkeypatch, model):
    """HUNYUAN_MOE_BACKEND=hunyuan: routed experts through hunyuan::moe_experts_fp8 (exact per expert),
    linears through TensorRT-LLM's FP8 QDQ Linear. Against the W8A8 core on the checkpoint whose fused
    shards carry the scales TensorRT-LLM's linears use (experts as stored): identical."""
    stand_in, mod = trt_standin
    monkeypatch.setenv("HUNYUAN_MOE_BACKEND", "hunyuan")
    src = tiny(model, "tencent", "fp8")
    same = fp8_as_trtllm_loads_it(src, str(tmp_path / "as-trtllm"), experts=False)
    trt = load(stand_in, built(tmp_path, src, "out"))
    cfg = trt.hy_config
    layer = trt.model.layers[0]
    assert isinstance(layer.mlp.experts, mod.HunyuanFP8Experts)
    assert layer.mlp.experts.w13.dtype == torch.float8_e4m3fn
    assert layer.mlp.experts.a13_scale.shape == (cfg.num_experts, 2)  # gate and up input scales, per expert
    assert layer.self_attn.qkv_proj.weight.dtype == torch.float8_e4m3fn  # TensorRT-LLM's FP8 QDQ Linear
    assert layer.self_attn.o_proj.input_scale is not None  # static W8A8: the stored input scale is used
    assert trt.runtime.moe.ours and trt.runtime.moe_format == "fp8_w8a8"
    assert "moe_experts_fp8" in trt.runtime.describe()

    counter = HunyuanOpCalls()
    compare(stand_in, trt, load_model(same, torch.float32), f"{model} FP8, our experts vs W8A8 core", counter=counter)
    moe_layers = sum(spec.moe for spec in cfg.layers)
    steps = 1 + NEW + 1  # prefill + NEW decode steps (generate), + the prompt-logprob pass
    assert counter.calls["moe_experts_fp8"] == moe_layers * steps, counter.calls
    assert counter.calls["moe_route"] == moe_layers * steps
    assert counter.calls["linear_fp8"] == 0  # linears are TensorRT-LLM's own

    # the documented difference: TensorRT-LLM's fused linears vs the checkpoint's per-shard scales
    ref = load_model(src, torch.float32)
    tokens = generate(ref, PROMPT, NEW)
    d = float((stand_in.prompt_logprobs(trt, PROMPT + tokens) - prompt_logprobs(ref, PROMPT + tokens)).abs().max())
    print(f"{model} FP8 vs the W8A8 core on the checkpoint as stored (per-shard scales): max |dlogprob| {d:.2e}")


def test_fp8_tensorrt_llm_moe_by_default(trt_standin, tiny, tmp_path, monkeypatch):
    """No flag, no variable: HUNYUAN_MOE_BACKEND=auto keeps TensorRT-LLM's FP8 MoE (it has a kernel),
    loaded through its FP8 QDQ path; equal to the core on the checkpoint rescaled as that path does
    (one input scale per layer, gate/up requantised to the max), and no hunyuan op runs."""
    stand_in, mod = trt_standin
    monkeypatch.delenv("HUNYUAN_MOE_BACKEND", raising=False)
    src = tiny("a13b", "tencent", "fp8")
    same = fp8_as_trtllm_loads_it(src, str(tmp_path / "as-trtllm"), experts=True)
    trt = load(stand_in, built(tmp_path, src, "out"))
    experts = trt.model.layers[0].mlp.experts
    assert type(experts).__name__ == "CutlassFusedMoE" and experts.w3_w1_weight.dtype == torch.float8_e4m3fn
    assert not trt.runtime.moe.ours
    assert experts.post_load_weights_calls == 1  # the model loader's post_load_weights step ran
    counter = HunyuanOpCalls()
    compare(stand_in, trt, load_model(same, torch.float32), "a13b FP8, TensorRT-LLM MoE vs W8A8 core (its scales)",
            counter=counter)
    assert not counter.calls, counter.calls


def test_fp8_not_given_to_tensorrt_llm_is_dequantised_by_the_plan(trt_standin, tiny, monkeypatch):
    """A raw Tencent FP8 directory (not built): TensorRT-LLM reads no quant config from it and builds
    unquantized layers, so quant.plan says dequantise at load (weight-only), exactly the core's
    fp8_activations="none"; HUNYUAN_TRTLLM_DEQUANTIZE=1 with a built (quantized) model is refused."""
    stand_in, mod = trt_standin
    src = tiny("a13b", "tencent", "fp8")
    trt = stand_in.load_model(stand_in.ModelConfig(pretrained_config=hf_config(src)), load_weights_dict(src))
    assert trt.runtime.plan.dequantize and "not given the quantization config" in trt.runtime.plan.reason
    assert trt.model.layers[0].self_attn.qkv_proj.weight.dtype == torch.float32
    compare(stand_in, trt, load_model(src, torch.float32, fp8_activations="none"), "a13b FP8 dequantised (W8A16)")


def test_dequantize_env_with_quantized_layers_is_refused(trt_standin, tiny, tmp_path, monkeypatch):
    stand_in, _ = trt_standin
    path = built(tmp_path, tiny("a13b", "tencent", "fp8"), "out")
    monkeypatch.setenv("HUNYUAN_TRTLLM_DEQUANTIZE", "1")
    with pytest.raises(ValueError, match="HUNYUAN_TRTLLM_DEQUANTIZE=1.*quant_algo=FP8"):
        load(stand_in, path)


def test_moe_backend_engine_for_int4_is_refused_and_old_variable_named(trt_standin, tmp_path, monkeypatch):
    """TensorRT-LLM 1.2.1 has no W4A16 MoE: HUNYUAN_MOE_BACKEND=engine says so; the replaced
    HUNYUAN_TRTLLM_MOE is refused naming its replacement (not silently ignored)."""
    from trtllm_helpers import make_gptq_contiguous

    stand_in, _ = trt_standin
    path = built(tmp_path, make_gptq_contiguous(str(tmp_path / "gptq")), "out")
    monkeypatch.setenv("HUNYUAN_MOE_BACKEND", "engine")
    with pytest.raises(ValueError, match="no int4_w4a16 MoE kernel"):
        load(stand_in, path)
    monkeypatch.delenv("HUNYUAN_MOE_BACKEND")
    monkeypatch.setenv("HUNYUAN_TRTLLM_MOE", "hunyuan")
    with pytest.raises(ValueError, match="HUNYUAN_MOE_BACKEND"):
        load(stand_in, path)


def test_fp8_expert_missing_input_scale_is_named(trt_standin, tiny, tmp_path, monkeypatch):
    stand_in, _ = trt_standin
    monkeypatch.setenv("HUNYUAN_MOE_BACKEND", "hunyuan")
    path = built(tmp_path, tiny("a13b", "tencent", "fp8"), "out")
    mc = stand_in.ModelConfig.from_pretrained(path)
    mc.pretrained_config.torch_dtype = torch.float32
    model = stand_in.AutoModelForCausalLM.from_config(mc)
    w = load_weights_dict(path)
    del w["model.layers.1.mlp.experts.3.up_proj.input_scale"]
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.experts\.3\.w3\.input_scale"):
        model.load_weights(w)


# ---------------------------------------------------------------- pipeline parallelism
@pytest.mark.parametrize("fmt", ["bf16", "fp8"])
def test_pipeline_parallel_two_ranks(trt_standin, tiny, tmp_path, fmt):
    """PP=2 as TensorRT-LLM sets it up (__pp_init__: layers outside the rank skipped, their weights
    removed; first/last layer of a rank receive/send): each rank loads only its layers (this failed
    before load_weights skipped removed modules: TensorRT-LLM's Linear has no weight to copy into),
    post_load_weights skips removed modules, and the two ranks in sequence equal the core."""
    stand_in, mod = trt_standin
    src = tiny("a13b", "tencent", fmt)
    path = built(tmp_path, src, "out") if fmt == "fp8" else src
    ref_path = fp8_as_trtllm_loads_it(src, str(tmp_path / "as-trtllm"), experts=True) if fmt == "fp8" else src
    ranks = []
    for rank in range(2):
        mapping = stand_in.Mapping(world_size=2, pp_size=2, rank=rank)
        if fmt == "fp8":
            ranks.append(load(stand_in, path, mapping=mapping))
        else:
            ranks.append(stand_in.load_model(stand_in.ModelConfig(pretrained_config=hf_config(path), mapping=mapping),
                                             load_weights_dict(path)))
    first, last = ranks
    n = first.hy_config.num_layers
    assert n == 4
    for r, m in enumerate(ranks):
        mine = set(range(2 * r, 2 * r + 2))
        for i, layer in enumerate(m.model.layers):
            if i in mine:
                assert not getattr(layer, "_weights_removed", False)
                assert layer.self_attn.qkv_proj.weight.numel() > 0
            else:  # skip_forward: DecoderLayer's (our HunyuanDecoderLayer inherits it), weights gone
                assert layer._weights_removed and not list(layer.self_attn.parameters())
                assert layer.forward == layer.skip_forward
        if fmt == "fp8":
            calls = [getattr(layer.mlp.experts, "post_load_weights_calls", 0) for layer in m.model.layers]
            assert calls == [1 if i in mine else 0 for i in range(n)], calls
    # rank 0 keeps layer 2's input_layernorm (TensorRT-LLM keeps it for fusion)
    assert first.model.layers[2].input_layernorm.weight.numel() > 0
    assert first.model.norm._weights_removed and last.model.embed_tokens._weights_removed
    assert not stand_in.SKIP_FORWARD_WARNINGS  # every skipped module had a skip_forward
    compare(stand_in, ranks, load_model(ref_path, torch.float32), f"a13b {fmt} PP=2")
