"""The core parser (hunyuan_plugins.parsers) on recorded replies (tests/parser_cases.py): the pinned
answer non-streaming, and the same answer streamed for every split point and random chunkings."""

import json

import pytest
from parser_cases import CASES, NAMES, chunkings, expected_calls

from hunyuan_plugins.parsers import (
    ReasoningStreamParser,
    ToolCallStreamParser,
    parse_response,
    parse_tool_calls,
    split_reasoning,
)


def _calls(calls):
    return [(c.name, c.arguments) for c in calls]


def stream_response(pieces):
    """The composed stream (reasoning split, then tool calls on the content), as the engines run it."""
    rp, tp = ReasoningStreamParser(), ToolCallStreamParser()
    reasoning, content, calls = [], [], []
    for d in [*(rp.feed(p) for p in pieces), rp.finish()]:
        reasoning.append(d.reasoning)
        t = tp.feed(d.content)
        content.append(t.content)
        calls += t.calls
    t = tp.finish()
    content.append(t.content)
    calls += t.calls
    return "".join(reasoning), "".join(content), calls


@pytest.mark.parametrize("name", NAMES)
def test_non_streaming(name):
    case = CASES[name]
    r, c, calls = parse_response(case.text)
    assert (r, c) == (case.reasoning, case.content)
    assert _calls(calls) == expected_calls(case)
    assert [json.loads(a) for _, a in _calls(calls)] == [a for _, a in case.calls]
    assert [x.index for x in calls] == list(range(len(calls)))


@pytest.mark.parametrize("name", NAMES)
def test_streaming_every_chunking(name):
    case = CASES[name]
    want = (case.reasoning or "", case.content or "", expected_calls(case))
    for pieces in chunkings(case.text):
        r, c, calls = stream_response(pieces)
        assert (r, c, _calls(calls)) == want, pieces
        assert [x.index for x in calls] == list(range(len(calls)))


@pytest.mark.parametrize("name", NAMES)
def test_tool_parser_alone_on_raw_text(name):
    """No reasoning parser (vLLM --tool-call-parser without --reasoning-parser): the tool parser sees
    the raw reply; think blocks and answer tags are plain content, calls inside <think> are not calls."""
    text = CASES[name].text
    want = parse_tool_calls(text)
    assert _calls(want.calls) == expected_calls(CASES[name])
    for pieces in chunkings(text, n_random=10):
        p = ToolCallStreamParser()
        outs = [p.feed(x) for x in pieces] + [p.finish()]
        assert "".join(o.content for o in outs) == (want.content or ""), pieces
        assert _calls([c for o in outs for c in o.calls]) == _calls(want.calls), pieces


@pytest.mark.parametrize("name", NAMES)
def test_reasoning_parser_alone(name):
    """No tool parser: content is the answer with its tags removed, <tool_calls> text kept verbatim."""
    text = CASES[name].text
    want = split_reasoning(text)
    for pieces in chunkings(text, n_random=10):
        p = ReasoningStreamParser()
        outs = [p.feed(x) for x in pieces] + [p.finish()]
        got = ("".join(o.reasoning for o in outs), "".join(o.content for o in outs))
        assert got == (want.reasoning or "", want.content or ""), pieces
        assert "</answer>" not in got[1] or "</answer>" in json.dumps([a for _, a in CASES[name].calls])


def test_cut_off_block_is_documented_behaviour():
    """max_tokens inside <tool_calls>: no call is emitted; the raw block text is kept as content (streamed
    at the end, when it is known the block will not close)."""
    case = CASES["cut_in_arguments"]
    p = ToolCallStreamParser()
    content = split_reasoning(case.text).content
    d = p.feed(content)
    assert d.content == "Checking." and d.calls == [] and p.in_tool_block
    end = p.finish()
    assert end.calls == [] and end.content == content[len("Checking."):]


def test_tag_text_inside_json_strings_is_data():
    """</tool_calls> (or an answer tag) inside a string argument does not end the block or get stripped."""
    args = {"a": "</tool_calls>", "b": "</answer>", "c": '\\"</tool_calls>'}
    block = "<tool_calls>" + json.dumps([{"name": "f", "arguments": args}]) + "</tool_calls>"
    r, c, calls = parse_response("<answer>" + block + " after</answer>")
    assert c == "after" and [json.loads(x.arguments) for x in calls] == [args]
