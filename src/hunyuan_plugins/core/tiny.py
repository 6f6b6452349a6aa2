"""Tiny, realistic Hunyuan checkpoints: the fixtures of every test and the main job's default.

Each one is a real checkpoint directory (config.json, safetensors, tokenizer.json with the Hunyuan
chat template, generation_config.json) shaped like the released model, only small:

    model   architecture               notable
    a13b    HunYuanMoEV1ForCausalLM    8 experts top-2 + shared, QK-norm, alpha RoPE, tied head
    large   HunYuanForCausalLM         CLA (share 2, no k/v on odd layers), 8 experts top-1
    dense   HunYuanDenseV1ForCausalLM  Llama layout + QK-norm + alpha RoPE

    dialect tencent  model_type "hunyuan", per-expert tensors, mlp.gate.wg, per-layer lists
            native   transformers v5 (hunyuan_v1_moe / hunyuan_v1_dense), fused 3-D experts
            fused    tencent names with engine-fused qkv_proj and gate_and_up_proj ([up; gate])
    format  bf16 | fp32 | and each registered quantization format's ``tiny_name``
            (``hunyuan_plugins.quant``): fp8 (Tencent static per-tensor W8A8), gptq-int4
            (AutoGPTQ v1, group 128, act order)

Weights are seeded and scaled (std ~ gain / sqrt(fan_in)) so logits and routing are far from
flat: greedy tokens are a meaningful comparison between engines.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch
from safetensors.torch import save_file

from hunyuan_plugins import quant
from hunyuan_plugins.config import ARCH_DENSE, ARCH_LARGE, ARCH_MOE, HunyuanConfig
from hunyuan_plugins.core import tokenizer as tok
from hunyuan_plugins.core.checkpoint import linear_shapes, other_shapes

MODELS = ("a13b", "large", "dense")
DIALECTS = ("tencent", "native", "fused")
PLAIN_FORMATS = ("bf16", "fp32")


def quant_formats() -> dict[str, quant.QuantFormat]:
    """`--format` name -> registered quantization format."""
    return {f.tiny_name: f for f in quant.FORMATS.values()}


FORMATS = PLAIN_FORMATS + tuple(quant_formats())


@dataclasses.dataclass(frozen=True)
class Size:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128       # shared expert / dense MLP
    expert_intermediate: int = 128
    experts: int = 8
    vocab: int = 512


SIZES = {
    "tiny": Size(),
    # the CPU benchmark size of the engine issues (hidden 512, 4 layers, 16 experts)
    "mid": Size(hidden=512, layers=4, heads=8, kv_heads=2, intermediate=512, expert_intermediate=256,
                experts=16, vocab=2048),
}


def tiny_config(model: str, dialect: str = "tencent", fmt: str = "bf16", size: str = "tiny",
                static_groups: bool = False) -> dict:
    """config.json of a tiny checkpoint, in the requested dialect."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    formats = PLAIN_FORMATS + tuple(quant_formats())
    if fmt not in formats:
        raise ValueError(f"format must be one of {formats}, got {fmt!r}")
    if dialect == "native" and model == "large":
        raise ValueError("transformers-native configs cannot express CLA: use dialect 'tencent' for 'large'")
    if dialect != "tencent" and fmt not in PLAIN_FORMATS:
        raise ValueError("quantized tiny checkpoints use the Tencent dialect, as the released ones do")
    s = SIZES[size]
    ids = tok.special_token_ids(s.vocab)
    head_dim = s.hidden // s.heads
    cfg = {
        "vocab_size": s.vocab, "hidden_size": s.hidden, "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads, "num_key_value_heads": s.kv_heads, "intermediate_size": s.intermediate,
        "hidden_act": "silu", "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
        "tie_word_embeddings": model != "dense", "attention_bias": False, "mlp_bias": False,
        "bos_token_id": ids["<|bos|>"], "eos_token_id": ids["<|eos|>"], "pad_token_id": ids["<|pad|>"],
        "eod_token_id": ids["<|extra_5|>"], "sep_token_id": ids["<|extra_0|>"],
        "torch_dtype": "float32" if fmt == "fp32" else "bfloat16", "use_cache": True,
    }
    if dialect == "native":
        cfg.update(model_type="hunyuan_v1_dense" if model == "dense" else "hunyuan_v1_moe", head_dim=head_dim,
                   rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "alpha": 1000.0, "factor": 1.0})
        if model == "a13b":
            cfg.update(num_experts=s.experts, moe_topk=2)
        cfg["architectures"] = [ARCH_DENSE if model == "dense" else ARCH_MOE]
        return cfg
    L = s.layers
    cfg.update(model_type="hunyuan", attention_head_dim=head_dim, use_qk_norm=True, norm_type="rms",
               rope_theta=10000.0,
               rope_scaling={"type": "dynamic", "alpha": 1000.0, "factor": 1.0, "beta_fast": 32, "beta_slow": 1,
                             "mscale": 1.0, "mscale_all_dim": 1.0},
               use_cla=model == "large", cla_share_factor=2)
    if model == "dense":
        cfg.update(architectures=[ARCH_DENSE])
    elif model == "a13b":
        cfg.update(architectures=[ARCH_MOE], num_experts=s.experts, moe_topk=[2] * L,
                   moe_intermediate_size=[s.expert_intermediate] * L, num_shared_expert=[1] * L,
                   use_mixed_mlp_moe=True, moe_layer_num_skipped=0, norm_topk_prob=True, moe_drop_tokens=False)
    else:  # large: CLA, top-1, one shared expert, experts sized intermediate_size
        cfg.update(architectures=[ARCH_LARGE], num_experts=s.experts, moe_topk=1, num_shared_expert=1,
                   moe_intermediate_size=s.intermediate, use_mixed_mlp_moe=True, moe_layer_num_skipped=0)
    if fmt not in PLAIN_FORMATS:
        cfg["quantization_config"] = quant_formats()[fmt].tiny_spec(_ignored(model, fmt, L)).to_hf()
    if static_groups:
        if cfg.get("quantization_config", {}).get("quant_method") != "gptq":
            raise ValueError(f"static_groups is a GPTQ option; format {fmt!r} is not GPTQ")
        cfg["quantization_config"]["static_groups"] = True  # act order, groups contiguous (desc_act stays true)
    return cfg


