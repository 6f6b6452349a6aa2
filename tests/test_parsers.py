"""Tests for hunyuan_plugins.parsers: reasoning split and tool-call parsing, streaming == non-streaming."""

import json
import random

import pytest

from hunyuan_plugins.parsers import (
    ReasoningDelta,
    ReasoningResult,
    ReasoningStreamParser,
    ToolCall,
    ToolCallDelta,
    ToolCallStreamParser,
    parse_response,
    parse_tool_calls,
    split_reasoning,
)

TC = '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Beijing"}}]</tool_calls>'
TC2 = ('<tool_calls>[{"name": "get_weather", "arguments": {"city": "Beijing"}}, '
       '{"name": "get_time", "arguments": "{\\"tz\\": \\"Asia/Shanghai\\"}"}]</tool_calls>')

# name -> (text, expected reasoning, expected content after the reasoning split,
#          expected final content after tool parsing, expected [(name, arguments dict)])
SAMPLES = {
    "thinking_on": (
        "<think>\nThe user says hi.\nGreet back.\n</think>\n<answer>\nHello! How can I help?\n</answer>",
        "The user says hi.\nGreet back.", "Hello! How can I help?", "Hello! How can I help?", []),
    "thinking_off": (
        "<answer>\nHello there.\n</answer>",
        None, "Hello there.", "Hello there.", []),
    "empty_think": (
        "<think></think><answer>ok</answer>",
        None, "ok", "ok", []),
    "no_think_empty": (
        "<think>\n\n</think>\n<answer>\nFast answer.\n</answer>",
        None, "Fast answer.", "Fast answer.", []),
    "truncated_think": (
        "<think>\nabc def",
        "abc def", None, None, []),
    "truncated_answer": (
        "<think>\nr\n</think>\n<answer>\npartial ans",
        "r", "partial ans", "partial ans", []),
    "no_tags": (
        "Just plain text.\nSecond line.",
        None, "Just plain text.\nSecond line.", "Just plain text.\nSecond line.", []),
    "no_newlines": (
        "<think>reason</think><answer>answer</answer>",
        "reason", "answer", "answer", []),
    "crlf_and_spaces": (
        "  <think>\r\n  reason  \r\n</think>\r\n\r\n<answer>\r\n answer \r\n</answer>\n",
        "reason", "answer", "answer", []),
    "single_tool_call": (
        "<think>\nNeed weather.\n</think>\n<answer>\n" + TC + "\n</answer>",
        "Need weather.", TC, None, [("get_weather", {"city": "Beijing"})]),
    "multiple_calls_string_args": (
        "<think>\nTwo tools.\n</think>\n<answer>\nChecking.\n" + TC2 + "\n</answer>",
        "Two tools.", "Checking.\n" + TC2, "Checking.",
        [("get_weather", {"city": "Beijing"}), ("get_time", {"tz": "Asia/Shanghai"})]),
    "tool_call_inside_think": (
        "<think>\nMaybe " + TC + " later.\n</think>\n<answer>\nNo call.\n</answer>",
        "Maybe " + TC + " later.", "No call.", "No call.", []),
    "malformed_json": (
        '<answer>\n<tool_calls>[{"name": "f", "arguments": {]</tool_calls>\n</answer>',
        None, '<tool_calls>[{"name": "f", "arguments": {]</tool_calls>',
        '<tool_calls>[{"name": "f", "arguments": {]</tool_calls>', []),
    "wrong_shape": (
        '<answer>\n<tool_calls>[{"arguments": {}}]</tool_calls>\n</answer>',
        None, '<tool_calls>[{"arguments": {}}]</tool_calls>',
        '<tool_calls>[{"arguments": {}}]</tool_calls>', []),
    "two_blocks": (
        "<answer>\nFirst.\n" + TC + "\nThen.\n" + TC2 + "\n</answer>",
        None, "First.\n" + TC + "\nThen.\n" + TC2, "First.\n\nThen.",
        [("get_weather", {"city": "Beijing"}), ("get_weather", {"city": "Beijing"}),
         ("get_time", {"tz": "Asia/Shanghai"})]),
    "unterminated_block": (
        '<answer>\nx <tool_calls>[{"name": "f"',
        None, 'x <tool_calls>[{"name": "f"', 'x <tool_calls>[{"name": "f"', []),
    "chinese": (
        "<think>\n用户问北京天气。\n</think>\n<answer>\n我来查一下。\n"
        '<tool_calls>[{"name": "查询天气", "arguments": {"城市": "北京"}}]</tool_calls>\n</answer>',
        "用户问北京天气。",
        '我来查一下。\n<tool_calls>[{"name": "查询天气", "arguments": {"城市": "北京"}}]</tool_calls>',
        "我来查一下。", [("查询天气", {"城市": "北京"})]),
    "literal_lt": (
        "<think>\nis a < b? x<y\n</think>\n<answer>\na < b and <b> bold, <thinking> too\n</answer>",
        "is a < b? x<y", "a < b and <b> bold, <thinking> too", "a < b and <b> bold, <thinking> too", []),
    "late_think_is_content": (
        "Hello <think>x</think> world",
        None, "Hello <think>x</think> world", "Hello <think>x</think> world", []),
    "no_args": (
        '<answer><tool_calls>[{"name": "ping"}, {"name": "pong", "arguments": ""}]</tool_calls></answer>',
        None, '<tool_calls>[{"name": "ping"}, {"name": "pong", "arguments": ""}]</tool_calls>', None,
        [("ping", {}), ("pong", {})]),
    "empty": ("", None, None, None, []),
    "whitespace_only": ("\n \n", None, None, None, []),
}
NAMES = list(SAMPLES)


