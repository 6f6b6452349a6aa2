"""Engine-agnostic reasoning and tool-call parsing for Hunyuan-A13B output text.

The engine adapters (vLLM ``--reasoning-parser`` / ``--tool-call-parser``, SGLang's equivalents)
wrap these in their own interfaces. Everything here works on decoded TEXT, never on token ids:
tags such as ``<think>`` are several BPE tokens and a streaming delta may end in the middle of one.
Pure stdlib; importing this module imports no engine.

Hunyuan-A13B output::

    <think>\\n...reasoning...\\n</think>\\n<answer>\\n...answer...\\n</answer>      (slow thinking)
    <answer>\\n...answer...\\n</answer>                                           (fast thinking)
    <think>\\n\\n</think>\\n<answer>\\n...\\n</answer>                                 (/no_think)

Tool calls: ``<tool_calls>[{"name": ..., "arguments": {...} or "<json>"}, ...]</tool_calls>``,
usually inside ``<answer>``; a ``<tool_calls>`` block inside ``<think>`` is reasoning, never a call.

Reasoning split -- the exact rules, shared by :func:`split_reasoning` and
:class:`ReasoningStreamParser` (the streaming parser yields the same text for any split of the
input into deltas):

* ``<think>`` opens the reasoning only at the very start of the output (nothing but whitespace
  before it), and at most once. With ``prompt_in_think=True`` (the prompt itself ended with
  ``<think>``) the output starts inside the reasoning.
* Inside the reasoning only ``</think>`` is a tag; everything else (``<answer>``,
  ``<tool_calls>``, ...) is reasoning text. A missing ``</think>`` (truncated output) makes
  everything after ``<think>`` reasoning.
* Outside the reasoning, ``<answer>`` and ``</answer>`` are removed wherever they occur, except
  inside a ``<tool_calls>`` block (tag text in a JSON string argument is data: the block passes
  verbatim, see the block end rule below); all other text (including a ``<think>`` that is not at
  the start) is content.
* reasoning = the reasoning text, content = the concatenated non-reasoning text; each with leading
  and trailing whitespace (``" \\t\\r\\n"``, see :data:`WHITESPACE`) stripped.

Conventions: the non-streaming results use ``None`` for "nothing" (no think block, an empty think
block, no content); the streaming deltas use ``""``. So ``"".join(deltas) == (result or "")``.
Streaming holds back (a) a trailing partial tag (``"<th"``, ``"</ans"``) until the next delta
decides it and (b) a trailing run of whitespace until non-whitespace follows on the same channel
(trailing whitespace at the end is dropped, as the non-streaming strip does). Tag text is never
emitted. ``finish()`` flushes a held partial tag as plain text.

Tool calls (:func:`parse_tool_calls`, :class:`ToolCallStreamParser`) follow the same pattern:
``<tool_calls>...</tool_calls>`` blocks outside the think block are parsed and removed; the rest
(the think block included, verbatim) is content, whitespace-stripped at both ends, ``None`` when
empty (``""`` in deltas). As for the reasoning split, ``<think>`` opens a think block only at the
very start of the text; a later ``<think>`` is plain text. A block ends at the first
``</tool_calls>`` that is not inside a JSON string literal (``"..."`` with ``\\`` escapes), so an
argument may contain any tag text. A block that is not valid JSON of the right shape stays in the
content verbatim (tags included) and yields no calls. An unterminated block (the reply was cut off,
e.g. by ``max_tokens``) yields no call either: a partial call is never emitted; its raw text is
kept as content (streaming: it is held back while the block is open and released by ``finish()``).
Nothing raises.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "THINK_START", "THINK_END", "ANSWER_START", "ANSWER_END", "TOOL_CALLS_START", "TOOL_CALLS_END",
    "TURN_END", "WHITESPACE",
    "ReasoningResult", "ReasoningDelta", "split_reasoning", "ReasoningStreamParser",
    "ToolCall", "ToolCallResult", "ToolCallDelta", "parse_tool_calls", "ToolCallStreamParser",
    "ParsedResponse", "parse_response", "ResponseDelta", "ResponseStreamParser",
]

THINK_START = "<think>"
THINK_END = "</think>"
ANSWER_START = "<answer>"
ANSWER_END = "</answer>"
TOOL_CALLS_START = "<tool_calls>"
TOOL_CALLS_END = "</tool_calls>"
TURN_END = "<|extra_0|>"  # ends a user/tool turn in the chat template: the assistant's turn starts after it

#: Characters stripped from both ends of reasoning and content.
WHITESPACE = " \t\r\n"

# Reasoning-split states.
_PRE = 0      # nothing but whitespace seen yet; <think> may still open the reasoning
_THINK = 1    # inside <think>...</think>
_POST = 2     # outside the reasoning for good
_BLOCK = 3    # outside the reasoning, inside a <tool_calls> block (passed verbatim)

_PRE_TAGS = (THINK_START, ANSWER_START, ANSWER_END)
_THINK_TAGS = (THINK_END,)
_POST_TAGS = (ANSWER_START, ANSWER_END, TOOL_CALLS_START)
_ANSWER_TAG_RE = re.compile(re.escape(ANSWER_START) + "|" + re.escape(ANSWER_END))
_IN_STRING_RE = re.compile(r'["\\]')
_OUT_OF_STRING_RE = re.compile(r'["<]')


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------

def _strip(parts: list[str]) -> str | None:
    return "".join(parts).strip(WHITESPACE) or None


def _first_non_ws(text: str, pos: int) -> int:
    """Index of the first non-whitespace character at or after ``pos``; -1 if none."""
    n = len(text)
    while pos < n:
        if text[pos] not in WHITESPACE:
            return pos
        pos += 1
    return -1


def _scan(buf: str, tags: tuple[str, ...]) -> tuple[int, str | None]:
    """Find the leftmost tag of ``tags`` in ``buf``.

    Returns ``(i, tag)`` for a complete tag at ``i``; ``(i, None)`` when ``buf[i:]`` is a proper
    prefix of a tag (it may complete with the next delta); ``(len(buf), None)`` when there is
    neither. All tags start with ``"<"`` and contain no other ``"<"``, so two tags can never overlap
    and the leftmost match is unambiguous (the same one ``str.find``/``re`` give on the full text).
    """
    n = len(buf)
    i = buf.find("<")
    while i != -1:
        for tag in tags:
            if buf.startswith(tag, i):
                return i, tag
        rest = n - i
        for tag in tags:
            if rest < len(tag) and tag.startswith(buf[i:]):
                return i, None
        i = buf.find("<", i + 1)
    return n, None


def _block_end(buf: str, pos: int, in_str: bool) -> tuple[int, int, bool]:
    """Find the ``</tool_calls>`` that ends a block body, skipping JSON string literals.

    Scans ``buf`` from ``pos`` (``in_str``: whether ``pos`` is inside a string literal). Returns
    ``(k, resume, in_str)``: ``k`` is the index of the end tag, or -1 when ``buf`` does not hold it
    yet; then the scan resumes at ``resume`` with ``in_str`` once more text has arrived (``resume``
    is at a trailing partial end tag or a trailing backslash, else ``len(buf)``).
    """
    n = len(buf)
    while pos < n:
        if in_str:
            m = _IN_STRING_RE.search(buf, pos)
            if m is None:
                return -1, n, True
            i = m.start()
            if buf[i] == "\\":
                if i + 1 >= n:
                    return -1, i, True  # the escaped character has not arrived yet
                pos = i + 2
                continue
            pos, in_str = i + 1, False
        else:
            m = _OUT_OF_STRING_RE.search(buf, pos)
            if m is None:
                return -1, n, False
            i = m.start()
            if buf[i] == '"':
                pos, in_str = i + 1, True
                continue
            if buf.startswith(TOOL_CALLS_END, i):
                return i, i, False
            if TOOL_CALLS_END.startswith(buf[i:]):
                return -1, i, False  # a partial end tag at the tail
            pos = i + 1
    return -1, n, in_str


class _Channel:
    """Streams text with leading/trailing whitespace stripped, like ``"".join(parts).strip()``.

    Leading whitespace is dropped; a trailing whitespace run is held back until non-whitespace
    follows (and dropped if nothing does).
    """

    __slots__ = ("_started", "_pending")

    def __init__(self) -> None:
        self._started = False
        self._pending = ""

    def push(self, text: str) -> str:
        if not text:
            return ""
        if not self._started:
            text = text.lstrip(WHITESPACE)
            if not text:
                return ""
            self._started = True
        text = self._pending + text
        out = text.rstrip(WHITESPACE)
        self._pending = text[len(out):]
        return out


# --------------------------------------------------------------------------------------------------
# reasoning
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReasoningResult:
    """Result of :func:`split_reasoning`.

    ``reasoning``: the think-block text, whitespace-stripped; ``None`` when there was no think block
    or it was empty. ``content``: everything else with ``<answer>``/``</answer>`` removed,
    whitespace-stripped; ``None`` when empty.
    """

    reasoning: str | None
    content: str | None


@dataclass(frozen=True)
class ReasoningDelta:
    """One streaming step of :class:`ReasoningStreamParser`; either field may be ``""``."""

    reasoning: str = ""
    content: str = ""


def split_reasoning(text: str, *, prompt_in_think: bool = False) -> ReasoningResult:
    """Split a complete Hunyuan response into reasoning and content (rules in the module doc).

    ``prompt_in_think=True`` when the prompt already ended with ``<think>`` (the output then starts
    inside the reasoning). Never raises.
    """
    state = _THINK if prompt_in_think else _PRE
    reasoning: list[str] = []
    content: list[str] = []
    pos, n = 0, len(text)
    while pos < n:
        if state == _PRE:
            j = _first_non_ws(text, pos)
            if j == -1:
                content.append(text[pos:])
                break
            content.append(text[pos:j])
            pos = j
            state = _POST
            for tag in _PRE_TAGS:
                if text.startswith(tag, pos):
                    pos += len(tag)
                    if tag == THINK_START:
                        state = _THINK
                    break
        elif state == _THINK:
            k = text.find(THINK_END, pos)
            if k == -1:
                reasoning.append(text[pos:])
                break
            reasoning.append(text[pos:k])
            pos = k + len(THINK_END)
            state = _POST
        else:
            i = text.find(TOOL_CALLS_START, pos)
            if i == -1:
                content.append(_ANSWER_TAG_RE.sub("", text[pos:]))
                break
            content.append(_ANSWER_TAG_RE.sub("", text[pos:i]))
            body = i + len(TOOL_CALLS_START)
            k, _, _ = _block_end(text, body, False)
            end = n if k == -1 else k + len(TOOL_CALLS_END)
            content.append(text[i:end])  # a tool block passes verbatim
            pos = end
    return ReasoningResult(_strip(reasoning), _strip(content))


class ReasoningStreamParser:
    """Incremental :func:`split_reasoning`: one instance per response (per choice).

    ``feed(delta)`` returns the reasoning/content text that is now certain; ``finish()`` flushes a
    held partial tag (as plain text) at the end of the response. For any split of a text into
    deltas, the joined outputs equal ``split_reasoning(text)`` with ``None`` read as ``""``.
    """

    def __init__(self, *, prompt_in_think: bool = False) -> None:
        self._state = _THINK if prompt_in_think else _PRE
        self._buf = ""
        self._in_str = False  # in a tool block: inside a JSON string literal at the start of _buf
        self._reasoning = _Channel()
        self._content = _Channel()

    @property
    def in_reasoning(self) -> bool:
        """True while inside the think block (so far)."""
        return self._state == _THINK

    @property
    def reasoning_ended(self) -> bool:
        """True once the output is past the reasoning (``</think>`` seen, or content started)."""
        return self._state in (_POST, _BLOCK)

    def feed(self, delta: str) -> ReasoningDelta:
        buf = self._buf + delta
        reasoning: list[str] = []
        content: list[str] = []
        while buf:
            if self._state == _PRE:
                j = _first_non_ws(buf, 0)
                if j == -1:
                    content.append(buf)
                    buf = ""
                    break
                content.append(buf[:j])
                buf = buf[j:]
                i, tag = _scan(buf, _PRE_TAGS)
                if i == 0 and tag is None:
                    break  # buf is a partial tag: wait
                self._state = _POST
                if i == 0:
                    buf = buf[len(tag):]
                    if tag == THINK_START:
                        self._state = _THINK
                continue
            if self._state == _BLOCK:  # verbatim up to and including the block's end tag
                k, resume, self._in_str = _block_end(buf, 0, self._in_str)
                if k == -1:
                    content.append(buf[:resume])
                    buf = buf[resume:]
                    break
                end = k + len(TOOL_CALLS_END)
                content.append(buf[:end])
                buf = buf[end:]
                self._state = _POST
                continue
            tags = _THINK_TAGS if self._state == _THINK else _POST_TAGS
            i, tag = _scan(buf, tags)
            (reasoning if self._state == _THINK else content).append(buf[:i])
            if tag is None:
                buf = buf[i:]  # "" or a partial tag
                break
            buf = buf[i + len(tag):]
            if tag == TOOL_CALLS_START:
                content.append(tag)
                self._state, self._in_str = _BLOCK, False
            else:
                self._state = _POST  # </think> ends the reasoning; answer tags are just dropped
        self._buf = buf
        return ReasoningDelta(self._reasoning.push("".join(reasoning)),
                              self._content.push("".join(content)))

    def finish(self) -> ReasoningDelta:
        """Flush the held-back tail (a partial tag is plain text after all). Call once, at the end."""
        buf, self._buf = self._buf, ""
        if self._state == _THINK:
            return ReasoningDelta(self._reasoning.push(buf), "")
        return ReasoningDelta("", self._content.push(buf))


# --------------------------------------------------------------------------------------------------
# tool calls
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolCall:
    """One parsed call. ``arguments`` is the JSON text of the arguments object (never a bare
    string); ``index`` is its position among all calls of the response (0, 1, ...)."""

    name: str
    arguments: str
    id: str
    index: int = 0


@dataclass(frozen=True)
class ToolCallResult:
    """Result of :func:`parse_tool_calls`: ``content`` is the text with the parsed blocks removed,
    whitespace-stripped, ``None`` when empty."""

    content: str | None
    calls: list[ToolCall]


@dataclass(frozen=True)
class ToolCallDelta:
    """One streaming step of :class:`ToolCallStreamParser`: ``content`` may be ``""``; ``calls``
    holds the complete calls of a block that has just closed (usually empty)."""

    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)


def _new_id(id_prefix: str | None, index: int) -> str:
    if id_prefix is not None:
        return f"{id_prefix}{index}"
    return "call_" + uuid.uuid4().hex[:24]


def _parse_block(body: str) -> list[tuple[str, str]] | None:
    """``[(name, arguments_json), ...]`` for a valid block body, ``None`` otherwise."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return None
    out: list[tuple[str, str]] = []
    for item in data:
        if not isinstance(item, dict):
            return None
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            return None
        args = item.get("arguments")
        if args is None:
            args = {}
        elif isinstance(args, str):
            if not args.strip():
                args = {}
            else:
                try:
                    args = json.loads(args)
                except (ValueError, RecursionError):
                    return None
        if not isinstance(args, dict):
            return None
        out.append((name, json.dumps(args, ensure_ascii=False)))
    return out


