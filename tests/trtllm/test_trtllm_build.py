"""hunyuan-trtllm-build end to end on tiny checkpoints (plain torch; no TensorRT-LLM needed)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from trtllm_helpers import make_gptq_contiguous

from hunyuan_plugins.config import HunyuanConfig
from hunyuan_plugins.core.checkpoint import Checkpoint
from hunyuan_plugins.quant.gptq import dequantize as dequantize_gptq
from hunyuan_plugins.trtllm.build import build, main
from hunyuan_plugins.trtllm.convert import BuildError, dequantize_w4a16, shard_rule


def run(tmp_path, src, name, **kw):
    out = str(tmp_path / name)
    kw.setdefault("progress", False)
    return build(src, out, **kw), out


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_text(path):
    with open(path) as f:
        return f.read()


def read_dir(path):
    files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    out = {}
    for f in files:
        out.update(load_file(os.path.join(path, f)))
    return out


def source_tensors(src):
    return dict(Checkpoint(src).iter_tensors())


def unshard(name, ranks, plan_like):
    """Reassemble one tensor from its per-rank pieces (inverse of the sharding rules)."""
    kind, dim, _parts, owner = shard_rule(name, plan_like)
    tp, ep = plan_like.tp, plan_like.ep
    holders = [r for r in range(tp) if name in ranks[r]]
    if owner >= 0:
        holders = [r for r in range(tp) if r % ep == owner]
        assert all(name in ranks[r] for r in holders)
        assert not any(name in ranks[r] for r in range(tp) if r % ep != owner), f"{name} on a foreign EP rank"
        pieces = [ranks[r][name] for r in sorted(holders, key=lambda r: r // ep)]
    else:
        assert len(holders) == tp, f"{name} missing on some rank"
        pieces = [ranks[r][name] for r in range(tp)]
    if kind == "replicate":
        assert all(torch.equal(p, pieces[0]) for p in pieces)
        return pieces[0]
    return torch.cat(pieces, dim=dim)


class _P:  # the fields shard_rule reads
    def __init__(self, cfg, tp, ep, quant=None):
        self.cfg, self.tp, self.ep, self.quant, self.moe_tp = cfg, tp, ep, quant, tp // ep


def check_shards(out, tp, ep, quant=None):
    eng = os.path.join(out, "engine_checkpoint")
    ranks = [load_file(os.path.join(eng, f"rank{r}.safetensors")) for r in range(tp)]
    full = read_dir(os.path.join(out, "pytorch"))
    with open(os.path.join(eng, "config.json")) as f:
        conf = json.load(f)
    cfg = HunyuanConfig.from_dict(read_json(os.path.join(out, "pytorch", "config.json")))
    p = _P(cfg, tp, ep, quant)
    names = set().union(*ranks)
    assert names == set(full)
    sharded = 0
    for name, t in full.items():
        got = unshard(name, ranks, p)
        assert got.dtype == t.dtype and torch.equal(got.view(torch.uint8) if got.dtype == torch.float8_e4m3fn
                                                    else got, t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn
                                                    else t), name
        sharded += shard_rule(name, p)[0] != "replicate"
    assert sharded > 0
    assert conf["mapping"] == {"world_size": tp, "tp_size": tp, "pp_size": 1, "cp_size": 1,
                               "moe_tp_size": tp // ep, "moe_ep_size": ep}
    return ranks, full, conf


@pytest.mark.parametrize("dialect", ["tencent", "native"])
def test_a13b_bf16_tp2_ep2(tmp_path, tiny, dialect):
    src = tiny("a13b", dialect)
    s, out = run(tmp_path, src, "a13b", tp=2, ep=2, engine_checkpoint=True)
    ranks, full, conf = check_shards(out, 2, 2)
    ref = source_tensors(src)
    assert set(full) == set(ref)  # every dialect -> the canonical names
    for name, t in ref.items():
        assert torch.equal(full[name], t.float() if name.endswith("mlp.gate.weight") else t), name
    assert full["model.layers.0.mlp.gate.weight"].dtype == torch.float32
    # EP: rank 0 holds experts 0..3, rank 1 experts 4..7, each whole
    assert "model.layers.0.mlp.experts.0.gate_proj.weight" in ranks[0]
    assert "model.layers.0.mlp.experts.0.gate_proj.weight" not in ranks[1]
    assert "model.layers.0.mlp.experts.7.down_proj.weight" in ranks[1]
    assert conf["architecture"] == "HunYuanMoEV1ForCausalLM" and conf["moe"]["top_k"] == 2
    cfg = HunyuanConfig.from_pretrained(src)
    assert conf["rotary_base"] == pytest.approx(cfg.rope_base)
    opts = read_text(os.path.join(out, "extra_llm_api_options.yaml"))
    import yaml
    y = yaml.safe_load(opts)
    assert y["moe_config"]["backend"] == "CUTLASS" and y["kv_cache_config"]["dtype"] == "auto"
    assert y["cuda_graph_config"]["batch_sizes"][-1] == 128
    serve = read_text(os.path.join(out, "serve.sh"))
    assert "--tp_size 2 --ep_size 2" in serve and "--custom_module_dirs" in serve
    assert s["engine_built"] is False and "not installed" in s["engine_status"]


def test_large_cla_tp2(tmp_path, tiny):
    src = tiny("large")
    s, out = run(tmp_path, src, "large", tp=2, engine_checkpoint=True)
    ranks, full, conf = check_shards(out, 2, 1)
    assert "model.layers.1.self_attn.k_proj.weight" not in full  # CLA cross layer: no K/V
    assert "model.layers.0.self_attn.k_proj.weight" in full
    assert [layer["kv_source"] for layer in conf["hunyuan"]["layers"]] == [0, 0, 2, 2]
    assert conf["moe"]["normalization_mode"] == 0  # top-1, not renormalised
    assert s["kv_cache_layers"] == 2
    # q_proj split by heads: each rank holds half the query rows
    assert ranks[0]["model.layers.1.self_attn.q_proj.weight"].shape[0] == full[
        "model.layers.1.self_attn.q_proj.weight"].shape[0] // 2


def test_dense_tp4_replicates_kv_heads(tmp_path, tiny):
    src = tiny("dense")
    cfg = HunyuanConfig.from_pretrained(src)
    assert cfg.num_kv_heads == 2 and not cfg.tie_word_embeddings
    _, out = run(tmp_path, src, "dense", tp=4, dtype="float32", engine_checkpoint=True)
    eng = os.path.join(out, "engine_checkpoint")
    ranks = [load_file(os.path.join(eng, f"rank{r}.safetensors")) for r in range(4)]
    k = read_dir(os.path.join(out, "pytorch"))["model.layers.0.self_attn.k_proj.weight"]
    assert k.dtype == torch.float32
    d = cfg.head_dim
    for r in range(4):
        assert torch.equal(ranks[r]["model.layers.0.self_attn.k_proj.weight"], k[(r // 2) * d:(r // 2 + 1) * d])
    lm = torch.cat([ranks[r]["lm_head.weight"] for r in range(4)])
    assert torch.equal(lm, read_dir(os.path.join(out, "pytorch"))["lm_head.weight"])


def test_fp8_scales_preserved(tmp_path, tiny):
    src = tiny("a13b", "tencent", "fp8")
    _, out = run(tmp_path, src, "fp8", tp=2, engine_checkpoint=True)
    ranks, full, conf = check_shards(out, 2, 1, "fp8")
    ref = source_tensors(src)
    n_scales = 0
    for name, t in ref.items():
        if t.dtype == torch.float8_e4m3fn:
            assert full[name].dtype == torch.float8_e4m3fn
            assert torch.equal(full[name].view(torch.uint8), t.view(torch.uint8)), name
        elif name.endswith(("weight_scale", "input_scale")):
            n_scales += 1
            assert full[name].dtype == torch.float32 and full[name].item() == t.float().item(), name
            for r in range(2):  # per-tensor scales replicated on every rank
                assert ranks[r][name].item() == t.float().item()
    assert n_scales > 50
    qc = read_json(os.path.join(out, "pytorch", "hf_quant_config.json"))["quantization"]
    assert qc["quant_algo"] == "FP8" and "lm_head" in qc["exclude_modules"]
    assert "model.layers.*.mlp.gate" in qc["exclude_modules"]
    pt_conf = read_json(os.path.join(out, "pytorch", "config.json"))
    assert "quantization_config" not in pt_conf  # TRT-LLM 1.2 would not recognise Tencent's per-tensor form
    assert conf["quantization"]["quant_algo"] == "FP8"
    assert "lm_head.weight" not in full or full["lm_head.weight"].dtype == torch.bfloat16


@pytest.fixture(scope="module")
def gptq_src(tmp_path_factory):
    return make_gptq_contiguous(str(tmp_path_factory.mktemp("gptq") / "a13b-gptq-noact"))


def trtllm_w4a16_dense(weight, weight_scale):
    """The dense [out, in] weight TensorRT-LLM's W4A16_AWQ_LinearMethod computes with, from checkpoint
    tensors, written here from its loader and ModelOpt's packer, not from the builder: the loader
    takes ``weight.T`` -> (in, out/2) int8 and ``weight_scale.T`` -> (in/G, out); each byte holds
    output column 2j in its low nibble and 2j+1 in its high nibble, signed two's-complement int4
    (modelopt/torch/export/quant_utils.py pack_int4_in_uint8, nvidia-modelopt 0.37.0 l.680-721)."""
    b = weight.T.contiguous().view(torch.uint8).to(torch.int16)      # (in, out/2)
    lo, hi = b & 0xF, b >> 4
    cols = torch.empty(b.shape[0], 2 * b.shape[1], dtype=torch.float32)
    cols[:, 0::2] = (lo - 16 * (lo >= 8)).float()
    cols[:, 1::2] = (hi - 16 * (hi >= 8)).float()
    s = weight_scale.T.float()                                       # (in/G, out)
    return (cols * s.repeat_interleave(cols.shape[0] // s.shape[0], dim=0)).T


def test_gptq_int4_to_w4a16_exact(tmp_path, gptq_src):
    _, out = run(tmp_path, gptq_src, "int4", engine_checkpoint=True)
    full = read_dir(os.path.join(out, "pytorch"))
    ref = Checkpoint(gptq_src)
    raw = dict(ref.iter_tensors())
    prefixes = {n.rsplit(".", 1)[0] for n in raw if n.endswith(".qweight")}
    assert len(prefixes) > 50
    for p in prefixes:
        w, sc = full[f"{p}.weight"], full[f"{p}.weight_scale"]
        dense = dequantize_gptq(raw[f"{p}.qweight"], raw[f"{p}.qzeros"], raw[f"{p}.scales"], raw[f"{p}.g_idx"])
        out_f, in_f = dense.shape
        assert w.dtype == torch.int8 and tuple(w.shape) == (out_f // 2, in_f)  # ModelOpt: packed along out
        assert sc.dtype == torch.float16 and torch.equal(sc, raw[f"{p}.scales"].t())  # GPTQ scales, transposed
        assert torch.equal(full[f"{p}.pre_quant_scale"], torch.ones(in_f, dtype=full[f"{p}.pre_quant_scale"].dtype))
        assert torch.equal(trtllm_w4a16_dense(w, sc), dense), p
        assert torch.equal(dequantize_w4a16(w, sc), dense), p  # our own inverse agrees
    qc = read_json(os.path.join(out, "pytorch", "hf_quant_config.json"))["quantization"]
    assert qc["quant_algo"] == "W4A16_AWQ" and qc["group_size"] == 128 and qc["has_zero_point"] is False
    assert read_json(os.path.join(out, "engine_checkpoint", "config.json"))["quantization"][
        "quant_algo"] == "W4A16_GPTQ"


def test_gptq_int4_tp_must_keep_whole_groups(tmp_path, gptq_src):
    with pytest.raises(BuildError, match="group_size=128"):
        run(tmp_path, gptq_src, "int4tp2", tp=2)


def test_gptq_per_channel_refused(tmp_path):
    """group_size -1 once became group_size 0 in hf_quant_config.json (a division by zero in TensorRT-LLM)."""
    src = make_gptq_contiguous(str(tmp_path / "per-channel"), group_size=-1)
    with pytest.raises(BuildError, match=r"group_size=-1 \(per-channel GPTQ\)"):
        run(tmp_path, src, "perchannel")


def test_gptq_act_order_refused(tmp_path, tiny):
    with pytest.raises(BuildError, match="desc_act=true"):
        run(tmp_path, tiny("a13b", "tencent", "gptq-int4"), "actorder")


@pytest.mark.parametrize("kw,match", [
    ({"tp": 3}, "num_attention_heads=4"),
    ({"tp": 2, "ep": 4}, "--ep 4 must divide --tp 2"),
    ({"quant": "fp8"}, "unquantized"),
    ({"dtype": "int8"}, "--dtype 'int8'"),
    ({"max_seq_len": 0}, "--max-seq-len must be a positive integer"),
])
def test_bad_options_are_named(tmp_path, tiny, kw, match):
    with pytest.raises(BuildError, match=match):
        run(tmp_path, tiny("a13b"), "bad", **kw)


def test_bad_checkpoint_names_the_tensor(tmp_path, tiny, capsys):
    src = tiny("dense")
    bad = tmp_path / "bad"
    bad.mkdir()
    t = load_file(os.path.join(src, "model.safetensors"))
    t.pop("model.layers.1.mlp.up_proj.weight")
    save_file(t, str(bad / "model.safetensors"))
    (bad / "config.json").write_text(read_text(os.path.join(src, "config.json")))
    rc = main(["--model", str(bad), "--output", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "missing tensor 'model.layers.1.mlp.up_proj.weight'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # validated before anything is written


def test_cli_progress_and_engine_message(tmp_path, tiny, capsys):
    rc = main(["--model", tiny("dense"), "--output", str(tmp_path / "cli"), "--tp", "2"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "converting" in cap.err and "100%" in cap.err  # tqdm progress bar
    assert "TensorRT engine: not built" in cap.out and "not installed" in cap.out
    rc = main(["--model", tiny("dense"), "--output", str(tmp_path / "cli2"), "--build-engine", "--quiet"])
    assert rc == 3 and "--build-engine" in capsys.readouterr().err


def test_default_output_is_only_what_serves(tmp_path, tiny, capsys):
    s, out = run(tmp_path, tiny("dense"), "default", tp=2)
    assert sorted(os.listdir(out)) == ["build.json", "extra_llm_api_options.yaml", "pytorch", "serve.sh"]
    assert s["engine_checkpoint"] is None and s["engine_checkpoint_note"] is None
    assert read_json(os.path.join(out, "build.json"))["engine_checkpoint"] is None
    rc = main(["--model", tiny("dense"), "--output", str(tmp_path / "cli"), "--tp", "2", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0 and not (tmp_path / "cli" / "engine_checkpoint").exists()
    assert "engine_checkpoint" not in cap.out and "deprecated" not in cap.err


def test_cli_engine_checkpoint_is_opt_in_and_says_it_cannot_be_built(tmp_path, tiny, capsys):
    out = tmp_path / "eng"
    rc = main(["--model", tiny("dense"), "--output", str(out), "--tp", "2", "--engine-checkpoint", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0
    assert sorted(os.listdir(out / "engine_checkpoint")) == ["config.json", "rank0.safetensors", "rank1.safetensors"]
    assert read_json(out / "engine_checkpoint" / "config.json")["mapping"]["tp_size"] == 2
    assert (out / "pytorch" / "config.json").exists() and (out / "serve.sh").exists()
    assert "TensorRT-engine-backend checkpoint" in cap.out
    assert "no tensorrt_llm/models/hunyuan in any release" in cap.out
    assert "cannot be built into a TensorRT engine today" in cap.out
    s = read_json(out / "build.json")
    assert s["engine_checkpoint"] == str(out / "engine_checkpoint") and "Hunyuan network" in s["engine_checkpoint_note"]
    # rebuilt without the flag: the old directory is kept, and the summary says it is stale
    assert main(["--model", tiny("dense"), "--output", str(out), "--tp", "2", "--quiet"]) == 0
    assert "left over from an earlier build" in capsys.readouterr().out


def test_no_engine_checkpoint_is_a_deprecated_noop(tmp_path, tiny, capsys):
    rc = main(["--model", tiny("dense"), "--output", str(tmp_path / "old"), "--no-engine-checkpoint", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0 and not (tmp_path / "old" / "engine_checkpoint").exists()
    assert "--no-engine-checkpoint is deprecated and does nothing" in cap.err
    with pytest.raises(SystemExit) as e:  # contradictory flags are refused by argparse
        main(["--model", tiny("dense"), "--output", str(tmp_path / "both"), "--engine-checkpoint",
              "--no-engine-checkpoint"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_console_scripts_and_no_engine_import(tmp_path, tiny):
    bindir = os.path.dirname(sys.executable)
    r = subprocess.run([os.path.join(bindir, "hunyuan-trtllm-build"), "--model", tiny("dense"), "--output",
                        str(tmp_path / "script"), "--quiet"], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    code = ("import sys, hunyuan_plugins, hunyuan_plugins.trtllm, hunyuan_plugins.trtllm.build; "
            "assert 'tensorrt_llm' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    assert os.path.exists(os.path.join(bindir, "hunyuan-trtllm"))


def test_serve_wrapper_without_trtllm(capsys):
    from hunyuan_plugins.trtllm.cli import main as cli_main

    assert cli_main(["serve", "some/model"]) == 2
    assert "TensorRT-LLM is not installed" in capsys.readouterr().err


def test_gptq_act_order_with_static_groups_is_accepted(tmp_path):
    """desc_act + static_groups: contiguous groups, which W4A16 expresses exactly (make-tiny writes it)."""
    from hunyuan_plugins.core.tiny import make_tiny

    src = make_tiny(str(tmp_path / "static"), "a13b", "tencent", "gptq-int4", static_groups=True)
    qc = read_json(os.path.join(src, "config.json"))["quantization_config"]
    assert qc["desc_act"] is True and qc["static_groups"] is True
    _, out = run(tmp_path, src, "static")
    full = read_dir(os.path.join(out, "pytorch"))
    raw = dict(Checkpoint(src).iter_tensors())
    prefixes = [n.rsplit(".", 1)[0] for n in raw if n.endswith(".qweight")]
    assert prefixes
    for p in prefixes:
        dense = dequantize_gptq(raw[f"{p}.qweight"], raw[f"{p}.qzeros"], raw[f"{p}.scales"], raw[f"{p}.g_idx"])
        assert torch.equal(trtllm_w4a16_dense(full[f"{p}.weight"], full[f"{p}.weight_scale"]), dense), p