def _random_splits(text, rng):
    if len(text) < 2:
        return [text]
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12))))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _all_splittings(text):
    """Whole text, every character alone, every two-piece split, 50 seeded random splits."""
    yield [text]
    yield list(text)
    for k in range(1, len(text)):
        yield [text[:k], text[k:]]
    rng = random.Random(text)  # str seeds are deterministic (not hash-randomised)
    for _ in range(50):
        yield _random_splits(text, rng)


def _stream_reasoning(pieces, **kw):
    p = ReasoningStreamParser(**kw)
    outs = [p.feed(d) for d in pieces] + [p.finish()]
    return "".join(o.reasoning for o in outs), "".join(o.content for o in outs)


def _stream_tools(pieces, **kw):
    p = ToolCallStreamParser(**kw)
    outs = [p.feed(d) for d in pieces] + [p.finish()]
    return "".join(o.content for o in outs), [c for o in outs for c in o.calls], outs


def _calls_simple(calls):
    return [(c.name, json.loads(c.arguments)) for c in calls]


# ------------------------------------------------------------------ non-streaming

@pytest.mark.parametrize("name", NAMES)
def test_split_reasoning(name):
    text, reasoning, content, _, _ = SAMPLES[name]
    assert split_reasoning(text) == ReasoningResult(reasoning, content)


@pytest.mark.parametrize("name", NAMES)
def test_parse_response(name):
    text, reasoning, _, final, calls = SAMPLES[name]
    r, c, got = parse_response(text, id_prefix="call_")
    assert (r, c) == (reasoning, final)
    assert _calls_simple(got) == calls
    assert [x.index for x in got] == list(range(len(calls)))
    assert [x.id for x in got] == [f"call_{i}" for i in range(len(calls))]


def test_parse_tool_calls_details():
    res = parse_tool_calls("before " + TC2 + " after", id_prefix="t-")
    assert res.content == "before  after"
    assert res.calls == [
        ToolCall("get_weather", '{"city": "Beijing"}', "t-0", 0),
        ToolCall("get_time", '{"tz": "Asia/Shanghai"}', "t-1", 1),
    ]
    # arguments always JSON object text, non-ASCII kept readable
    res = parse_tool_calls('<tool_calls>[{"name": "f", "arguments": {"城市": "北京"}}]</tool_calls>')
    assert res.content is None and res.calls[0].arguments == '{"城市": "北京"}'


