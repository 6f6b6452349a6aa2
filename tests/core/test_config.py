"""HunyuanConfig: both dialects, the released models' shapes, and every bad-input path."""

import copy
import json

import pytest

from hunyuan_plugins.config import ARCH_DENSE, ARCH_LARGE, ARCH_MOE, HunyuanConfig, HunyuanConfigError

# Hunyuan-A13B's config.json (Tencent dialect; docs/architecture.md), abridged.
A13B = {
    "architectures": ["HunYuanMoEV1ForCausalLM"], "model_type": "hunyuan",
    "auto_map": {"AutoConfig": "configuration_hunyuan.HunYuanConfig"},
    "hidden_size": 4096, "intermediate_size": 3072, "moe_intermediate_size": [3072] * 32,
    "num_experts": 64, "moe_topk": [8] * 32, "num_shared_expert": [1] * 32, "use_mixed_mlp_moe": True,
    "moe_layer_num_skipped": 0, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "attention_head_dim": 128, "vocab_size": 128167, "max_position_embeddings": 32768, "rope_theta": 10000.0,
    "rope_scaling": {"type": "dynamic", "alpha": 1000.0, "factor": 1.0, "beta_fast": 32, "beta_slow": 1,
                     "mscale": 1.0, "mscale_all_dim": 1.0},
    "use_qk_norm": True, "use_cla": False, "cla_share_factor": 2, "rms_norm_eps": 1e-5, "norm_type": "rms",
    "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 127960, "pad_token_id": 127961, "torch_dtype": "bfloat16",
}
# Hunyuan-Large (docs/architecture.md): CLA, 16 experts top-1 (an int), head_dim 80.
LARGE = {
    "architectures": ["HunYuanForCausalLM"], "model_type": "hunyuan", "hidden_size": 6400,
    "intermediate_size": 18304, "num_experts": 16, "moe_topk": 1, "num_shared_expert": 1,
    "use_mixed_mlp_moe": True, "num_hidden_layers": 64, "num_attention_heads": 80, "num_key_value_heads": 8,
    "attention_head_dim": 80, "vocab_size": 129024, "max_position_embeddings": 131072, "rope_theta": 10000.0,
    "rope_scaling": {"type": "dynamic", "alpha": 1000.0}, "use_qk_norm": True, "use_cla": True,
    "cla_share_factor": 2, "tie_word_embeddings": True,
}
# Hunyuan dense 7B, transformers-native dialect.
DENSE = {
    "architectures": ["HunYuanDenseV1ForCausalLM"], "model_type": "hunyuan_v1_dense", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 128, "vocab_size": 128167, "max_position_embeddings": 262144,
    "rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "alpha": 1000.0, "factor": 1.0},
    "tie_word_embeddings": True,
}


def test_a13b():
    c = HunyuanConfig.from_dict(A13B)
    assert c.architecture == ARCH_MOE and c.is_moe and not c.use_cla
    assert (c.num_heads, c.num_kv_heads, c.head_dim) == (32, 8, 128)
    assert all(s.moe and s.top_k == 8 and s.renormalize and s.expert_size == 3072 and s.shared_size == 3072
               for s in c.layers)
    assert c.num_kv_layers == 32
    assert c.rope_base == pytest.approx(11158839.925, rel=1e-9)  # theta * alpha ** (128 / 126)
    assert c.tie_word_embeddings and c.router_dtype == "float32"


def test_large_cla_and_top1():
    c = HunyuanConfig.from_dict(LARGE)
    assert c.architecture == ARCH_LARGE and c.use_cla and c.cla_share_factor == 2
    assert c.num_kv_layers == 32
    assert [c.layers[i].kv_source for i in range(4)] == [0, 0, 2, 2]
    assert not c.owns_kv(1) and c.owns_kv(2)
    assert all(s.top_k == 1 and not s.renormalize and s.expert_size == 18304 for s in c.layers)
    assert c.head_dim == 80


