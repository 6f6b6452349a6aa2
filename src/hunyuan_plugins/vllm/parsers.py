"""vLLM reasoning and tool-call parsers for Hunyuan-A13B's output format.

Thin wrappers: the text logic is ``hunyuan_plugins.parsers`` (shared with SGLang); here only
vLLM's interfaces. Registered under ``hunyuan_a13b`` — replacing vLLM's built-in parsers of that
name, whose streaming matches hard-coded token ids of the real tokenizer and so fails on any
other — and under ``hunyuan`` as an alias:

    vllm serve ... --reasoning-parser hunyuan_a13b --enable-auto-tool-choice --tool-call-parser hunyuan_a13b

Streaming state is per parser instance (vLLM builds one per request and choice); a call whose
non-empty ``previous_text`` is not what the instance has seen replays it first. With a reasoning
parser configured, the reasoning parser streams the whole response, tool calls included (see
``HunyuanA13BReasoningParser``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

REASONING_PARSER = "hunyuan_a13b"
TOOL_PARSER = "hunyuan_a13b"
_NAMES = (REASONING_PARSER, "hunyuan")
# tokens of tail decoded per structured-output step: enough for "</think>" in any tokenizer (byte
# level at worst: 8 tokens) plus the newline and the start of the answer after it
_END_WINDOW = 16


def register() -> None:
    """Lazy registration (imports nothing of vLLM's serving stack until a parser is used)."""
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    for name in _NAMES:
        ReasoningParserManager.reasoning_parsers.pop(name, None)
        ReasoningParserManager.register_lazy_module(name, __name__, "HunyuanA13BReasoningParser")
        ToolParserManager.tool_parsers.pop(name, None)
        ToolParserManager.register_lazy_module(name, __name__, "HunyuanA13BToolParser")


def __getattr__(name: str):
    # The parser classes subclass vLLM's, so they are built on first access only.
    if name in ("HunyuanA13BReasoningParser", "HunyuanA13BToolParser"):
        globals().update(_build())
        return globals()[name]
    raise AttributeError(name)


class _Replay:
    """Feeds one core stream the deltas of one response, replaying if the stream jumps.

    vLLM passes the cumulative ``previous_text`` (legacy parsers) or ``""`` (engine-based parsing):
    an empty one continues, a non-empty one that is not what this stream has seen starts over.
    """

    def __init__(self, factory):
        self.factory, self.parser, self.seen = factory, None, ""

    def feed(self, previous_text: str, delta_text: str):
        if self.parser is None or (previous_text and previous_text != self.seen):
            self.parser, self.seen = self.factory(), previous_text
            if previous_text:
                self.parser.feed(previous_text)
        self.seen += delta_text
        return self.parser.feed(delta_text)

    def finish(self):
        parser, self.parser, self.seen = self.parser, None, ""
        return None if parser is None else parser.finish()


def _owning_parser():
    """``(found, reasoning_parser)`` of the vLLM ``Parser`` whose ``__init__`` is building a tool parser.

    vLLM's ``Parser.__init__`` builds and stores the reasoning parser, then builds the tool parser;
    that is the only place the two meet, so the tool parser looks there (a few frames up) for its
    partner. ``found`` is False when it is built some other way.
    """
    frame = sys._getframe(1)
    for _ in range(6):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if owner is not None and hasattr(owner, "_reasoning_parser") and hasattr(owner, "_tool_parser"):
            return True, owner._reasoning_parser
        frame = frame.f_back
    return False, None


def _build() -> dict:
    from vllm.entrypoints.generate.base.protocol import (
        DeltaFunctionCall,
        DeltaMessage,
        DeltaToolCall,
        ExtractedToolCallInformation,
        FunctionCall,
        ToolCall,
    )
    from vllm.reasoning import ReasoningParser
    from vllm.tool_parsers import ToolParser

    from hunyuan_plugins import parsers as P

    def _message(d, tool_calls=()) -> DeltaMessage | None:
        calls = [DeltaToolCall(index=c.index, id=c.id, type="function",
                               function=DeltaFunctionCall(name=c.name, arguments=c.arguments).model_dump(
                                   exclude_none=True))
                 for c in tool_calls]
        reasoning = getattr(d, "reasoning", "")
        if not reasoning and not d.content and not calls:
            return None
        return DeltaMessage(reasoning=reasoning or None, content=d.content or None, tool_calls=calls)

    class HunyuanA13BReasoningParser(ReasoningParser):
        """``<think>…</think>`` is reasoning; ``<answer>`` tags are stripped from the content.

        Streaming is "engine based" in vLLM's terms and this parser streams the WHOLE response: it
        never hands over to vLLM's tool-call phase (``has_engine_confirmed_reasoning_end`` stays
        False), because vLLM streams whatever follows the hand-over either raw (no tool parser, or
        ``tool_choice: none``: ``</answer>`` would leak) or through the tool parser (which could not
        see held-back whitespace). When our tool parser is configured too and the request offers
        tools, the one core stream (``ResponseStreamParser``) also parses ``<tool_calls>`` and the
        calls go out in this parser's deltas. ``is_reasoning_end_streaming`` (text based, any
        tokenizer) is what structured outputs use to start the grammar after ``</think>``.
        """

        engine_based_streaming = True

        def __init__(self, tokenizer, *args, **kwargs):
            super().__init__(tokenizer, *args, **kwargs)
            self._prompt_in_think = False
            self._parse_tools = False  # set by our tool parser, built next by the same vLLM Parser
            self._stream = _Replay(lambda: P.ResponseStreamParser(
                prompt_in_think=self._prompt_in_think, tools=self._parse_tools))

        @property
        def reasoning_start_str(self) -> str:
            return P.THINK_START

        @property
        def reasoning_end_str(self) -> str:
            return P.THINK_END

        def _turn_text(self, ids: Sequence[int]) -> str:
            """Text of the current assistant turn (a prompt's history may hold earlier think blocks)."""
            return self.model_tokenizer.decode(list(ids)).rsplit(P.TURN_END, 1)[-1]

        def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
            text = self.model_tokenizer.decode(list(input_ids))
            if P.TURN_END in text:
                # A chat prompt: even one that closes an empty think block (enable_thinking=False)
                # leaves an answer whose tags this parser must strip, so the stream starts here.
                # Structured outputs still start right away (is_reasoning_end_streaming).
                return False
            return P.THINK_END in text or text.lstrip().startswith(P.ANSWER_START)

        def is_reasoning_end_streaming(self, input_ids: Sequence[int], delta_ids) -> bool:
            # Asked on every decode step until it first says True, so only the tail that can hold a
            # newly completed </think> is decoded (not the whole sequence: O(1) per step, not O(n)).
            n = len(list(delta_ids)) + _END_WINDOW
            tail = self.model_tokenizer.decode(list(input_ids[-n:]))
            turn_start = P.TURN_END in tail or len(input_ids) <= n  # the window reaches the turn's start
            text = tail.rsplit(P.TURN_END, 1)[-1]
            return P.THINK_END in text or (turn_start and text.lstrip().startswith(P.ANSWER_START))

        def adjust_initial_state_from_prompt(self, prompt_token_ids: Sequence[int]) -> None:
            text = self._turn_text(prompt_token_ids)
            self._prompt_in_think = P.THINK_START in text and P.THINK_END not in text

        def has_engine_confirmed_reasoning_end(self) -> bool:
            return False  # this parser streams the whole response (see the class doc)

        def finish_streaming(self):
            """At the end of the stream: what was held back (an unterminated tool block as content)."""
            d = self._stream.finish()
            return None if d is None else _message(d, d.calls)

        def extract_content_ids(self, input_ids: list[int]) -> list[int]:
            return input_ids

        def extract_reasoning(self, model_output: str, request) -> tuple[str | None, str | None]:
            result = P.split_reasoning(model_output)
            return result.reasoning, result.content

        def extract_reasoning_streaming(self, previous_text, current_text, delta_text, previous_token_ids,
                                        current_token_ids, delta_token_ids):
            d = self._stream.feed(previous_text, delta_text)
            return _message(d, d.calls)

    class HunyuanA13BToolParser(ToolParser):
        """``<tool_calls>[{"name": …, "arguments": …}]</tool_calls>``; calls inside ``<think>`` ignored.

        Behind our reasoning parser (the usual set-up) this parser only tells it whether the request
        offers tools; the reasoning parser then streams the calls. Configured alone, or behind
        another reasoning parser, it streams the text vLLM hands it itself ("engine based", so vLLM
        calls ``finish_streaming`` and an unterminated block is not lost). ``tool_choice: none``:
        blocks stay content, streaming and not.
        """

        engine_based_streaming = True

        def __init__(self, tokenizer, tools=None):
            super().__init__(tokenizer, tools)
            found, reasoner = _owning_parser()
            self._after_reasoner = found and reasoner is not None
            if isinstance(reasoner, HunyuanA13BReasoningParser):
                reasoner._parse_tools = bool(self.tools)
            self._request_tools = True
            self._stream = _Replay(lambda: P.ResponseStreamParser(reasoning=self._after_reasoner,
                                                                  tools=self._request_tools))

        @property
        def skip_reasoning_parsing(self) -> bool:
            return not self._after_reasoner

        @skip_reasoning_parsing.setter
        def skip_reasoning_parsing(self, value: bool) -> None:
            # vLLM sets this when no reasoning parser is configured: reasoning markup is content
            self._after_reasoner = not value

        def extract_tool_calls(self, model_output: str, request) -> ExtractedToolCallInformation:
            if getattr(request, "tool_choice", None) == "none":
                content = model_output.strip(P.WHITESPACE) or None
                return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=content)
            if self._after_reasoner:
                _, content, calls = P.parse_response(model_output)
            else:
                result = P.parse_tool_calls(model_output)
                content, calls = result.content, result.calls
            calls = [ToolCall(id=c.id, type="function", function=FunctionCall(name=c.name, arguments=c.arguments))
                     for c in calls]
            return ExtractedToolCallInformation(tools_called=bool(calls), tool_calls=calls, content=content)

        def extract_tool_calls_streaming(self, previous_text, current_text, delta_text, previous_token_ids,
                                         current_token_ids, delta_token_ids, request):
            if self._stream.parser is None:
                self._request_tools = getattr(request, "tool_choice", None) != "none"
            d = self._stream.feed(previous_text, delta_text)
            self._record(d.calls)
            return _message(P.ResponseDelta(content=d.content), d.calls)

        def _record(self, calls) -> None:
            for c in calls:  # whole calls: record them as fully streamed for vLLM's bookkeeping
                self.prev_tool_call_arr.append({"name": c.name, "arguments": c.arguments})
                self.streamed_args_for_tool.append(c.arguments)
                self.current_tool_id = c.index

        def finish_streaming(self):
            d = self._stream.finish()
            if d is None:
                return None
            self._record(d.calls)
            return _message(P.ResponseDelta(content=d.content), d.calls)

    return {"HunyuanA13BReasoningParser": HunyuanA13BReasoningParser,
            "HunyuanA13BToolParser": HunyuanA13BToolParser}
