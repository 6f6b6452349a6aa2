"""Our vLLM parsers on recorded replies (tests/parser_cases.py), driven the way vLLM's OpenAI server
drives them: vLLM's own composed ``Parser`` (``ParserManager.get_parser``, ``parse_delta`` per
chunk with a real ``ChatCompletionRequest``, ``parse`` for the non-streaming answer), for every
split point and random chunkings; the answer must equal the core parser's."""

import json

import pytest
from parser_cases import CASES, NAMES, chunkings, expected_calls, random_chunkings
from transformers import AutoTokenizer

from hunyuan_plugins import parsers as P
from hunyuan_plugins.vllm import parsers as vp

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
# name -> (reasoning parser, tool parser (--enable-auto-tool-choice), request offers tools)
CONFIGS = {
    "both": (True, True, True),
    "both_no_tools_in_request": (True, True, False),
    "reasoning_only": (True, False, False),  # no --enable-auto-tool-choice
    "tools_only": (False, True, True),
}


@pytest.fixture(scope="module")
def env(tiny):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.parser import ParserManager

    vp.register()
    tok = AutoTokenizer.from_pretrained(tiny("a13b", "tencent", "fp32"))
    prompt = tok("<|startoftext|>question<|extra_0|>", add_special_tokens=False)["input_ids"]
    out = {}
    for name, (reasoning, tools, offered) in CONFIGS.items():
        cls = ParserManager.get_parser(tool_parser_name="hunyuan_a13b" if tools else None,
                                       reasoning_parser_name="hunyuan_a13b" if reasoning else None,
                                       enable_auto_tools=tools)
        req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "q"}],
                                    **({"tools": TOOLS} if offered else {}))
        out[name] = (cls, req, tools)
    return tok, prompt, out


def expected(config, text):
    reasoning, tools, offered = CONFIGS[config]
    if reasoning and tools and offered:
        r, c, calls = P.parse_response(text)
    elif reasoning:
        split = P.split_reasoning(text)
        r, c, calls = split.reasoning, split.content, []
    else:
        res = P.parse_tool_calls(text)
        r, c, calls = None, res.content, res.calls
    return r or "", c or "", [(x.name, x.arguments) for x in calls]


def stream(env, config, pieces):
    tok, prompt, parsers = env
    cls, req, _ = parsers[config]
    parser = cls(tok, req.tools)
    reasoning, content, calls = [], [], {}
    for i, piece in enumerate(pieces):
        d = parser.parse_delta(piece, [1], req, prompt_token_ids=prompt, finished=i == len(pieces) - 1)
        if d is None:
            continue
        reasoning.append(d.reasoning or "")
        content.append(d.content or "")
        for tc in d.tool_calls or []:
            name, args = calls.get(tc.index, ("", ""))
            calls[tc.index] = (name + ((tc.function.name or "") if tc.function else ""),
                               args + ((tc.function.arguments or "") if tc.function else ""))
    return "".join(reasoning), "".join(content), [calls[i] for i in sorted(calls)]


def non_stream(env, config, text):
    tok, prompt, parsers = env
    cls, req, tools = parsers[config]
    r, c, calls = cls(tok, req.tools).parse(text, req, enable_auto_tools=tools)
    return r or "", c or "", [(x.name, x.arguments) for x in calls or []]


@pytest.mark.parametrize("name", NAMES)
def test_every_chunking_with_both_parsers(env, name):
    case = CASES[name]
    want = (case.reasoning or "", case.content or "", expected_calls(case))
    assert expected("both", case.text) == want
    assert non_stream(env, "both", case.text) == want
    for pieces in chunkings(case.text, n_random=20):
        assert stream(env, "both", pieces) == want, pieces


@pytest.mark.parametrize("config", [c for c in CONFIGS if c != "both"])
@pytest.mark.parametrize("name", NAMES)
def test_other_configurations(env, config, name):
    text = CASES[name].text
    want = expected(config, text)
    assert non_stream(env, config, text) == want
    if CONFIGS[config][0] and not (CONFIGS[config][1] and CONFIGS[config][2]):
        assert "</answer>" not in want[1] or name == "tags_inside_arguments"
    for pieces in random_chunkings(text, n=8):
        assert stream(env, config, pieces) == want, pieces


def test_calls_stream_as_whole_calls_with_ids(env):
    """A call goes out once, whole (name and full arguments), with an id and its index."""
    tok, prompt, parsers = env
    cls, req, _ = parsers["both"]
    parser = cls(tok, req.tools)
    text = CASES["three_calls_one_block"].text
    deltas = [parser.parse_delta(ch, [1], req, prompt_token_ids=prompt, finished=False) for ch in text]
    tcs = [tc for d in deltas if d is not None for tc in d.tool_calls or []]
    assert [tc.index for tc in tcs] == [0, 1, 2]
    assert all(tc.id and tc.type == "function" for tc in tcs)
    assert [json.loads(tc.function.arguments) for tc in tcs] == [a for _, a in CASES["three_calls_one_block"].calls]


def test_parser_classes_directly(tiny):
    """The ReasoningParser / ToolParser subclasses outside vLLM's Parser (the legacy call pattern:
    cumulative previous_text): the reasoning parser streams the answer; the tool parser alone parses
    raw text and flushes an unterminated block from finish_streaming."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    tok = AutoTokenizer.from_pretrained(tiny("a13b", "tencent", "fp32"))
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "q"}], tools=TOOLS)
    for name in ("answer_end_after_call", "cut_in_arguments", "tags_inside_arguments"):
        text = CASES[name].text
        rp, tp = vp.HunyuanA13BReasoningParser(tok), vp.HunyuanA13BToolParser(tok, TOOLS)
        prev, rs, cs, calls = "", [], [], []
        for ch in text:
            d = rp.extract_reasoning_streaming(prev, prev + ch, ch, [], [], [])
            t = tp.extract_tool_calls_streaming(prev, prev + ch, ch, [], [], [], req)
            prev += ch
            if d:
                rs.append(d.reasoning or "")
                cs.append(d.content or "")
            if t:
                calls += [(x.function.name, x.function.arguments) for x in t.tool_calls]
        for d in (rp.finish_streaming(),):
            if d:
                rs.append(d.reasoning or "")
                cs.append(d.content or "")
        end = tp.finish_streaming()
        split = P.split_reasoning(text)
        assert ("".join(rs), "".join(cs)) == (split.reasoning or "", split.content or "")
        raw = P.parse_tool_calls(text)
        assert calls == [(c.name, c.arguments) for c in raw.calls]
        if name == "cut_in_arguments":
            assert end is not None and end.content.endswith('"city": "Bei') and not end.tool_calls