def test_dense_native():
    c = HunyuanConfig.from_dict(DENSE)
    assert c.architecture == ARCH_DENSE and not c.is_moe and c.num_experts == 0
    assert all(not s.moe and s.shared_size == 14336 for s in c.layers)
    assert c.rope_alpha == 1000.0 and c.max_position_embeddings == 262144


def test_native_moe_sizes_experts_from_intermediate_size():
    raw = dict(DENSE, architectures=["HunYuanMoEV1ForCausalLM"], model_type="hunyuan_v1_moe",
               num_experts=64, moe_topk=8, intermediate_size=3072)
    c = HunyuanConfig.from_dict(raw)
    assert all(s.expert_size == 3072 and s.shared_size == 3072 and s.top_k == 8 for s in c.layers)


def test_native_moe_with_consistent_tencent_fields_loads():
    """The Hub's A13B config: model_type hunyuan_v1_moe plus Tencent's fields, all agreeing."""
    c = HunyuanConfig.from_dict(dict(A13B, model_type="hunyuan_v1_moe"))
    assert all(s.expert_size == 3072 and s.shared_size == 3072 for s in c.layers)


@pytest.mark.parametrize("field, value", [("moe_intermediate_size", 1536), ("moe_intermediate_size", [1536] * 32),
                                          ("num_shared_expert", 2), ("moe_layer_num_skipped", 1)])
def test_native_moe_with_contradicting_tencent_fields_is_refused(field, value):
    """transformers would size this model from intermediate_size: one file, two models -> error."""
    with pytest.raises(HunyuanConfigError) as err:
        HunyuanConfig.from_dict(dict(A13B, model_type="hunyuan_v1_moe", **{field: value}))
    assert err.value.field == field and "model_type 'hunyuan'" in str(err.value)


def test_per_layer_lists_and_skipped_dense_layers():
    raw = dict(A13B, num_hidden_layers=4, moe_topk=[2, 2, 3, 1], moe_intermediate_size=[64, 64, 96, 32],
               num_shared_expert=[1, 1, 2, 0], moe_layer_num_skipped=1)
    c = HunyuanConfig.from_dict(raw)
    assert not c.layers[0].moe and c.layers[0].shared_size == 3072
    assert [s.top_k for s in c.layers[1:]] == [2, 3, 1]
    assert [s.expert_size for s in c.layers[1:]] == [64, 96, 32]
    assert [s.shared_size for s in c.layers[1:]] == [3072, 6144, 0]
    assert c.layers[3].renormalize is False


def test_no_shared_expert_when_mixed_mlp_off():
    c = HunyuanConfig.from_dict(dict(A13B, use_mixed_mlp_moe=False))
    assert all(s.shared_size == 0 for s in c.layers)


def _broken(base, **changes):
    raw = copy.deepcopy(base)
    for k, v in changes.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    return raw


@pytest.mark.parametrize("raw, field", [
    (_broken(A13B, hidden_size=None), "hidden_size"),
    (_broken(A13B, num_experts=None), "num_experts"),
    (_broken(A13B, moe_topk=[8] * 31), "moe_topk"),
    (_broken(A13B, moe_intermediate_size=[3072] * 33), "moe_intermediate_size"),
    (_broken(A13B, num_shared_expert=[1] * 5), "num_shared_expert"),
    (_broken(A13B, moe_topk=[8] * 31 + [65]), "moe_topk[31]"),
    (_broken(A13B, moe_topk=[8] * 31 + ["8"]), "moe_topk[31]"),
    (_broken(A13B, num_key_value_heads=7), "num_key_value_heads"),
    (_broken(A13B, hidden_size="4096"), "hidden_size"),
    (_broken(A13B, num_hidden_layers=0), "num_hidden_layers"),
    (_broken(A13B, rope_scaling={"type": "yarn", "factor": 4.0}), "rope_scaling.type"),
    (_broken(A13B, rope_scaling={"type": "dynamic", "factor": 4.0}), "rope_scaling.alpha"),
    (_broken(A13B, rope_scaling={"type": "dynamic", "alpha": 0.5}), "rope_scaling.alpha"),
    (_broken(A13B, model_type="llama"), "model_type"),
    (_broken(A13B, architectures=["LlamaForCausalLM"]), "architectures"),
    (_broken(DENSE, architectures=["HunYuanMoEV1ForCausalLM"]), "architectures"),  # contradicts model_type
    (_broken(A13B, model_type="hunyuan_v1_moe", use_cla=True), "use_cla"),  # native cannot express CLA
    (_broken(LARGE, use_cla=False), "use_cla"),  # a Large config without CLA would load garbage
    (_broken(LARGE, num_hidden_layers=63), "cla_share_factor"),
    (_broken(A13B, attention_head_dim=127), "attention_head_dim"),
    (_broken(A13B, hidden_act="gelu"), "hidden_act"),
    (_broken(A13B, attention_bias=True), "attention_bias"),
    (_broken(A13B, moe_layer_num_skipped=40), "moe_layer_num_skipped"),
    (_broken(DENSE, num_experts=8), "num_experts"),
    (_broken(A13B, quantization_config="fp8"), "quantization_config"),
])
def test_bad_config_names_the_field(raw, field):
    with pytest.raises(HunyuanConfigError) as err:
        HunyuanConfig.from_dict(raw)
    assert err.value.field == field
    assert f"`{field}`" in str(err.value)


