"""vLLM-side parser logic that the server tests cannot pin down (tiny tokenizer, no engine)."""

import pytest
from transformers import AutoTokenizer

from hunyuan_plugins.vllm import parsers


@pytest.fixture(scope="module")
def reasoner(tiny):
    tok = AutoTokenizer.from_pretrained(tiny("a13b", "tencent", "fp32"))
    return parsers.HunyuanA13BReasoningParser(tok), tok


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_reasoning_end_seen_in_the_decoded_tail_only(reasoner):
    p, tok = reasoner
    prompt = _ids(tok, "<|startoftext|>" + "a long question " * 40 + "<|extra_0|>")
    thought = _ids(tok, "<think>\n" + "thinking hard " * 40)
    end = _ids(tok, "\n</think>\n<answer>\nyes")
    assert not p.is_reasoning_end(prompt)  # a chat prompt never ends the reasoning for the stream
    assert not p.is_reasoning_end_streaming(prompt + thought, thought[-1:])
    seq = prompt + thought
    hit = None
    for i, t in enumerate(end):  # one token per decode step, as structured outputs ask
        seq = seq + [t]
        if p.is_reasoning_end_streaming(seq, [t]):
            hit = i
            break
    assert hit is not None and tok.decode(end[:hit + 1]).endswith("</think>")


def test_thinking_off_prompt_and_answer_first_output(reasoner):
    p, tok = reasoner
    no_think = _ids(tok, "<|startoftext|>" + "question " * 40 + "<|extra_0|><think>\n\n</think>\n")
    assert p.is_reasoning_end_streaming(no_think, no_think[-1:])  # grammar may start at once
    answer_first = _ids(tok, "<|startoftext|>" + "question " * 40 + "<|extra_0|>") + _ids(tok, "<answer>")
    assert p.is_reasoning_end_streaming(answer_first, answer_first[-1:])
    # an earlier turn's think block is history, not this turn's reasoning
    history = _ids(tok, "<|startoftext|>q<|extra_0|><think>\nx\n</think>\n<answer>a</answer><|eos|>"
                        "<|startoftext|>q2<|extra_0|><think>\nstill thinking")
    assert not p.is_reasoning_end_streaming(history, history[-1:])