def test_parse_tool_calls_random_ids_unique():
    res = parse_tool_calls(TC2 + TC2)
    ids = [c.id for c in res.calls]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(i.startswith("call_") and len(i) > 5 for i in ids)


@pytest.mark.parametrize("block", [
    "<tool_calls>not json</tool_calls>",
    "<tool_calls>{\"name\": 3}</tool_calls>",
    "<tool_calls>[1, 2]</tool_calls>",
    "<tool_calls>\"str\"</tool_calls>",
    "<tool_calls>[{\"name\": \"\"}]</tool_calls>",
    "<tool_calls>[{\"name\": \"f\", \"arguments\": [1]}]</tool_calls>",
    "<tool_calls>[{\"name\": \"f\", \"arguments\": \"{bad\"}]</tool_calls>",
    "<tool_calls>[{\"name\": \"f\", \"arguments\": \"[1]\"}]</tool_calls>",
    "<tool_calls>[{\"name\": \"f\"}, {\"nam\": \"g\"}]</tool_calls>",
    "<tool_calls>" + "[" * 100000 + "</tool_calls>",
])
def test_invalid_blocks_stay_content(block):
    res = parse_tool_calls("x " + block + " y")
    assert res.calls == [] and res.content == "x " + block + " y"
    content, calls, _ = _stream_tools(["x ", block[:7], block[7:], " y"])
    assert calls == [] and content == res.content


def test_single_object_accepted():
    res = parse_tool_calls('<tool_calls>{"name": "f", "arguments": {"a": 1}}</tool_calls>', id_prefix="c")
    assert res.content is None and res.calls == [ToolCall("f", '{"a": 1}', "c0", 0)]


def test_prompt_in_think():
    text = "still thinking\n</think>\n<answer>\ndone\n</answer>"
    assert split_reasoning(text, prompt_in_think=True) == ReasoningResult("still thinking", "done")
    for pieces in (list(text), [text]):
        assert _stream_reasoning(pieces, prompt_in_think=True) == ("still thinking", "done")


# ------------------------------------------------------------------ streaming == non-streaming

@pytest.mark.parametrize("name", NAMES)
def test_reasoning_stream_matches(name):
    text = SAMPLES[name][0]
    want = split_reasoning(text)
    want = (want.reasoning or "", want.content or "")
    for pieces in _all_splittings(text):
        assert _stream_reasoning(pieces) == want, pieces


@pytest.mark.parametrize("name", NAMES)
def test_tool_stream_matches(name):
    # run the tool parser on the raw text too: think blocks must pass through untouched
    for text in (SAMPLES[name][0], split_reasoning(SAMPLES[name][0]).content or ""):
        want = parse_tool_calls(text, id_prefix="call_")
        for pieces in _all_splittings(text):
            content, calls, outs = _stream_tools(pieces, id_prefix="call_")
            assert (content, calls) == (want.content or "", want.calls), pieces
            # one event per block: a delta never carries a partial block's calls
            assert sum(1 for o in outs if o.calls) <= text.count("<tool_calls>")


@pytest.mark.parametrize("name", NAMES)
def test_composed_stream_matches_parse_response(name):
    text = SAMPLES[name][0]
    want = parse_response(text, id_prefix="call_")
    rng = random.Random(7)
    for pieces in [list(text), [text]] + [_random_splits(text, rng) for _ in range(20)]:
        rp, tp = ReasoningStreamParser(), ToolCallStreamParser(id_prefix="call_")
        reasoning, outs = [], []
        for d in [*(rp.feed(p) for p in pieces), rp.finish()]:
            reasoning.append(d.reasoning)
            outs.append(tp.feed(d.content))
        outs.append(tp.finish())
        assert "".join(reasoning) == (want.reasoning or "")
        assert "".join(o.content for o in outs) == (want.content or "")
        assert [c for o in outs for c in o.calls] == want.calls


