"""SGLang reasoning and tool-call parsers for Hunyuan-A13B's output format.

Thin wrappers: the text logic is ``hunyuan_plugins.parsers`` (shared with vLLM); here only
SGLang's detector interfaces. Registered under ``hunyuan_a13b`` (SGLang's own ``hunyuan`` parsers
target the HY3 format: on A13B output they return no tool calls and leave ``<answer>`` tags in
the content), so:

    python -m sglang.launch_server ... --reasoning-parser hunyuan_a13b --tool-call-parser hunyuan_a13b

Each detector instance serves one response (SGLang makes one per request and choice).
"""

from __future__ import annotations

REASONING_PARSER = "hunyuan_a13b"
TOOL_PARSER = "hunyuan_a13b"


def register() -> None:
    """Adds our detectors to SGLang's maps (imported here, so ``--reasoning-parser`` /
    ``--tool-call-parser`` list them among their choices)."""
    from sglang.srt.function_call import parser_names
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser import reasoning_parser_names
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    reasoning, tool = _build()
    ReasoningParser.DetectorMap[REASONING_PARSER] = reasoning
    FunctionCallParser.ToolCallParserEnum[TOOL_PARSER] = tool
    for names, name in ((reasoning_parser_names.REASONING_PARSER_NAMES, REASONING_PARSER),
                        (parser_names.TOOL_CALL_PARSER_NAMES, TOOL_PARSER)):
        if name not in names:
            names.append(name)


_built: tuple | None = None


def _build():
    global _built
    if _built is not None:
        return _built
    from sglang.srt.function_call.base_format_detector import BaseFormatDetector
    from sglang.srt.function_call.core_types import StreamingParseResult as ToolResult
    from sglang.srt.function_call.core_types import StructureInfo, ToolCallItem
    from sglang.srt.parser.reasoning_parser import BaseReasoningFormatDetector, StreamingParseResult

    from hunyuan_plugins import parsers as P

    class HunyuanA13BReasoningDetector(BaseReasoningFormatDetector):
        """``<think>…</think>`` is reasoning; ``<answer>`` tags are stripped from the content."""

        def __init__(self, stream_reasoning: bool = True, force_reasoning: bool = False, **kwargs):
            # SGLang passes force_reasoning=True whenever a request is in thinking mode (with or
            # without enable_thinking). A13B's chat template never opens <think> in the prompt: the
            # model writes <think>...</think> itself (an empty block when thinking is off), so the
            # output is always parsed from the start.
            super().__init__(P.THINK_START, P.THINK_END, force_reasoning=False, stream_reasoning=stream_reasoning)
            self._prompt_in_think = False
            self._stream = P.ReasoningStreamParser(prompt_in_think=False)
            self._held = ""  # reasoning held back when stream_reasoning is off

        def detect_and_parse(self, text: str) -> StreamingParseResult:
            r = P.split_reasoning(text, prompt_in_think=self._prompt_in_think)
            return StreamingParseResult(normal_text=r.content or "", reasoning_text=r.reasoning or "")

        def _out(self, reasoning: str, content: str, final: bool = False) -> StreamingParseResult:
            self._in_reasoning = self._stream.in_reasoning
            if not self.stream_reasoning:
                self._held += reasoning
                reasoning = ""
                if final or self._stream.reasoning_ended:
                    reasoning, self._held = self._held, ""
            return StreamingParseResult(normal_text=content, reasoning_text=reasoning)

        def parse_streaming_increment(self, new_text: str) -> StreamingParseResult:
            d = self._stream.feed(new_text)
            return self._out(d.reasoning, d.content)

        def finish(self) -> StreamingParseResult:
            d = self._stream.finish()
            return self._out(d.reasoning, d.content, final=True)

    class HunyuanA13BToolDetector(BaseFormatDetector):
        """``<tool_calls>[{"name": …, "arguments": …}]</tool_calls>``; calls inside ``<think>`` ignored."""

        def __init__(self):
            super().__init__()
            self.bot_token, self.eot_token = P.TOOL_CALLS_START, P.TOOL_CALLS_END
            self._stream = P.ToolCallStreamParser()

        def has_tool_call(self, text: str) -> bool:
            return P.TOOL_CALLS_START in text

        def _items(self, calls, tools) -> list:
            index = self._get_tool_indices(tools or [])
            return [ToolCallItem(tool_index=index.get(c.name, -1), name=c.name, parameters=c.arguments)
                    for c in calls]

        def detect_and_parse(self, text: str, tools) -> ToolResult:
            r = P.parse_tool_calls(text)
            return ToolResult(normal_text=r.content or "", calls=self._items(r.calls, tools))

        def _record(self, calls) -> None:
            for c in calls:  # whole calls: record them as fully streamed for SGLang's bookkeeping
                self.prev_tool_call_arr.append({"name": c.name, "arguments": c.arguments})
                self.streamed_args_for_tool.append(c.arguments)
                self.current_tool_id = c.index + 1

        def parse_streaming_increment(self, new_text: str, tools) -> ToolResult:
            d = self._stream.feed(new_text)
            self._record(d.calls)
            return ToolResult(normal_text=d.content, calls=self._items(d.calls, tools))

        def finish(self, tools) -> ToolResult:
            d = self._stream.finish()
            return ToolResult(normal_text=d.content, calls=[])

        def supports_structural_tag(self) -> bool:
            return False

        def structure_info(self):
            return lambda name: StructureInfo(begin=f'{P.TOOL_CALLS_START}[{{"name": "{name}", "arguments": ',
                                              end=f"}}]{P.TOOL_CALLS_END}", trigger=P.TOOL_CALLS_START)

    _built = (HunyuanA13BReasoningDetector, HunyuanA13BToolDetector)
    return _built