def test_from_pretrained(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LARGE))
    assert HunyuanConfig.from_pretrained(tmp_path).use_cla
    with pytest.raises(FileNotFoundError):
        HunyuanConfig.from_pretrained(tmp_path / "nope")


def test_transformers_autoconfig_reads_tencent_dialect_without_remote_code(tmp_path):
    """model_type 'hunyuan' with an auto_map: AutoConfig must not ask for trust_remote_code."""
    from transformers import AutoConfig

    from hunyuan_plugins import hf_config

    (tmp_path / "config.json").write_text(json.dumps(LARGE | {"auto_map": A13B["auto_map"]}))
    hf_config.register()
    hf_config.register()  # idempotent
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert type(cfg).__name__ == "HunYuanConfig"
    assert cfg.head_dim == 80 and cfg.use_cla
    assert cfg.hunyuan().num_kv_layers == 32


@pytest.mark.parametrize("tp, want", [(1, (32, 8)), (4, (8, 2)), (8, (4, 1)), (16, (2, 1))])
def test_heads_per_rank(tp, want):
    assert HunyuanConfig.from_dict(A13B).heads_per_rank(tp) == want


@pytest.mark.parametrize("tp, field", [(3, "num_attention_heads"), (12, "num_key_value_heads")])
def test_heads_per_rank_refuses_what_does_not_divide(tp, field):
    cfg = HunyuanConfig.from_dict(dict(A13B) if tp == 3 else dict(A13B, num_attention_heads=48, num_key_value_heads=16))
    with pytest.raises(ValueError, match=field):
        cfg.heads_per_rank(tp)


def test_alpha_rope_config_and_trained_context():
    """What the engine adapters ask before serving past max_position_embeddings."""
    from hunyuan_plugins.config import alpha_rope_config
    from hunyuan_plugins.core.tiny import tiny_config

    raw = tiny_config("a13b")
    cfg = alpha_rope_config(raw)
    assert cfg is not None and cfg.positions_unbounded and cfg.trained_context is None  # tiny: not known
    assert alpha_rope_config({**raw, "rope_scaling": None}) is None          # plain RoPE: the engine's ceiling
    assert alpha_rope_config({**raw, "architectures": ["LlamaForCausalLM"]}) is None
    assert alpha_rope_config({**raw, "num_attention_heads": 3}) is None      # invalid: left to the engine
    a13b = HunyuanConfig.from_dict({**raw, "hidden_size": 4096, "num_hidden_layers": 32, "num_experts": 64,
                                    "attention_head_dim": 128, "num_attention_heads": 32, "moe_topk": 8,
                                    "moe_intermediate_size": 3072, "num_shared_expert": 1})
    assert a13b.trained_context == (262144, "Hunyuan-A13B")
