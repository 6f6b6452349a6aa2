"""Recorded Hunyuan-A13B replies for the parser traffic tests, shared by every suite.

Imported as ``parser_cases`` (pytest puts ``tests/`` on ``sys.path``: ``tests/conftest.py`` is a
rootdir conftest of a package-less directory) by ``tests/test_parser_traffic.py`` (core, dev venv),
``tests/vllm/test_parser_traffic.py`` and ``tests/sglang/test_parser_traffic.py``. Pure stdlib.

Each case is what the model wrote (``text``) and what a client must get: the reasoning, the final
content (reasoning split, then tool calls removed) and the calls as ``(name, arguments dict)``.
The engines' parsers must give exactly the core's answer (same strings, same argument JSON text)
for every chunking of ``text``; the core's answer is pinned here.
"""

from __future__ import annotations

import json
import random
from typing import NamedTuple


class Case(NamedTuple):
    text: str
    reasoning: str | None
    content: str | None
    calls: list[tuple[str, dict]]
    note: str = ""


def _tc(*calls) -> str:
    return "<tool_calls>" + json.dumps([{"name": n, "arguments": a} for n, a in calls], ensure_ascii=False) \
        + "</tool_calls>"


THINK = "<think>\n{}\n</think>\n<answer>\n{}\n</answer>"
ANSWER = "<answer>\n{}\n</answer>"

NAME_ARGS = {"name": "n", "query": 'x "name": "y"', "inner": {"name": "z", "arguments": {}}}
WEATHER = ("get_weather", {"city": "Beijing", "unit": "celsius"})
NESTED_ARGS = {"event": {"title": "Sync", "attendees": [{"name": "Bob", "tags": ["a", {"b": [1, 2, {"c": None}]}]}],
                         "meta": {"nested": {"deep": True, "list": [[], {}, [[{}]]]}}}, "count": 3}