# ------------------------------------------------------------------ hold-back behaviour

def test_partial_think_tag_not_leaked():
    p = ReasoningStreamParser()
    assert p.feed("<thi") == ReasoningDelta("", "")
    assert p.feed("nk>") == ReasoningDelta("", "")
    assert p.in_reasoning
    assert p.feed("\nabc") == ReasoningDelta("abc", "")
    assert p.feed("</th") == ReasoningDelta("", "")
    assert p.feed("ink>\n<ans") == ReasoningDelta("", "")
    assert p.reasoning_ended
    assert p.feed("wer>\nhi") == ReasoningDelta("", "hi")
    assert p.feed("\n</answer>") == ReasoningDelta("", "")
    assert p.finish() == ReasoningDelta("", "")


def test_literal_lt_passes_through():
    p = ReasoningStreamParser()
    assert p.feed("a <") == ReasoningDelta("", "a")  # "<" could still start "<answer>"; " " held
    assert p.feed(" b") == ReasoningDelta("", " < b")
    assert p.feed(" <b>") == ReasoningDelta("", " <b>")
    assert p.feed(" <thinking>") == ReasoningDelta("", " <thinking>")  # <think> only opens at start
    q = ToolCallStreamParser()
    assert q.feed("x < y <tool") == ToolCallDelta("x < y")
    assert q.feed("s") == ToolCallDelta(" <tools")
    assert q.finish() == ToolCallDelta("")


def test_partial_tag_flushed_at_finish():
    p = ReasoningStreamParser()
    assert p.feed("<answer>x </ans") == ReasoningDelta("", "x")
    assert p.finish() == ReasoningDelta("", " </ans")
    p = ReasoningStreamParser()
    assert p.feed("<think>r </thi") == ReasoningDelta("r", "")
    assert p.finish() == ReasoningDelta(" </thi", "")


def test_no_tag_fragments_leak_char_by_char():
    tag_bits = ("<th", "<an", "</th", "</an", "<tool", "</tool", "think>", "answer>", "tool_calls>")
    names = ("thinking_on", "no_think_empty", "single_tool_call", "multiple_calls_string_args", "chinese")
    for name in names:
        text = SAMPLES[name][0]
        reasoning, content = _stream_reasoning(list(text))
        final, _, _ = _stream_tools(list(content))
        for bit in tag_bits:
            assert bit not in final, (name, bit)
        assert "<" not in reasoning + final


def test_tool_stream_events():
    p = ToolCallStreamParser(id_prefix="c")
    text = "Checking.\n" + TC + "\nand\n" + TC2
    events = [p.feed(ch) for ch in text] + [p.finish()]
    with_calls = [e.calls for e in events if e.calls]
    assert [[(c.name, c.index, c.id) for c in cs] for cs in with_calls] == [
        [("get_weather", 0, "c0")],
        [("get_weather", 1, "c1"), ("get_time", 2, "c2")],
    ]
    assert "".join(e.content for e in events) == "Checking.\n\nand"
    # content before the block streamed before the block closed
    first_call = next(i for i, e in enumerate(events) if e.calls)
    assert "".join(e.content for e in events[:first_call]) == "Checking."


def test_tool_stream_think_passthrough():
    text = "<think>" + TC + "</think>ok"
    content, calls, _ = _stream_tools(list(text))
    assert calls == [] and content == text


def test_unterminated_block_at_finish():
    p = ToolCallStreamParser()
    d1 = p.feed('hi <tool_calls>[{"name": "f"')
    assert d1 == ToolCallDelta("hi") and p.in_tool_block
    d2 = p.finish()
    assert d2 == ToolCallDelta(' <tool_calls>[{"name": "f"')
