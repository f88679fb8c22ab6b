"""OpenAI Responses API, streamed: the wire decoder and the HTTP provider.

The wire format followed is the OpenAI API reference, "Responses -> Streaming events"
(``POST /v1/responses`` with ``"stream": true``): every SSE event is a JSON object whose
``type`` names it (``response.created``, ``response.output_item.added``,
``response.output_text.delta``, ``response.function_call_arguments.delta`` / ``.done``,
``response.output_item.done``, ``response.completed`` ...), as also served by Azure OpenAI,
xAI, OpenRouter, DeepSeek, LM Studio and other "open responses" servers.

Decisions where the format leaves room (each found in recorded streams):

- Events are dispatched on the payload's ``type``, not the SSE ``event:`` name.
- ``response.output_text.delta`` and ``response.refusal.delta`` become :class:`TextDelta` (a
  refusal is the answer the user gets, as in Chat Completions);
  ``response.reasoning_summary_text.delta`` and ``response.reasoning_text.delta`` (raw reasoning
  of open-weight models) become :class:`ReasoningDelta`.
- Only ``function_call`` items are tool calls for the caller to run: ``id`` is the item's
  ``call_id`` (what ``function_call_output`` answers), numbered 0, 1, ... in order of
  ``response.output_item.added``; arguments from ``response.function_call_arguments.delta``
  (matched by ``item_id``, else ``output_index``), or from ``.done`` / the finished item when no
  delta came (LM Studio streams none). A call ends at ``function_call_arguments.done`` or
  ``output_item.done``, whichever comes first.
- ``custom_tool_call`` items (free-form input) are ignored: raygent declares only function
  tools, so such a call is never one of ours -- xAI, for one, reports its server-side search
  tools this way. Other server-side items (web search, file search, code interpreter, MCP,
  image generation, shell, apply_patch) are ignored too.
- ``response.completed`` / ``response.incomplete`` end the response: open calls end, then
  :class:`Usage` (``input_tokens``, ``output_tokens`` as given) and :class:`Done`, whose
  ``finish_reason`` is ``"tool_calls"`` if the response made function calls, else ``"stop"``;
  for an incomplete response ``incomplete_details.reason`` (e.g. ``max_output_tokens``).
  Later events (recordings that chain several responses) are ignored.
- ``error`` and ``response.failed`` raise :class:`StreamBroken` with the chunks received; a
  body that ends before ``response.completed`` raises :class:`StreamBroken`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

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
from raygent.providers._convert import arguments_json, inline_items
from raygent.providers._http import HTTPStreamProvider
from raygent.providers._openai import openai_headers
from raygent.providers._wire import (
    PAYLOAD_PREVIEW_CHARS,
    SSEJsonDecoder,
    ToolCallState,
    load_response,
    response_error,
    stream_error,
)

__all__ = [
    "OpenAIResponsesDecoder",
    "OpenAIResponsesProvider",
    "to_responses_input",
    "decode_openai_responses",
    "decode_openai_responses_response",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

_TEXT_EVENTS = frozenset({"response.output_text.delta", "response.refusal.delta"})
_REASONING_EVENTS = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})


class OpenAIResponsesDecoder(SSEJsonDecoder):
    """Decode a streamed OpenAI Responses body into raygent chunks.

    A pure, synchronous state machine: bytes in (cut anywhere), chunks out; the same bytes give
    the same chunks for every chunking. See the module docstring for the decisions taken.

    Attributes
    ----------
    received : list of Chunk
        Every chunk decoded so far, in order.

    Examples
    --------
    >>> d = OpenAIResponsesDecoder()
    >>> d.feed(b'data: {"type":"response.output_text.delta","item_id":"m","output_index":0,'
    ...        b'"content_index":0,"delta":"Hi"}\\n\\n')
    [TextDelta(text='Hi')]
    >>> d.feed(b'data: {"type":"response.completed","response":{"status":"completed",'
    ...        b'"usage":{"input_tokens":5,"output_tokens":1}}}\\n\\n')
    [Usage(input_tokens=5, output_tokens=1), Done(finish_reason='stop')]
    """

    __slots__ = ("_calls", "_by_item", "_by_output")

    def __init__(self) -> None:
        super().__init__()
        self._calls: list[ToolCallState] = []
        self._by_item: dict[str, ToolCallState] = {}
        self._by_output: dict[int, ToolCallState] = {}

    def _find(self, payload: dict[str, Any]) -> ToolCallState | None:
        item_id = payload.get("item_id")
        if isinstance(item_id, str) and item_id in self._by_item:
            return self._by_item[item_id]
        output_index = payload.get("output_index")
        return self._by_output.get(output_index) if isinstance(output_index, int) else None

    def _payload(self, payload: dict[str, Any], event: str, out: list[Chunk]) -> None:
        kind = payload.get("type")
        if kind in _TEXT_EVENTS:
            delta = payload.get("delta")
            if isinstance(delta, str) and delta:
                out.append(TextDelta(delta))
        elif kind == "response.function_call_arguments.delta":
            call = self._find(payload)
            delta = payload.get("delta")
            if call is not None and not call.ended and isinstance(delta, str):
                call.add(delta, out)
        elif kind in _REASONING_EVENTS:
            delta = payload.get("delta")
            if isinstance(delta, str) and delta:
                out.append(ReasoningDelta(delta))
        elif kind == "response.output_item.added":
            item = payload.get("item") or {}
            if item.get("type") == "function_call":
                self._new_call(item, payload.get("output_index"), out)
        elif kind == "response.function_call_arguments.done":
            call = self._find(payload)
            if call is not None:
                self._end_call(call, payload.get("arguments"), out)
        elif kind == "response.output_item.done":
            item = payload.get("item") or {}
            if item.get("type") == "function_call":
                call = self._by_item.get(str(item.get("id")))
                if call is None and isinstance(payload.get("output_index"), int):
                    call = self._by_output.get(payload["output_index"])
                if call is None:  # a finished call that was never announced
                    call = self._new_call(item, payload.get("output_index"), out)
                self._end_call(call, item.get("arguments"), out)
        elif kind in ("response.completed", "response.incomplete"):
            self._complete(payload.get("response") or {}, out)
        elif kind == "response.failed":
            response = payload.get("response") or {}
            raise stream_error(response.get("error") or {"message": "response failed"}, self.received + out)
        elif kind == "error" or event == "error":
            error = payload.get("error")
            raise stream_error(error if isinstance(error, dict) else payload, self.received + out)

    def _new_call(self, item: dict[str, Any], output_index: Any, out: list[Chunk]) -> ToolCallState:
        call = ToolCallState(len(self._calls), id=str(item.get("call_id") or item.get("id") or ""),
                             name=str(item.get("name") or ""))
        if not call.name:
            raise ProviderError(f"function_call item {item.get('id')!r} without a name")
        if not call.id:
            call.id = f"call_{len(self._calls)}"
        self._calls.append(call)
        if item.get("id"):
            self._by_item[str(item["id"])] = call
        if isinstance(output_index, int):
            self._by_output[output_index] = call
        call.start(out)
        arguments = item.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.add(arguments, out)
        return call

    @staticmethod
    def _end_call(call: ToolCallState, final: Any, out: list[Chunk]) -> None:
        if call.ended:
            return
        if not call.parts and isinstance(final, str) and final:
            call.add(final, out)  # no deltas were streamed: the final text is the arguments
        call.end(out)

    def _complete(self, response: dict[str, Any], out: list[Chunk]) -> None:
        for call in self._calls:
            call.end(out)
        usage = response.get("usage")
        if isinstance(usage, dict) and usage:
            out.append(Usage(input_tokens=int(usage.get("input_tokens") or 0),
                             output_tokens=int(usage.get("output_tokens") or 0)))
        if response.get("status") == "incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason") or "incomplete"
        else:
            reason = "tool_calls" if self._calls else "stop"
        out.append(Done(finish_reason=str(reason)))
        self._closed = True

    def _end_of_body(self, out: list[Chunk]) -> None:
        raise self._broken("stream ended before response.completed", out)


def decode_openai_responses(chunks: Iterable[bytes]) -> list[Chunk]:
    """Decode a whole Responses stream given as byte pieces (see ``decode_stream``)."""
    return OpenAIResponsesDecoder.decode_all(chunks)


def decode_openai_responses_response(body: bytes) -> list[Chunk]:
    """Decode a whole Responses API response (``stream: false``) into raygent chunks.

    The Response object of the API reference, ``output`` items in order: ``message`` items give
    a :class:`TextDelta` per ``output_text`` or ``refusal`` part; ``reasoning`` items a
    :class:`ReasoningDelta` per ``summary_text`` and ``reasoning_text`` part; ``function_call``
    items a tool call (``ToolCallStart``, one ``ToolCallDelta``, ``ToolCallEnd``) as
    :class:`OpenAIResponsesDecoder` makes them; other items are ignored. Then ``Usage`` and
    ``Done`` as at ``response.completed`` (``incomplete_details.reason`` for an incomplete
    response).

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
        The body is not a JSON object, has no ``output`` list, carries an ``error`` object, or
        its ``status`` is ``failed``.
    ToolCallArgumentsError
        Function-call arguments that are not a JSON object.
    """
    payload = load_response(body)
    if payload.get("error") or payload.get("status") == "failed":
        raise response_error(payload.get("error") or {"message": "response failed"})
    output = payload.get("output")
    if not isinstance(output, list):
        raise ProviderError(f"Responses object without output: {body[:PAYLOAD_PREVIEW_CHARS]!r}")
    decoder = OpenAIResponsesDecoder()
    out: list[Chunk] = []
    for output_index, item in enumerate(output):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict):
                    text = part.get("text") if part.get("type") == "output_text" else part.get("refusal")
                    if isinstance(text, str) and text:
                        out.append(TextDelta(text))
        elif kind == "reasoning":
            for part in [*(item.get("summary") or ()), *(item.get("content") or ())]:
                if isinstance(part, dict) and part.get("type") in ("summary_text", "reasoning_text"):
                    text = part.get("text")
                    if isinstance(text, str) and text:
                        out.append(ReasoningDelta(text))
        elif kind == "function_call":
            call = decoder._new_call(item, output_index, out)
            decoder._end_call(call, item.get("arguments"), out)
    decoder._complete(payload, out)
    return out


# --- request --------------------------------------------------------------------------------


def to_responses_input(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Convert raygent messages to Responses ``input`` items.

    Parameters
    ----------
    messages : sequence of Message
        ``SystemMessage`` / ``UserMessage`` become ``{"role": "system" | "user", "content"}``;
        ``AssistantMessage`` an assistant message (if it has text) and one ``function_call``
        item per call (arguments as a JSON string); ``ToolMessage`` a ``function_call_output``.

    Returns
    -------
    list of dict
        JSON-ready input items.

    Raises
    ------
    TypeError
        For an object that is not a raygent message.
    """
    return inline_items(messages, _assistant_items, _tool_item)