CASES: dict[str, Case] = {
    # ---------------------------------------------------------------- plain replies
    "thinking_on": Case(
        THINK.format("The user greets me.\nI greet back.", "Hello! How can I help you today?"),
        "The user greets me.\nI greet back.", "Hello! How can I help you today?", []),
    "thinking_off": Case(ANSWER.format("Hello there."), None, "Hello there.", []),
    "no_think_empty_block": Case("<think>\n\n</think>\n<answer>\nFast answer.\n</answer>", None, "Fast answer.", []),
    # ---------------------------------------------------------------- reported upstream
    "empty_args_then_args": Case(  # vLLM/SGLang: arguments dropped after a call with empty arguments
        THINK.format("Need the time, then the weather.", _tc(("get_time", {}), WEATHER)),
        "Need the time, then the weather.", None, [("get_time", {}), WEATHER]),
    "empty_args_string_then_args": Case(
        ANSWER.format('<tool_calls>[{"name": "get_time", "arguments": ""}, {"name": "get_time", "arguments": "{}"}, '
                      '{"name": "get_weather", "arguments": "{\\"city\\": \\"Beijing\\"}"}]</tool_calls>'),
        None, None, [("get_time", {}), ("get_time", {}), ("get_weather", {"city": "Beijing"})]),
    "empty_args_separate_blocks": Case(
        ANSWER.format("One.\n" + _tc(("ping", {})) + "\nTwo.\n" + _tc(WEATHER)),
        None, "One.\n\nTwo.", [("ping", {}), WEATHER]),
    "argument_named_name": Case(  # an argument called "name" must not become a second call
        THINK.format("Create the user.", _tc(("create_user", {"name": "Alice", "role": "admin"}))),
        "Create the user.", None, [("create_user", {"name": "Alice", "role": "admin"})]),
    "argument_named_name_first_and_nested": Case(
        ANSWER.format(_tc(("lookup", NAME_ARGS))), None, None, [("lookup", NAME_ARGS)]),
    "nested_json_arguments": Case(
        THINK.format("Schedule it.", "Scheduling.\n" + _tc(("create_event", NESTED_ARGS))),
        "Schedule it.", "Scheduling.", [("create_event", NESTED_ARGS)]),
    "nested_json_arguments_as_string": Case(
        ANSWER.format('<tool_calls>[{"name": "create_event", "arguments": '
                      + json.dumps(json.dumps(NESTED_ARGS)) + "}]</tool_calls>"),
        None, None, [("create_event", NESTED_ARGS)]),
    "answer_end_after_call": Case(  # </answer> must never reach the streamed content
        THINK.format("Look it up.", "Let me check.\n" + _tc(WEATHER)),
        "Look it up.", "Let me check.", [WEATHER]),
    "answer_end_after_call_no_newline": Case(
        "<think>x</think><answer>" + _tc(WEATHER) + "</answer>", "x", None, [WEATHER]),
    "text_after_call": Case(
        THINK.format("Look it up.", "Checking.\n" + _tc(WEATHER) + "\nI will report back."),
        "Look it up.", "Checking.\n\nI will report back.", [WEATHER]),
    # ---------------------------------------------------------------- several calls
    "three_calls_one_block": Case(
        ANSWER.format("Doing three things.\n" + _tc(WEATHER, ("get_time", {"tz": "Asia/Shanghai"}),
                                                     ("search", {"q": "news", "limit": 5}))),
        None, "Doing three things.",
        [WEATHER, ("get_time", {"tz": "Asia/Shanghai"}), ("search", {"q": "news", "limit": 5})]),
    "single_object_block": Case(
        ANSWER.format('<tool_calls>{"name": "ping", "arguments": {"n": 1}}</tool_calls>'), None, None,
        [("ping", {"n": 1})]),
    "call_inside_think_ignored": Case(
        THINK.format("Maybe " + _tc(("wrong", {})) + " later.", "Now.\n" + _tc(WEATHER)),
        "Maybe " + _tc(("wrong", {})) + " later.", "Now.", [WEATHER]),
    # ---------------------------------------------------------------- unicode and escapes
    "cjk": Case(
        THINK.format("用户问北京天气。", "我来查一下。\n" + _tc(("查询天气", {"城市": "北京", "日期": "今天"}))),
        "用户问北京天气。", "我来查一下。", [("查询天气", {"城市": "北京", "日期": "今天"})]),
    "emoji": Case(
        ANSWER.format("Sending 🎉\n" + _tc(("send", {"text": "Party 🎉🎊 time 👍🏽", "flag": "🇨🇳"}))),
        None, "Sending 🎉", [("send", {"text": "Party 🎉🎊 time 👍🏽", "flag": "🇨🇳"})]),
    "escaped_unicode": Case(  # the model writes \\u escapes (a surrogate pair too)
        ANSWER.format('<tool_calls>[{"name": "send", "arguments": {"text": "\\u4f60\\u597d \\ud83d\\ude00"}}]'
                      "</tool_calls>"),
        None, None, [("send", {"text": "你好 😀"})]),
    "escaped_quotes": Case(
        ANSWER.format(_tc(("run", {"cmd": 'echo "hi" \\ done', "path": "C:\\dir\\f.txt", "nl": "a\nb\tc"}))),
        None, None, [("run", {"cmd": 'echo "hi" \\ done', "path": "C:\\dir\\f.txt", "nl": "a\nb\tc"})]),
    "tags_inside_arguments": Case(  # tag text inside a JSON string is data, not markup
        THINK.format("Write it.", _tc(("write", {"html": "<answer>x</answer> and </tool_calls> <think>"}))),
        "Write it.", None, [("write", {"html": "<answer>x</answer> and </tool_calls> <think>"})]),
    "literal_think_in_answer": Case(  # a <think> in the answer is text and does not hide a later call
        ANSWER.format("Wrap reasoning in <think> tags.\n" + _tc(WEATHER)),
        None, "Wrap reasoning in <think> tags.", [WEATHER]),
    # ---------------------------------------------------------------- cut off (max_tokens)
    "cut_in_arguments": Case(  # no call from an unterminated block; its raw text stays content
        "<think>\nNeed weather.\n</think>\n<answer>\nChecking.\n"
        '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Bei',
        "Need weather.", 'Checking.\n<tool_calls>[{"name": "get_weather", "arguments": {"city": "Bei', []),
    "cut_after_complete_json": Case(
        "<answer>\nChecking.\n" + _tc(WEATHER)[:-len("</tool_calls>")],
        None, "Checking.\n" + _tc(WEATHER)[:-len("</tool_calls>")], []),
    "cut_in_start_tag": Case("<answer>\nChecking.\n<tool_ca", None, "Checking.\n<tool_ca", []),
    "cut_in_end_tag": Case(
        '<answer>\n<tool_calls>[{"name": "ping", "arguments": {}}]</tool_cal', None,
        '<tool_calls>[{"name": "ping", "arguments": {}}]</tool_cal', []),
    "cut_after_first_block": Case(
        "<answer>\n" + _tc(("ping", {})) + "\n" + '<tool_calls>[{"name": "pong"',
        None, '<tool_calls>[{"name": "pong"', [("ping", {})]),
    "cut_in_think": Case("<think>\nStill thinking about <tool_calls>", "Still thinking about <tool_calls>", None, []),
    # ---------------------------------------------------------------- invalid blocks stay text
    "malformed_block": Case(
        ANSWER.format('Try.\n<tool_calls>[{"name": "f", "arguments": {]</tool_calls>\nDone.'), None,
        'Try.\n<tool_calls>[{"name": "f", "arguments": {]</tool_calls>\nDone.', []),
}

NAMES = list(CASES)


def expected_calls(case: Case) -> list[tuple[str, str]]:
    """The calls as ``(name, arguments JSON text)``, in the core's exact serialisation."""
    return [(n, json.dumps(a, ensure_ascii=False)) for n, a in case.calls]


# ------------------------------------------------------------------------------ chunkings

def split_at(text: str, cuts) -> list[str]:
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def every_split(text: str):
    """The text in two pieces, at every split point (and whole)."""
    yield [text]
    for k in range(1, len(text)):
        yield [text[:k], text[k:]]


def random_chunkings(text: str, n: int = 40, seed: int = 13):
    """Character by character, then ``n`` random multi-split chunkings (fixed seed: reproducible)."""
    yield list(text)
    rng = random.Random(f"{seed}:{text}")  # str seeds are not hash-randomised
    for _ in range(n):
        if len(text) < 2:
            yield [text]
            continue
        k = rng.randint(2, min(40, len(text) - 1))
        yield split_at(text, rng.sample(range(1, len(text)), k))


def chunkings(text: str, n_random: int = 40):
    yield from every_split(text)
    yield from random_chunkings(text, n_random)
