"""Anthropic Messages, streamed: the wire decoder and the HTTP provider.

The wire format followed is Anthropic's API reference, "Messages -> Streaming Messages"
(``POST /v1/messages`` with ``"stream": true``): SSE events ``message_start``, then per content
block ``content_block_start`` / ``content_block_delta``* / ``content_block_stop``, then
``message_delta`` (``stop_reason``, cumulative ``usage``) and ``message_stop``; ``ping`` at any
time; ``error`` (``{"type": "error", "error": {"type", "message"}}``) instead of the rest when
the server fails midway.

Decisions where the format leaves room (each found in recorded streams):

- Events are dispatched on the payload's ``type``, not the SSE ``event:`` name (recordings without
  ``event:`` lines decode the same). Trailing spaces inside ``data:`` lines (the API pads some
  events) are JSON whitespace and change nothing.
- ``text_delta`` becomes :class:`TextDelta`, ``thinking_delta`` :class:`ReasoningDelta`;
  ``signature_delta``, ``citations_delta``, ``compaction_delta``, ``redacted_thinking`` blocks and
  unknown block or delta types are ignored.
- Only ``tool_use`` blocks are tool calls for the caller to run (``id``, ``name``, arguments
  from ``input_json_delta.partial_json``, or the block's ``input`` when no delta came). Server
  tools (``server_tool_use``, ``mcp_tool_use``, ``*_tool_result``) run at Anthropic and are ignored.
  Tool calls are numbered 0, 1, ... in order; each ends at its ``content_block_stop``.
  A ``content_block_start`` over 1 KB whose block type is one raygent ignores (a web search or
  code execution result is often 10-100 KB) is recognised from its first bytes, in the key
  order the API writes, and not parsed: on a web-search stream that is most of the bytes. A
  payload in any other shape is parsed as usual.
- ``Usage.input_tokens`` is ``input_tokens + cache_creation_input_tokens +
  cache_read_input_tokens`` (every prompt token, cached or not), ``output_tokens`` as given; the
  last value of each field wins (``message_delta`` repeats them cumulatively).
- :class:`Done` carries ``stop_reason`` as given (``end_turn``, ``tool_use``, ``max_tokens``,
  ``stop_sequence``, ``pause_turn``, ``refusal``), ``end_turn`` if none came.
- A repeated ``message_start`` with the same message id is ignored; one with another id before
  ``message_stop`` (a spliced stream) raises :class:`StreamBroken`. Events after
  ``message_stop`` are ignored. A body that ends before ``message_stop`` raises
  :class:`StreamBroken`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import httpx
import orjson

from raygent.errors import ProviderError
from raygent.messages import (
    AssistantMessage,
    Chunk,
    Done,
    Message,
    ReasoningDelta,
    TextDelta,
    ToolMessage,
    Usage,
    UserMessage,
)
from raygent.providers._convert import alternating_turns, parameters_of
from raygent.providers._http import HTTPStreamProvider
from raygent.providers._sse import SSEEvent
from raygent.providers._wire import (
    PAYLOAD_PREVIEW_CHARS,
    SSEJsonDecoder,
    ToolCallState,
    load_response,
    response_error,
    stream_error,
)

__all__ = [
    "AnthropicDecoder",
    "AnthropicProvider",
    "to_anthropic_request",
    "decode_anthropic",
    "decode_anthropic_response",
]

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"

# The start of a content_block_start payload as the API writes it, up to the block's type.
_BLOCK_START = re.compile(
    rb'\{\s*"type"\s*:\s*"content_block_start"\s*,\s*"index"\s*:\s*(\d+)\s*,'
    rb'\s*"content_block"\s*:\s*\{\s*"type"\s*:\s*"([A-Za-z_]+)"'
)
_DECODED_BLOCKS = frozenset({b"text", b"thinking", b"tool_use"})
_SKIM_MIN_CHARS = 1024
_USAGE_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")


class AnthropicDecoder(SSEJsonDecoder):
    """Decode a streamed Anthropic Messages response body into raygent chunks.

    A pure, synchronous state machine: bytes in (cut anywhere), chunks out; the same bytes give
    the same chunks for every chunking. See the module docstring for the decisions taken.

    Attributes
    ----------
    received : list of Chunk
        Every chunk decoded so far, in order.

    Examples
    --------
    >>> d = AnthropicDecoder()
    >>> d.feed(b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\\n\\n'
    ...        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\\n\\n')
    [TextDelta(text='Hi')]
    >>> d.feed(b'data: {"type":"message_stop"}\\n\\n')
    [Done(finish_reason='end_turn')]
    """

    __slots__ = ("_message_id", "_blocks", "_calls", "_stop_reason", "_usage")

    def __init__(self) -> None:
        super().__init__()
        self._message_id: str | None = None
        self._blocks: dict[int, Any] = {}  # block index -> "text" | "thinking" | ToolCallState | None
        self._calls: list[ToolCallState] = []
        self._stop_reason: str | None = None
        self._usage: dict[str, int] = {}

    def _event(self, event: SSEEvent, out: list[Chunk]) -> None:
        raw = event.raw
        if len(raw) >= _SKIM_MIN_CHARS:
            start = _BLOCK_START.match(raw)
            if start is not None and start[2] not in _DECODED_BLOCKS:
                self._saw_payload = True
                self._blocks[int(start[1])] = None
                return
        super()._event(event, out)

    def _payload(self, payload: dict[str, Any], event: str, out: list[Chunk]) -> None:
        kind = payload.get("type")
        if kind == "content_block_delta":
            self._delta(payload, out)
        elif kind == "content_block_start":
            self._block_start(payload, out)
        elif kind == "content_block_stop":
            block = self._blocks.pop(_int(payload.get("index")), None)
            if isinstance(block, ToolCallState):
                block.end(out)
        elif kind == "message_start":
            message = payload.get("message") or {}
            message_id = str(message.get("id") or "")
            if self._message_id is None:
                self._message_id = message_id
            elif message_id != self._message_id:
                raise self._broken(f"a new message ({message_id}) started before message_stop of "
                                   f"{self._message_id}", out)
            self._take_usage(message.get("usage"))
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop_reason = str(delta["stop_reason"])
            self._take_usage(payload.get("usage"))
        elif kind == "message_stop":
            self._close(out)
        elif kind == "error" or event == "error":
            raise stream_error(payload.get("error") or payload, self.received + out)
        # "ping" and event types added later are ignored.

    def _block_start(self, payload: dict[str, Any], out: list[Chunk]) -> None:
        index = _int(payload.get("index"))
        block = payload.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            call = ToolCallState(len(self._calls), id=str(block.get("id") or ""), name=str(block.get("name") or ""))
            if not call.name:
                raise ProviderError(f"tool_use block {index} without a name")
            self._calls.append(call)
            self._blocks[index] = call
            call.start(out)
            initial = block.get("input")
            # The API sends "input": {} and streams the arguments; a non-empty input is whole.
            if isinstance(initial, dict) and initial:
                call.add(orjson.dumps(initial).decode(), out)
        elif kind == "text":
            self._blocks[index] = "text"
            if block.get("text"):
                out.append(TextDelta(str(block["text"])))
        elif kind == "thinking":
            self._blocks[index] = "thinking"
            if block.get("thinking"):
                out.append(ReasoningDelta(str(block["thinking"])))
        else:
            self._blocks[index] = None

    def _delta(self, payload: dict[str, Any], out: list[Chunk]) -> None:
        block = self._blocks.get(_int(payload.get("index")))
        delta = payload.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and block == "text":
            if delta.get("text"):
                out.append(TextDelta(str(delta["text"])))
        elif kind == "thinking_delta" and block == "thinking":
            if delta.get("thinking"):
                out.append(ReasoningDelta(str(delta["thinking"])))
        elif kind == "input_json_delta" and isinstance(block, ToolCallState):
            partial = delta.get("partial_json")
            if isinstance(partial, str):
                block.add(partial, out)

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for name in _USAGE_FIELDS:
                value = usage.get(name)
                if isinstance(value, int):
                    self._usage[name] = value

    def _close(self, out: list[Chunk]) -> None:
        for call in self._calls:
            call.end(out)
        if self._usage:
            u = self._usage
            out.append(Usage(
                input_tokens=u.get("input_tokens", 0) + u.get("cache_creation_input_tokens", 0)
                + u.get("cache_read_input_tokens", 0),
                output_tokens=u.get("output_tokens", 0),
            ))
        out.append(Done(finish_reason=self._stop_reason or "end_turn"))
        self._closed = True

    def _end_of_body(self, out: list[Chunk]) -> None:
        raise self._broken("stream ended before message_stop", out)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else -1


def decode_anthropic(chunks: Iterable[bytes]) -> list[Chunk]:
    """Decode a whole Anthropic Messages stream given as byte pieces (see ``decode_stream``)."""
    return AnthropicDecoder.decode_all(chunks)


def decode_anthropic_response(body: bytes) -> list[Chunk]:
    """Decode a whole Anthropic Messages response (``stream: false``) into raygent chunks.

    The Message object of the API reference (``content`` blocks, ``stop_reason``, ``usage``):
    each block is read as the ``content_block_start`` / ``content_block_stop`` pair a stream
    would carry, so every decision of :class:`AnthropicDecoder` holds (only ``tool_use`` blocks
    are tool calls, usage sums the cached prompt tokens, ``stop_reason`` as given).

    Parameters
    ----------
    body : bytes
        The response body.

    Returns
    -------
    list of Chunk
        :class:`~raygent.messages.Done` last.

    Raises
    ------
    ProviderError
        The body is not a JSON object, has no ``content`` list, or is an ``error``.
    ToolCallArgumentsError
        A ``tool_use`` block whose ``input`` is not an object.
    """
    payload = load_response(body)
    if payload.get("type") == "error" or payload.get("error"):
        raise response_error(payload.get("error") or payload)
    content = payload.get("content")
    if not isinstance(content, list):
        raise ProviderError(f"Anthropic message without content: {body[:PAYLOAD_PREVIEW_CHARS]!r}")
    decoder = AnthropicDecoder()
    out: list[Chunk] = []
    decoder._take_usage(payload.get("usage"))
    for index, block in enumerate(content):
        if isinstance(block, dict):
            decoder._payload({"type": "content_block_start", "index": index, "content_block": block}, "", out)
            decoder._payload({"type": "content_block_stop", "index": index}, "", out)
    if payload.get("stop_reason"):
        decoder._stop_reason = str(payload["stop_reason"])
    decoder._close(out)
    return out


# --- request --------------------------------------------------------------------------------


def to_anthropic_request(messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Convert raygent messages and tool schemas to the Messages API's ``system``, ``messages``, ``tools``.

    Parameters
    ----------
    messages : sequence of Message
        ``SystemMessage`` texts are joined (blank line between) into ``system``;
        ``UserMessage`` becomes a ``user`` text block; ``AssistantMessage`` an ``assistant``
        message with a ``text`` block and one ``tool_use`` block per call; ``ToolMessage`` a
        ``tool_result`` block (``is_error`` kept) in a ``user`` message. Consecutive messages of
        one role are merged, as the API requires alternating roles.
    tools : sequence of dict
        ``{"name", "description", "parameters"}`` schemas, sent as ``input_schema``.

    Returns
    -------
    dict
        ``{"messages": [...]}`` plus ``system`` and ``tools`` when there are any.

    Raises
    ------
    TypeError
        For an object that is not a raygent message.
    """
    system, turns = alternating_turns(messages, _blocks_of, parts_key="content")
    body: dict[str, Any] = {"messages": turns}
    if system:
        body["system"] = system
    if tools:
        body["tools"] = [{"name": t["name"], "description": t.get("description", ""), "input_schema": parameters_of(t)}
                         for t in tools]
    return body


def _blocks_of(message: UserMessage | AssistantMessage | ToolMessage) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(message, UserMessage):
        return "user", [{"type": "text", "text": message.content}]
    if isinstance(message, AssistantMessage):
        text = [{"type": "text", "text": message.content}] if message.content else []
        return "assistant", text + [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                                    for c in message.tool_calls]
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.call_id, "content": message.content}
    if message.is_error:
        result["is_error"] = True
    return "user", [result]