def parse_tool_calls(text: str, *, id_prefix: str | None = None) -> ToolCallResult:
    """Extract ``<tool_calls>[...]</tool_calls>`` blocks outside a leading ``<think>...</think>``.

    Each item needs a non-empty string ``name``; ``arguments`` may be an object, a JSON string of an
    object, or absent/null/"" (-> ``"{}"``); a single object instead of a list is accepted. A block
    ends at the first ``</tool_calls>`` outside a JSON string. A block with invalid JSON or any
    invalid item stays in the content verbatim, as does an unterminated block (no partial call).
    Ids are ``"call_" + 24 hex`` (random), or ``f"{id_prefix}{index}"`` when ``id_prefix``
    is given (deterministic). Never raises.
    """
    content: list[str] = []
    calls: list[ToolCall] = []
    pos, n = 0, len(text)
    j = _first_non_ws(text, 0)
    if j != -1 and text.startswith(THINK_START, j):
        # a leading think block passes verbatim, <tool_calls> inside it included
        k = text.find(THINK_END, j + len(THINK_START))
        pos = n if k == -1 else k + len(THINK_END)
        content.append(text[:pos])
    while pos < n:
        i_tc = text.find(TOOL_CALLS_START, pos)
        if i_tc == -1:
            content.append(text[pos:])
            break
        content.append(text[pos:i_tc])
        body_start = i_tc + len(TOOL_CALLS_START)
        k, _, _ = _block_end(text, body_start, False)
        if k == -1:
            content.append(text[i_tc:])
            break
        end = k + len(TOOL_CALLS_END)
        parsed = _parse_block(text[body_start:k])
        if parsed is None:
            content.append(text[i_tc:end])
        else:
            for name, args in parsed:
                calls.append(ToolCall(name, args, _new_id(id_prefix, len(calls)), len(calls)))
        pos = end
    return ToolCallResult(_strip(content), calls)


