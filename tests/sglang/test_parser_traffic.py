"""Our SGLang parsers on recorded replies (tests/parser_cases.py), driven the way SGLang's OpenAI
serving drives them: ``ReasoningParser(...).parse_stream_chunk`` then
``FunctionCallParser(...).parse_stream_chunk`` on the normal text, ``parse_stream_end`` on both at
the end; ``parse_non_stream`` for the non-streaming answer. Every split point and random chunkings;
the answer must equal the core parser's."""

import json

import pytest
from parser_cases import CASES, NAMES, chunkings, expected_calls

from hunyuan_plugins import parsers as P


@pytest.fixture(scope="module")
def sgl():
    from sglang.srt.entrypoints.openai.protocol import Function, Tool
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    from hunyuan_plugins.sglang import parsers

    parsers.register()
    tools = [Tool(type="function", function=Function(name=n, parameters={"type": "object"}))
             for n in ("get_weather", "get_time", "search")]
    return ReasoningParser, FunctionCallParser, tools


def _calls(items):
    return [(c.name, c.parameters) for c in items]


def stream(sgl, pieces, stream_reasoning=True):
    ReasoningParser, FunctionCallParser, tools = sgl
    rp = ReasoningParser("hunyuan_a13b", stream_reasoning=stream_reasoning, force_reasoning=True)
    fcp = FunctionCallParser(tools, "hunyuan_a13b")
    reasoning, content, calls = [], [], []
    for i, piece in enumerate(pieces):
        r, c = rp.parse_stream_chunk(piece)
        if i == len(pieces) - 1:
            r2, c2 = rp.parse_stream_end()
            r, c = (r or "") + (r2 or ""), (c or "") + (c2 or "")
        reasoning.append(r or "")
        normal, items = fcp.parse_stream_chunk(c or "")
        content.append(normal)
        calls += items
    normal, items = fcp.parse_stream_end()
    content.append(normal)
    calls += items
    return "".join(reasoning), "".join(content), _calls(calls)


@pytest.mark.parametrize("name", NAMES)
def test_non_streaming(sgl, name):
    ReasoningParser, FunctionCallParser, tools = sgl
    case = CASES[name]
    reasoning, content = ReasoningParser("hunyuan_a13b", force_reasoning=True).parse_non_stream(case.text)
    normal, calls = FunctionCallParser(tools, "hunyuan_a13b").parse_non_stream(content or "")
    assert (reasoning or None, normal or None, _calls(calls)) == (case.reasoning, case.content, expected_calls(case))


@pytest.mark.parametrize("name", NAMES)
def test_every_chunking(sgl, name):
    case = CASES[name]
    want = (case.reasoning or "", case.content or "", expected_calls(case))
    for pieces in chunkings(case.text, n_random=20):
        assert stream(sgl, pieces) == want, pieces


@pytest.mark.parametrize("name", ["thinking_on", "answer_end_after_call", "cut_in_think", "cjk"])
def test_reasoning_held_until_done_when_not_streamed(sgl, name):
    case = CASES[name]
    assert stream(sgl, list(case.text), stream_reasoning=False) == (
        case.reasoning or "", case.content or "", expected_calls(case))


def test_tool_items_name_their_tool():
    """Each ToolCallItem carries the index of its tool in the request (-1: not offered)."""
    from sglang.srt.entrypoints.openai.protocol import Function, Tool
    from sglang.srt.function_call.function_call_parser import FunctionCallParser

    from hunyuan_plugins.sglang import parsers

    parsers.register()
    tools = [Tool(type="function", function=Function(name="get_weather", parameters={"type": "object"}))]
    content = P.split_reasoning(CASES["empty_args_then_args"].text).content
    _, calls = FunctionCallParser(tools, "hunyuan_a13b").parse_non_stream(content)
    assert [(c.tool_index, c.name, json.loads(c.parameters)) for c in calls] == [
        (-1, "get_time", {}), (0, "get_weather", {"city": "Beijing", "unit": "celsius"})]