def _ignored(model: str, fmt: str, num_layers: int) -> tuple[str, ...]:
    """What the releases leave unquantized: AngelSlim's FP8 lists the head and every layer's router
    by name; its GPTQ writes no list (the default: head and routers)."""
    if fmt != "fp8":
        return quant.DEFAULT_IGNORED
    return ("lm_head",) if model == "dense" else quant.QuantSpec.default_ignored(num_layers)


def random_weights(cfg: HunyuanConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Canonical fp32 weights, seeded; std = gain / sqrt(fan_in) so nothing is flat."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=g) * std

    sd = {}
    for name, shape in other_shapes(cfg).items():
        if name.endswith("embed_tokens.weight"):
            sd[name] = normal(shape, 1.0)
        elif name.endswith("mlp.gate.weight"):
            sd[name] = normal(shape, 2.0 / shape[1] ** 0.5)  # routing clearly prefers some experts
        else:  # norms: around one, each different
            sd[name] = 1.0 + normal(shape, 0.1)
    for prefix, (out_f, in_f) in linear_shapes(cfg).items():
        # residual writers 3x: layer outputs dominate the small embeddings, so a tied head does
        # not just copy the last token (greedy outputs vary; measured on the tiny a13b)
        gain = 3.0 if prefix.endswith(("o_proj", "down_proj")) else 1.0
        sd[f"{prefix}.weight"] = normal((out_f, in_f), gain / in_f ** 0.5)
    sd["model.embed_tokens.weight"] *= 0.1
    return sd


def to_dialect(sd: dict[str, torch.Tensor], cfg: HunyuanConfig, dialect: str, fmt: str) -> dict[str, torch.Tensor]:
    """Canonical fp32 weights -> stored tensors of `dialect`/`fmt` (inverse of checkpoint.py's reading)."""
    dtype = torch.float32 if fmt == "fp32" else torch.bfloat16
    spec = quant.QuantSpec.from_hf(cfg.quantization_config)
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        prefix = name.rsplit(".", 1)[0]
        if name.endswith("mlp.gate.weight"):
            out[f"{prefix}.wg.weight"] = t.float()  # fp32 router, Tencent's module name
        elif spec is not None and prefix in _linears(cfg) and spec.is_quantized(prefix) and prefix != "lm_head":
            out.update(spec.format.quantize(spec, prefix, t))
        else:
            out[name] = t.to(dtype)
    if dialect == "native":
        _fuse_experts_3d(out, cfg)
    elif dialect == "fused":
        _fuse_engine_style(out, cfg)
    return out


def _linears(cfg: HunyuanConfig) -> set[str]:
    return set(linear_shapes(cfg))


def _fuse_experts_3d(out: dict[str, torch.Tensor], cfg: HunyuanConfig) -> None:
    for i, spec in enumerate(cfg.layers):
        if not spec.moe:
            continue
        p = f"model.layers.{i}.mlp.experts"
        gate_up, down = [], []
        for e in range(cfg.num_experts):
            gate_up.append(torch.cat([out.pop(f"{p}.{e}.gate_proj.weight"), out.pop(f"{p}.{e}.up_proj.weight")]))
            down.append(out.pop(f"{p}.{e}.down_proj.weight"))
        out[f"{p}.gate_up_proj"] = torch.stack(gate_up)
        out[f"{p}.down_proj"] = torch.stack(down)


def _fuse_engine_style(out: dict[str, torch.Tensor], cfg: HunyuanConfig) -> None:
    kv, d, H = cfg.num_kv_heads, cfg.head_dim, cfg.hidden_size
    g = cfg.num_heads // kv
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}"
        if cfg.owns_kv(i) and f"{p}.self_attn.k_proj.weight" in out:
            q = out.pop(f"{p}.self_attn.q_proj.weight").view(kv, g, d, H)
            k = out.pop(f"{p}.self_attn.k_proj.weight").view(kv, 1, d, H)
            v = out.pop(f"{p}.self_attn.v_proj.weight").view(kv, 1, d, H)
            out[f"{p}.self_attn.qkv_proj.weight"] = torch.cat([q, k, v], dim=1).reshape(-1, H)
        for mlp in (f"{p}.mlp", f"{p}.mlp.shared_mlp"):
            if f"{mlp}.gate_proj.weight" in out:
                gate, up = out.pop(f"{mlp}.gate_proj.weight"), out.pop(f"{mlp}.up_proj.weight")
                out[f"{mlp}.gate_and_up_proj.weight"] = torch.cat([up, gate])


