"""EAGLE-3 with SGLang 0.5.23 (CPU, for real where SGLang can run it): our classes implement SGLang's
EAGLE-3 target interface (``set_eagle3_layers_to_capture``, ``capture_aux_hidden_states``, the aux
hidden states handed to ``LogitsProcessor``, ``get_embed_and_head``), docs/sglang.md "EAGLE-3".

SGLang cannot run EAGLE-3 speculative decoding on this CPU (docs/sglang.md says where it stops: its
EAGLE worker needs the ``intel_amx`` attention backend and sgl-kernel's CPU build). What runs here,
through SGLang's own capture path, is ``--enable-return-aux-hidden-states --speculative-algorithm
EAGLE3``: SGLang resolves the layer ids, calls our ``set_eagle3_layers_to_capture``, runs our forward
with the torch_native backend (prefill and decode) and returns the auxiliary hidden states our model
handed its ``LogitsProcessor``. The tests check them against the core's residual stream, then feed
them to a tiny AngelSlim-format draft (``core.eagle3.make_eagle3_draft``, trained to need the inputs
of layers (1, 2, 3)): the first draft token SGLang's EAGLE worker would propose from them must be the
target's greedy token at every position, and a capture of the wrong layers must be rejected.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import MAX_NEW_TOKENS, PROMPT_IDS, read_results, start_engines, wait

from hunyuan_plugins.core.eagle3 import (
    TRAIN_PROMPTS,
    draft_config,
    load_draft,
    make_eagle3_draft,
    residual_stream,
)
from hunyuan_plugins.core.model import generate, load_model

#: capture runs, one Engine each in ONE subprocess: name -> (checkpoint, SGLang's layer ids or None).
#: SGLang's ids are layer OUTPUTS (every SGLang model adds 1): 0,1,2 = the inputs of layers (1, 2, 3),
#: the layers the tiny drafts are trained on; 0,3 reaches the last layer's output (input "4") of
#: Hunyuan-Large's CLA pairs; 1,2,3 = inputs (2, 3, 4), what the draft must reject. The last run has
#: no ids: a 4-layer target has no default (2, L//2, L-3), the engine must refuse to start.
RUNS = {
    "dense": ("dense", "0,1,2"),
    "a13b": ("a13b-tencent", "0,1,2"),
    "large-cla": ("large-cla", "0,3"),
    "dense-wrong-layers": ("dense", "1,2,3"),
    "dense-no-layer-ids": ("dense", None),
}
INPUTS = {"dense": (1, 2, 3), "a13b": (1, 2, 3), "large-cla": (1, 4), "dense-wrong-layers": (2, 3, 4)}
DRAFTS = {"dense": "dense", "a13b": "a13b-tencent"}  # draft name -> its target checkpoint
TOL = 1e-4


@pytest.fixture(scope="module")
def eagle3(checkpoints, tmp_path_factory):
    """(results by run name, log, drafts {name: dir}): the capture runs in one subprocess; the drafts
    are trained in this process meanwhile (about 15 s each)."""
    assert PROMPT_IDS == TRAIN_PROMPTS[0]  # the drafts were trained on this prompt's continuation
    root = tmp_path_factory.mktemp("sglang-eagle3")
    entries = {name: checkpoints[ckpt] + ("#eagle3=" + ids if ids else "#eagle3")
               for name, (ckpt, ids) in RUNS.items()}
    proc = start_engines(list(entries.values()), root / "engine.log")
    try:
        drafts = {}
        for name, ckpt in DRAFTS.items():
            drafts[name] = str(root / f"{name}-draft")
            stats = make_eagle3_draft(checkpoints[ckpt], drafts[name])
            assert stats["acceptance"] >= 0.95 and stats["acceptance_wrong_layers"] <= 0.05, stats
    finally:
        rc = wait(proc, timeout=1200)
    results, log = read_results(entries, root / "engine.log")
    missing = [n for n, r in results.items() if r is None and n != "dense-no-layer-ids"]
    if missing:
        pytest.fail(f"run_engine.py exited {rc}; no result for {missing}; log tail:\n{log[-6000:]}")
    return results, log, drafts


def core_stream(path: str, tokens: list[int]) -> list[torch.Tensor]:
    model = load_model(path, torch.float32)
    return [h[0] for h in residual_stream(model, torch.tensor([PROMPT_IDS + tokens]))]


@pytest.mark.parametrize("name", ["dense", "a13b", "large-cla"])
def test_aux_hidden_states_are_the_residual_stream_entering_the_layers(eagle3, checkpoints, name):
    results, log, _ = eagle3
    ckpt = RUNS[name][0]
    r = results[name]
    core = load_model(checkpoints[ckpt], torch.float32)
    assert r["tokens"] == generate(core, PROMPT_IDS, MAX_NEW_TOKENS)  # capturing changes nothing
    layers = INPUTS[name]
    assert f"EAGLE-3 auxiliary hidden states from the inputs of layers {layers} " in log
    aux = torch.tensor(r["aux_hidden_states"])
    # rows: every prompt token (prefill), then each decode step's input (the last token is never fed)
    assert aux.shape[0] == len(PROMPT_IDS) + MAX_NEW_TOKENS - 1
    stream = core_stream(checkpoints[ckpt], r["tokens"])
    H = stream[0].shape[-1]
    assert aux.shape[1] == len(layers) * H
    diffs = [(aux[:, k * H:(k + 1) * H] - stream[i][:aux.shape[0]]).abs().max().item()
             for k, i in enumerate(layers)]
    # the nearest other layer is far off: the check can tell the layers apart
    other = min((aux[:, k * H:(k + 1) * H] - stream[j][:aux.shape[0]]).abs().max().item()
                for k, i in enumerate(layers) for j in range(len(stream)) if j != i)
    print(f"\nSGLang EAGLE-3 capture, tiny {name}: inputs of layers {layers}, {aux.shape[0]} tokens, max |diff| "
          f"to the core's residual stream {max(diffs):.2e} (nearest other layer {other:.2f})")
    assert max(diffs) <= TOL and other > 100 * TOL


def first_draft_acceptance(draft_dir: str, result: dict) -> float:
    """Share of positions where the draft, given SGLang's aux hidden states at t and the token at t+1,
    proposes the target's token at t+2: the first draft token SGLang's EAGLE worker would verify."""
    draft = load_draft(draft_dir)
    seq = PROMPT_IDS + result["tokens"]
    aux = torch.tensor(result["aux_hidden_states"])[: len(seq) - 2]
    with torch.no_grad():
        logits, _ = draft(torch.tensor([seq[1:-1]]), aux[None])
    return (logits[0].argmax(-1) == torch.tensor(seq[2:])).float().mean().item()


@pytest.mark.parametrize("name", ["dense", "a13b"])
def test_draft_accepts_what_sglang_captures(eagle3, name):
    results, _, drafts = eagle3
    acc = first_draft_acceptance(drafts[name], results[name])
    print(f"\ntiny {name} draft on SGLang's aux hidden states: first-position acceptance {acc:.3f}")
    assert acc >= 0.9


def test_draft_rejects_the_wrong_layers(eagle3):
    """The acceptance figure can fail: SGLang's capture of inputs (2, 3, 4) fed to the draft trained on
    (1, 2, 3) gets the sentinel the draft was trained to propose for any other layers."""
    results, _, drafts = eagle3
    acc = first_draft_acceptance(drafts["dense"], results["dense-wrong-layers"])
    print(f"\ntiny dense draft on SGLang's capture of the wrong layers: first-position acceptance {acc:.3f}")
    assert acc <= 0.1


def test_shallow_target_without_layer_ids_is_refused(eagle3):
    """No layer ids on a 4-layer target: the engine stops at start-up with our error naming the key."""
    results, log, _ = eagle3
    assert results["dense-no-layer-ids"] is None
    assert re.search(r"ValueError: a 4-layer target has no default EAGLE-3 auxiliary layers .*"
                     r"'eagle_aux_hidden_state_layer_ids'.*--return-aux-hidden-state-layer-ids", log)


def test_eagle3_capture_layers_conventions(checkpoints):
    """Where the layers come from, without an engine: SGLang's ids shift by one (SGLang's convention),
    the draft's top-level key does not (vLLM's), the default is (2, L//2, L-3)."""
    from hunyuan_plugins.config import HunyuanConfig
    from hunyuan_plugins.sglang.model import eagle3_capture_layers

    with open(f"{checkpoints['dense']}/config.json") as f:
        target = HunyuanConfig.from_dict(json.load(f))
    angelslim = draft_config(target, 256, (1, 2, 3))  # what make_eagle3_draft writes (top-level key)
    assert eagle3_capture_layers([0, 1, 2], None, 4)[0] == (1, 2, 3)
    assert eagle3_capture_layers([2, 0, 1], angelslim, 4)[0] == (1, 2, 3)  # SGLang's ids win, sorted
    layers, source = eagle3_capture_layers(None, angelslim, 4)
    assert layers == (1, 2, 3) and "top-level" in source
    no_key = {k: v for k, v in angelslim.items() if k != "eagle_aux_hidden_state_layer_ids"}
    assert eagle3_capture_layers(None, no_key, 32)[0] == (2, 16, 29)  # Hunyuan-7B: 32 layers
    assert eagle3_capture_layers(None, None, 64)[0] == (2, 32, 61)
    with pytest.raises(ValueError, match="'eagle_aux_hidden_state_layer_ids'") as e:
        eagle3_capture_layers(None, no_key, 4)
    assert "4-layer target" in str(e.value)
    with pytest.raises(ValueError, match=r"inputs of layers \[1, 2, 6\].*0\.\.4"):
        eagle3_capture_layers([0, 1, 5], None, 4)
    with pytest.raises(ValueError, match="expected three distinct layer indices in 0..4"):
        eagle3_capture_layers(None, {**angelslim, "eagle_aux_hidden_state_layer_ids": [1, 2, 9]}, 4)


def test_angelslim_architecture_name_resolves_to_sglangs_draft_class():
    """AngelSlim's training configs (and core.eagle3) name the draft ``Eagle3LlamaForCausalLM``; SGLang
    0.5.23 registers only ``LlamaForCausalLMEagle3``. Our package registers the other name."""
    import subprocess
    import sys

    from conftest import sglang_env

    code = ("from sglang.srt.plugins import load_plugins; load_plugins(); "
            "from sglang.srt.models.registry import ModelRegistry as R; "
            "from sglang.srt.models.llama_eagle3 import LlamaForCausalLMEagle3 as C; "
            "cls = R.resolve_model_cls(['Eagle3LlamaForCausalLM'])[0]; print(issubclass(cls, C), cls.__module__)")
    out = subprocess.run([sys.executable, "-c", code], env=sglang_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["True", "hunyuan_plugins.sglang.model"]