_TC_TEXT = 0
_TC_THINK = 1
_TC_BLOCK = 2
_TC_PRE = 3  # nothing but whitespace seen yet: a <think> here opens a think block
_TC_TEXT_TAGS = (TOOL_CALLS_START,)
_TC_THINK_TAGS = (THINK_END,)


class ToolCallStreamParser:
    """Incremental :func:`parse_tool_calls`: one instance per response (per choice).

    Content outside tool blocks streams through at once (holding back only a partial
    ``<tool_calls>``/``<think>`` tag and trailing whitespace); a tool block is buffered until
    ``</tool_calls>`` and then returned as one delta with all its calls (indices run across the
    whole response). An unterminated block comes out as content from ``finish()``. For any split of
    a text into deltas, the joined outputs equal ``parse_tool_calls(text, id_prefix=...)``.
    """

    def __init__(self, *, id_prefix: str | None = None) -> None:
        self._id_prefix = id_prefix
        self._state = _TC_PRE
        self._buf = ""
        self._scan_from = 0  # in a block: where to resume looking for </tool_calls> in _buf
        self._in_str = False  # in a block: whether _scan_from is inside a JSON string literal
        self._content = _Channel()
        self._n_calls = 0

    @property
    def in_tool_block(self) -> bool:
        """True while a ``<tool_calls>`` block is open (being buffered)."""
        return self._state == _TC_BLOCK

    def feed(self, delta: str) -> ToolCallDelta:
        buf = self._buf + delta
        out: list[str] = []
        calls: list[ToolCall] = []
        while buf:
            if self._state == _TC_PRE:
                j = _first_non_ws(buf, 0)
                if j == -1:
                    out.append(buf)
                    buf = ""
                    break
                out.append(buf[:j])
                buf = buf[j:]
                if buf.startswith(THINK_START):
                    out.append(THINK_START)
                    buf = buf[len(THINK_START):]
                    self._state = _TC_THINK
                elif len(buf) < len(THINK_START) and THINK_START.startswith(buf):
                    break  # a partial <think>: wait
                else:
                    self._state = _TC_TEXT
                continue
            if self._state == _TC_BLOCK:  # buf starts with <tool_calls>
                k, self._scan_from, self._in_str = _block_end(buf, self._scan_from, self._in_str)
                if k == -1:
                    break
                end = k + len(TOOL_CALLS_END)
                parsed = _parse_block(buf[len(TOOL_CALLS_START):k])
                if parsed is None:
                    out.append(buf[:end])
                else:
                    for name, args in parsed:
                        idx = self._n_calls
                        calls.append(ToolCall(name, args, _new_id(self._id_prefix, idx), idx))
                        self._n_calls += 1
                buf = buf[end:]
                self._state = _TC_TEXT
                continue
            i, tag = _scan(buf, _TC_TEXT_TAGS if self._state == _TC_TEXT else _TC_THINK_TAGS)
            if tag is None:
                out.append(buf[:i])
                buf = buf[i:]  # "" or a partial tag
                break
            if tag == TOOL_CALLS_START:
                out.append(buf[:i])
                buf = buf[i:]
                self._state = _TC_BLOCK
                self._scan_from, self._in_str = len(TOOL_CALLS_START), False
                continue
            end = i + len(tag)  # </think>: passed through verbatim
            out.append(buf[:end])
            buf = buf[end:]
            self._state = _TC_TEXT
        self._buf = buf
        return ToolCallDelta(self._content.push("".join(out)), calls)

    def finish(self) -> ToolCallDelta:
        """Flush held-back text; an unterminated tool block becomes content. Call once, at the end."""
        buf, self._buf = self._buf, ""
        if self._state in (_TC_BLOCK, _TC_PRE):
            self._state = _TC_TEXT
        return ToolCallDelta(self._content.push(buf), [])


