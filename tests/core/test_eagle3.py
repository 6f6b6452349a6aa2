"""EAGLE-3 drafts (core/eagle3.py): the layer convention, the draft format make-tiny writes, and that
the written draft only works with the layers it names (what the engine tests' counters rely on)."""

import json

import pytest
import torch
from safetensors import safe_open

from hunyuan_plugins.cli import main
from hunyuan_plugins.core.eagle3 import (
    DRAFT_ARCH,
    TRAIN_PROMPTS,
    acceptance,
    check_aux_layers,
    continuations,
    default_aux_layers,
    draft_aux_layers,
    draft_config,
    load_draft,
    residual_stream,
    training_data,
)
from hunyuan_plugins.core.model import load_model
from hunyuan_plugins.core.tiny import make_tiny


def test_default_aux_layers_are_vllms():
    assert default_aux_layers(32) == (2, 16, 29)  # Hunyuan-7B / A13B depth
    assert default_aux_layers(64) == (2, 32, 61)  # Hunyuan-Large
    with pytest.raises(ValueError, match=r"4-layer target.*eagle_aux_hidden_state_layer_ids"):
        default_aux_layers(4)


def test_draft_aux_layers_read_from_config_and_checked():
    assert draft_aux_layers({}, 32) == (2, 16, 29)
    assert draft_aux_layers({"eagle_aux_hidden_state_layer_ids": [1, 2, 3]}, 4) == (1, 2, 3)
    assert draft_aux_layers({"eagle_config": {"eagle_aux_hidden_state_layer_ids": [3, 9, 20]}}, 32) == (3, 9, 20)
    for bad in ([1, 2, 5], [1, 1, 2], [1, 2]):
        with pytest.raises(ValueError, match=r"eagle_aux_hidden_state_layer_ids.*4 layers"):
            draft_aux_layers({"eagle_aux_hidden_state_layer_ids": bad}, 4)


def test_check_aux_layers_names_the_key_and_the_range():
    assert check_aux_layers([1, 4], 4) == (1, 4)  # 4 = the last layer's output
    for bad in ([1, 5], [2, 2], [], [-1, 2]):
        with pytest.raises(ValueError, match=r"eagle_aux_hidden_state_layer_ids: inputs of layers .* in 0\.\.4"):
            check_aux_layers(bad, 4)


def test_no_draft_layout_for_cla_large(tmp_path):
    make_tiny(str(tmp_path), "large", "tencent", "fp32")
    with pytest.raises(ValueError, match="no EAGLE-3 draft layout for HunYuanForCausalLM"):
        draft_config(load_model(str(tmp_path)).cfg, 256, None)


def test_residual_stream_ends_in_the_final_norm_input(tmp_path):
    make_tiny(str(tmp_path), "dense", "tencent", "fp32")
    model = load_model(str(tmp_path))
    ids = torch.tensor([TRAIN_PROMPTS[0]])
    stream = residual_stream(model, ids)
    assert len(stream) == model.cfg.num_layers + 1
    assert torch.equal(stream[0], model.model.embed_tokens(ids))
    logits = model.lm_head(model.model.norm(stream[-1]))
    torch.testing.assert_close(logits, model(ids), rtol=0, atol=1e-5)


def test_make_tiny_eagle3_writes_angelslim_format_that_needs_its_layers(tmp_path, capsys):
    target, out = tmp_path / "dense", tmp_path / "draft"
    make_tiny(str(target), "dense", "tencent", "fp32")
    assert main(["make-tiny", "--eagle3", str(target), "--out", str(out)]) == 0
    assert "aux layers [1, 2, 3]" in capsys.readouterr().out

    c = json.loads((out / "config.json").read_text())
    assert (c["architectures"], c["model_type"], c["num_hidden_layers"]) == ([DRAFT_ARCH], "llama", 1)
    assert c["target_model_type"] == "hunyuan_v1_dense" and c["draft_vocab_size"] == 256
    assert c["eagle_aux_hidden_state_layer_ids"] == [1, 2, 3]  # a 4-layer target has no default
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        d2t, t2d = f.get_tensor("d2t"), f.get_tensor("t2d")
    H, V = c["hidden_size"], c["vocab_size"]
    assert {"fc.weight", "norm.weight", "lm_head.weight", "embed_tokens.weight", "d2t", "t2d",
            "midlayer.hidden_norm.weight", "midlayer.self_attn.q_proj.weight", "midlayer.mlp.down_proj.weight"} <= names
    assert all(n.startswith(("midlayer.", "fc.", "norm.", "lm_head.", "embed_tokens.", "d2t", "t2d")) for n in names)
    # d2t: offsets draft id -> target id; t2d: the same set as a mask over the target vocabulary
    assert t2d.dtype == torch.bool and t2d.shape == (V,) and int(t2d.sum()) == 256
    assert torch.equal(torch.arange(256) + d2t, t2d.nonzero().flatten())

    draft = load_draft(str(out))
    assert draft.fc.weight.shape == (H, 3 * H) and draft.midlayer.self_attn.q_proj.weight.shape[1] == 2 * H
    model = load_model(str(target))
    sequences = continuations(model, TRAIN_PROMPTS, 24)
    right = acceptance(draft, training_data(model, sequences, (1, 2, 3)))
    off_by_one = acceptance(draft, training_data(model, sequences, (2, 3, 4)))  # outputs instead of inputs
    print(f"\ntiny dense EAGLE-3 draft, first-token acceptance: layers (1, 2, 3) {right}, (2, 3, 4) {off_by_one}")
    assert right >= 0.95 and off_by_one <= 0.05
