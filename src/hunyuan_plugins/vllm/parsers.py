"""vLLM reasoning and tool-call parsers for Hunyuan-A13B's output format.

Thin wrappers: the text logic is ``hunyuan_plugins.parsers`` (shared with SGLang); here only
vLLM's interfaces. Registered under ``hunyuan_a13b`` — replacing vLLM's built-in parsers of that
name, whose streaming matches hard-coded token ids of the real tokenizer and so fails on any
other — and under ``hunyuan`` as an alias:

    vllm serve ... --reasoning-parser hunyuan_a13b --enable-auto-tool-choice --tool-call-parser hunyuan_a13b

Streaming state is per parser instance; each call checks it continues where the previous one
stopped (``previous_text``) and replays otherwise, so a reused instance never mixes requests.
"""

from __future__ import annotations

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
    """Feeds a streaming parser the deltas of one response, replaying if the stream jumps."""

    def __init__(self, factory):
        self.factory, self.parser, self.seen = factory, None, None

    def feed(self, previous_text: str, delta_text: str):
        if self.parser is None or self.seen != previous_text:
            self.parser = self.factory()
            if previous_text:
                self.parser.feed(previous_text)
        self.seen = previous_text + delta_text
        return self.parser.feed(delta_text)


class _ReasoningStream:
    """The core's reasoning stream, plus the hand-over point to vLLM's tool-call phase.

    vLLM streams everything after the reasoning either raw or through the tool parser. Raw would
    leak ``<answer>`` tags, so this stream keeps the whole answer and hands over only when a
    ``<tool_calls>`` block starts (a partial ``<tool_calls>`` tag is held back until it is
    decided); the tool parser strips the answer tags from what follows.
    """

    def __init__(self, P, prompt_in_think: bool):
        self.P, self.core = P, P.ReasoningStreamParser(prompt_in_think=prompt_in_think)
        self.held, self.tools_started = "", False

    def feed(self, delta: str):
        out = self.core.feed(delta)
        content = self.held + out.content
        self.held = ""
        if not self.tools_started:
            i = content.find(self.P.TOOL_CALLS_START)
            if i != -1:
                self.tools_started = True
            else:
                lt = content.rfind("<")
                if lt != -1 and self.P.TOOL_CALLS_START.startswith(content[lt:]):
                    content, self.held = content[:lt], content[lt:]
        return self.P.ReasoningDelta(out.reasoning, content)

    def finish(self):
        out = self.core.finish()
        return self.P.ReasoningDelta(out.reasoning, self.held + out.content)


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

    class HunyuanA13BReasoningParser(ReasoningParser):
        """``<think>…</think>`` is reasoning; ``<answer>`` tags are stripped from the content.

        Streaming is "engine based" in vLLM's terms: this parser, not a token-id check, says when
        the tool-call phase takes over (``has_engine_confirmed_reasoning_end``), so it sees the
        whole answer and strips its tags. ``is_reasoning_end_streaming`` (text based, any
        tokenizer) is what structured outputs use to start the grammar after ``</think>``.
        """

        engine_based_streaming = True

        def __init__(self, tokenizer, *args, **kwargs):
            super().__init__(tokenizer, *args, **kwargs)
            self._prompt_in_think = False
            self._stream = _Replay(lambda: _ReasoningStream(P, self._prompt_in_think))

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
            parser = self._stream.parser
            return parser is not None and parser.tools_started

        def finish_streaming(self):
            """At the hand-over nothing is held; at the end of the stream, what was held back."""
            parser = self._stream.parser
            if parser is None or parser.tools_started:
                return None
            out = parser.finish()
            if not out.reasoning and not out.content:
                return None
            return DeltaMessage(reasoning=out.reasoning or None, content=out.content or None)

        def extract_content_ids(self, input_ids: list[int]) -> list[int]:
            return input_ids

        def extract_reasoning(self, model_output: str, request) -> tuple[str | None, str | None]:
            result = P.split_reasoning(model_output)
            return result.reasoning, result.content

        def extract_reasoning_streaming(self, previous_text, current_text, delta_text, previous_token_ids,
                                        current_token_ids, delta_token_ids):
            delta = self._stream.feed(previous_text, delta_text)
            if not delta.reasoning and not delta.content:
                return None
            return DeltaMessage(reasoning=delta.reasoning or None, content=delta.content or None)

    class HunyuanA13BToolParser(ToolParser):
        """``<tool_calls>[{"name": …, "arguments": …}]</tool_calls>``; calls inside ``<think>`` ignored."""

        def __init__(self, tokenizer, tools=None):
            super().__init__(tokenizer, tools)
            self._stream = _Replay(_AnswerThenTools)

        def extract_tool_calls(self, model_output: str, request) -> ExtractedToolCallInformation:
            result = P.parse_tool_calls(model_output)
            calls = [ToolCall(id=c.id, type="function", function=FunctionCall(name=c.name, arguments=c.arguments))
                     for c in result.calls]
            return ExtractedToolCallInformation(tools_called=bool(calls), tool_calls=calls, content=result.content)

        def extract_tool_calls_streaming(self, previous_text, current_text, delta_text, previous_token_ids,
                                         current_token_ids, delta_token_ids, request):
            delta = self._stream.feed(previous_text, delta_text)
            if not delta.calls:
                return DeltaMessage(content=delta.content) if delta.content else None
            for c in delta.calls:  # whole calls: record them as fully streamed for vLLM's bookkeeping
                self.prev_tool_call_arr.append({"name": c.name, "arguments": c.arguments})
                self.streamed_args_for_tool.append(c.arguments)
                self.current_tool_id = c.index
            return DeltaMessage(content=delta.content or None, tool_calls=[
                DeltaToolCall(index=c.index, id=c.id, type="function",
                              function=DeltaFunctionCall(name=c.name, arguments=c.arguments).model_dump(
                                  exclude_none=True))
                for c in delta.calls])

    class _AnswerThenTools:
        """What vLLM streams to the tool parser is answer text: drop its tags, then find the calls."""

        def __init__(self):
            self.answer, self.tools = P.ReasoningStreamParser(), P.ToolCallStreamParser()

        def feed(self, delta: str):
            return self.tools.feed(self.answer.feed(delta).content)

    return {"HunyuanA13BReasoningParser": HunyuanA13BReasoningParser,
            "HunyuanA13BToolParser": HunyuanA13BToolParser}