# --------------------------------------------------------------------------------------------------
# both
# --------------------------------------------------------------------------------------------------

class ParsedResponse(NamedTuple):
    """``(reasoning, content, calls)``; ``None`` conventions as in :func:`split_reasoning` and
    :func:`parse_tool_calls`."""

    reasoning: str | None
    content: str | None
    calls: list[ToolCall]


def parse_response(text: str, *, prompt_in_think: bool = False,
                   id_prefix: str | None = None) -> ParsedResponse:
    """:func:`split_reasoning`, then :func:`parse_tool_calls` on the content. Never raises."""
    split = split_reasoning(text, prompt_in_think=prompt_in_think)
    tools = parse_tool_calls(split.content or "", id_prefix=id_prefix)
    return ParsedResponse(split.reasoning, tools.content, tools.calls)


@dataclass(frozen=True)
class ResponseDelta:
    """One streaming step of :class:`ResponseStreamParser`."""

    reasoning: str = ""
    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)


class ResponseStreamParser:
    """Incremental :func:`parse_response`: the reasoning stream feeding the tool-call stream.

    ``reasoning=False``: no reasoning split (the tool parser sees the raw text, as with a tool-call
    parser configured alone); ``tools=False``: no tool-call parsing (``<tool_calls>`` blocks stay
    content). For any split of a text into deltas the joined outputs equal the non-streaming
    result of the same configuration. One instance per response (per choice).
    """

    def __init__(self, *, reasoning: bool = True, tools: bool = True, prompt_in_think: bool = False,
                 id_prefix: str | None = None) -> None:
        self._reasoning = ReasoningStreamParser(prompt_in_think=prompt_in_think) if reasoning else None
        self._tools = ToolCallStreamParser(id_prefix=id_prefix) if tools else None
        self._raw = _Channel() if not reasoning and not tools else None

    @property
    def in_tool_block(self) -> bool:
        """True while a ``<tool_calls>`` block (outside the reasoning) is open."""
        return self._tools is not None and self._tools.in_tool_block

    def _tool_step(self, reasoning: str, content: str, final: bool) -> ResponseDelta:
        if self._tools is None:
            return ResponseDelta(reasoning, content if self._raw is None else self._raw.push(content))
        t = self._tools.feed(content)
        if not final:
            return ResponseDelta(reasoning, t.content, t.calls)
        end = self._tools.finish()
        return ResponseDelta(reasoning, t.content + end.content, t.calls + end.calls)

    def feed(self, delta: str) -> ResponseDelta:
        if self._reasoning is None:
            return self._tool_step("", delta, False)
        r = self._reasoning.feed(delta)
        return self._tool_step(r.reasoning, r.content, False)

    def finish(self) -> ResponseDelta:
        """Flush everything held back (an unterminated tool block comes out as content). Call once."""
        if self._reasoning is None:
            return self._tool_step("", "", True)
        r = self._reasoning.finish()
        return self._tool_step(r.reasoning, r.content, True)