def _assistant_items(message: AssistantMessage) -> list[dict[str, Any]]:
    text = [{"role": "assistant", "content": message.content}] if message.content else []
    return text + [{"type": "function_call", "call_id": c.id, "name": c.name, "arguments": arguments_json(c.arguments)}
                   for c in message.tool_calls]


def _tool_item(message: ToolMessage) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": message.call_id, "output": message.content}


class OpenAIResponsesProvider(HTTPStreamProvider):
    """A model behind the OpenAI Responses API (``POST {base_url}/responses``), streamed over SSE.

    Parameters
    ----------
    model : str
        The model id sent as ``model``.
    base_url : str, optional
        API root. Default: ``$OPENAI_BASE_URL`` or ``https://api.openai.com/v1``.
    api_key : str, optional
        Bearer token. Default: ``$OPENAI_API_KEY``; empty sends no ``Authorization`` header.
    headers : dict, optional
        Extra request headers (added after the defaults, so they can override them).
    temperature : float, optional
        Sampling temperature; omitted when None.
    timeout_s : float, default 600
        Seconds allowed for the request and for each read of the stream (connect: 30 s at most).
    max_retries : int, default 2
        Retries for HTTP 429, 5xx and connection failures, waiting ``Retry-After`` or an
        exponential backoff with jitter, each wait at most 60 s; only before any chunk.
    transport : httpx.AsyncBaseTransport, optional
        Custom transport (proxies, tests).

    Attributes
    ----------
    name : str
        ``"openai-responses:<model>"``.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        temperature: float | None = None,
        timeout_s: float = 600,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        all_headers = openai_headers(api_key, headers)
        super().__init__(
            model, name=f"openai-responses:{model}",
            base_url=base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
            headers=all_headers, timeout_s=timeout_s, max_retries=max_retries, transport=transport,
        )
        self.temperature = temperature

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], *, stream: bool = True
    ) -> dict[str, Any]:
        """The JSON body :meth:`stream` (``stream=True``) or :meth:`complete` posts: ``model``,
        ``input``, ``stream`` and, when given, ``tools`` (``{"type": "function", "name",
        "description", "parameters"}``) and ``temperature``."""
        body: dict[str, Any] = {"model": self.model, "input": to_responses_input(messages), "stream": stream}
        if tools:
            body["tools"] = [{"type": "function", **dict(t)} for t in tools]
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    decoder = OpenAIResponsesDecoder

    def decode_response(self, body: bytes) -> list[Chunk]:
        return decode_openai_responses_response(body)

    def stream_url(self) -> str:
        return f"{self.base_url}/responses"