class AnthropicProvider(HTTPStreamProvider):
    """A Claude model behind the Anthropic Messages API, streamed over SSE, without the SDK.

    Posts to ``{base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version`` headers.

    Parameters
    ----------
    model : str
        The model id, e.g. ``"claude-sonnet-4-5"``.
    base_url : str, optional
        API root without ``/v1`` (the SDK's convention). Default: ``$ANTHROPIC_BASE_URL`` or
        ``https://api.anthropic.com``.
    api_key : str, optional
        Sent as ``x-api-key``. Default: ``$ANTHROPIC_API_KEY``; empty sends no key (proxies
        that add their own).
    headers : dict, optional
        Extra request headers (added after the defaults, so they can override them, e.g.
        ``anthropic-beta``).
    max_tokens : int, default 8192
        The response's token limit (the API requires one).
    temperature : float, optional
        Sampling temperature; omitted when None.
    anthropic_version : str, default "2023-06-01"
        The ``anthropic-version`` header.
    timeout_s : float, default 600
        Seconds allowed for the request and for each read of the stream (connect: 30 s at most).
    max_retries : int, default 2
        Retries for HTTP 429, 5xx (529 "overloaded" included) and connection failures, waiting
        ``Retry-After`` / ``retry-after-ms`` or an exponential backoff with jitter, each wait at
        most 60 s; only before any chunk was decoded.
    transport : httpx.AsyncBaseTransport, optional
        Custom transport (proxies, tests).

    Attributes
    ----------
    name : str
        ``"anthropic:<model>"``.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        max_tokens: int = 8192,
        temperature: float | None = None,
        anthropic_version: str = DEFAULT_VERSION,
        timeout_s: float = 600,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY", "")
        all_headers = {"Accept": "text/event-stream", "Content-Type": "application/json",
                       "anthropic-version": anthropic_version}
        if key:
            all_headers["x-api-key"] = key
        all_headers.update(headers or {})
        super().__init__(
            model, name=f"anthropic:{model}",
            base_url=base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL,
            headers=all_headers, timeout_s=timeout_s, max_retries=max_retries, transport=transport,
        )
        self.max_tokens = int(max_tokens)
        self.temperature = temperature

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], *, stream: bool = True
    ) -> dict[str, Any]:
        """The JSON body :meth:`stream` (``stream=True``) or :meth:`complete` posts: ``model``,
        ``max_tokens``, ``stream``, ``messages`` and, when given, ``system``, ``tools``,
        ``temperature``."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "stream": stream}
        body.update(to_anthropic_request(messages, tools))
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    decoder = AnthropicDecoder

    def decode_response(self, body: bytes) -> list[Chunk]:
        return decode_anthropic_response(body)

    def stream_url(self) -> str:
        return f"{self.base_url}/v1/messages"