def make_tiny(out_dir: str, model: str = "a13b", dialect: str = "tencent", fmt: str = "bf16",
              size: str = "tiny", seed: int = 0, shards: int = 1, static_groups: bool = False,
              weights: dict[str, torch.Tensor] | None = None) -> str:
    """Write a tiny checkpoint directory; returns its path. ``static_groups``: GPTQ act order with
    ``static_groups: true`` (contiguous g_idx, the form TensorRT-LLM's W4A16 layout can express).
    ``weights``: canonical fp32 weights to write (default: :func:`random_weights`)."""
    raw = tiny_config(model, dialect, fmt, size, static_groups)
    cfg = HunyuanConfig.from_dict(raw)
    tensors = to_dialect(random_weights(cfg, seed) if weights is None else weights, cfg, dialect, fmt)
    os.makedirs(out_dir, exist_ok=True)
    _save(tensors, out_dir, shards)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(raw, f, indent=2)
    gen = {"bos_token_id": raw["bos_token_id"], "eos_token_id": [raw["eos_token_id"], raw["eod_token_id"]],
           "pad_token_id": raw["pad_token_id"], "do_sample": False}
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    tok.write_tokenizer(out_dir, cfg.vocab_size)
    return out_dir


def _save(tensors: dict[str, torch.Tensor], out_dir: str, shards: int) -> None:
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    meta = {"format": "pt"}
    if shards <= 1:
        save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata=meta)
        return
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, os.path.join(out_dir, file), metadata=meta)
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
