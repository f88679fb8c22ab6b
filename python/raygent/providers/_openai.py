"""OpenAI Chat Completions, streamed: the wire decoder and the HTTP provider.

The decoder (:class:`OpenAIChatDecoder`) is a pure state machine from response bytes to
:mod:`raygent.messages` chunks; the provider (:class:`OpenAIChatProvider`) only adds HTTP,
retries and message conversion around it. The wire format followed is the OpenAI API reference,
"Chat Completions -> The chat completion chunk object" and "Streaming" (``stream: true``,
``stream_options.include_usage``), as also served by vLLM, Ollama, llama.cpp server, LM Studio,
Groq, Mistral, DeepSeek, OpenRouter and other OpenAI-compatible endpoints.

Decisions where the format leaves room (each found in recorded streams):

- Only choice ``index`` 0 is decoded; other choices of an ``n > 1`` request are ignored.
- ``delta.refusal`` text is emitted as :class:`TextDelta`: a refusal is the model's answer to
  the user, and dropping it would leave an empty reply. Logprobs are ignored.
- ``delta.reasoning_content`` (DeepSeek, vLLM, Qwen) or, if absent, ``delta.reasoning``
  (OpenRouter, Groq, Ollama) becomes :class:`ReasoningDelta`.
- ``delta.content`` given as a list of typed parts (Mistral's reasoning models): ``text``
  parts become :class:`TextDelta`, ``thinking`` parts :class:`ReasoningDelta`.
- A tool-call fragment without ``index`` (Mistral sends whole calls so) is matched by ``id``,
  or else takes the next free index. A call without ``id`` gets one made by raygent:
  ``call_<response id>_<index>`` (the same bytes give the same id), random without a response id.
- ``arguments`` sent as a JSON object instead of a string (some local servers) is serialized.
- A tool call ends as soon as its arguments form a complete JSON value (so a runtime can start
  the tool while the model is still talking), in index order, and at the latest at
  ``finish_reason`` / ``[DONE]`` / the end of the body. Empty arguments mean ``{}``.
- ``usage`` (in the final chunk with empty ``choices``, or ``x_groq.usage``) is reported once,
  the last one seen, just before :class:`Done`.
- No ``finish_reason`` but a clean end: ``Done("stop")``. No ``finish_reason``, no ``[DONE]``
  and a tool call whose arguments are not complete: :class:`StreamBroken`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import httpx
import orjson

from raygent._native import JsonStreamError
from raygent.errors import ProviderError, StreamBroken
from raygent.messages import (
    AssistantMessage,
    Chunk,
    Done,
    Message,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    ToolMessage,
    Usage,
    UserMessage,
)
from raygent.providers._convert import arguments_json, inline_items
from raygent.providers._http import HTTPStreamProvider
from raygent.providers._sse import SSEEvent
from raygent.providers._wire import ToolCallState as _Call
from raygent.providers._wire import (
    _DONE_MAX_CHARS,
    PAYLOAD_PREVIEW_CHARS,
    SSEJsonDecoder,
    load_response,
    response_error,
    stream_error,
)

__all__ = [
    "OpenAIChatDecoder",
    "OpenAIChatProvider",
    "to_openai_messages",
    "to_openai_tools",
    "decode_openai_chat",
    "decode_openai_chat_response",
]

_DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIChatDecoder(SSEJsonDecoder):
    """Decode a streamed Chat Completions response body into raygent chunks.

    A pure, synchronous state machine: bytes in (cut anywhere), chunks out. The same bytes give
    the same chunks for every chunking, except that ``partial_arguments`` snapshots follow the
    argument fragments the server sent (which do not depend on the chunking either).

    Attributes
    ----------
    received : list of Chunk
        Every chunk decoded so far, in order (what :class:`StreamBroken` carries).

    Examples
    --------
    >>> d = OpenAIChatDecoder()
    >>> d.feed(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\\n\\n')
    [TextDelta(text='Hi')]
    >>> d.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\\n\\n')
    []
    >>> d.feed(b"data: [DONE]\\n\\n")
    [Done(finish_reason='stop')]
    """

    __slots__ = ("_calls", "_finish_reason", "_usage", "_response_id")

    def __init__(self) -> None:
        super().__init__()
        self._response_id = ""
        self._calls: dict[int, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: Usage | None = None

    # feed() and finish() are SSEJsonDecoder's; Chat Completions differs in three places:
    # [DONE] ends the stream properly, named events are some proxy's extras, and a body that
    # ends without finish_reason is still complete unless a tool call was left open.

    def _event(self, event: SSEEvent, out: list[Chunk]) -> None:
        if self._closed or event.event not in ("message", "error"):
            return
        if len(event.raw) <= _DONE_MAX_CHARS and event.raw.strip() == b"[DONE]":
            self._close(out, terminated=True)
            return
        super()._event(event, out)

    def _end_of_body(self, out: list[Chunk]) -> None:
        self._close(out, terminated=False)

    def _payload(self, payload: dict[str, Any], event: str, out: list[Chunk]) -> None:
        if payload.get("error") or event == "error":
            raise stream_error(payload.get("error") or payload, self.received + out)
        if not self._response_id and isinstance(payload.get("id"), str):
            self._response_id = payload["id"]
        usage = payload.get("usage")
        if not (isinstance(usage, dict) and usage):
            x_groq = payload.get("x_groq")
            usage = x_groq.get("usage") if isinstance(x_groq, dict) else None
        if isinstance(usage, dict) and usage:
            self._usage = Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            )
        for choice in payload.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
            finish_reason = choice.get("finish_reason")
            if finish_reason:
                self._finish_reason = str(finish_reason)
                self._end_calls(out, force=True)

    def _delta(self, delta: dict[str, Any], out: list[Chunk]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if isinstance(content, str):
            if content:
                out.append(TextDelta(content))
        elif isinstance(content, list):
            _content_parts(content, out)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            out.append(TextDelta(refusal))
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for fragment in tool_calls:
                if isinstance(fragment, dict):
                    self._tool_fragment(fragment, out)

    def _tool_fragment(self, fragment: dict[str, Any], out: list[Chunk]) -> None:
        call_id = fragment.get("id") or ""
        function = fragment.get("function") or {}
        name = function.get("name") or ""
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):
            arguments = orjson.dumps(arguments).decode()
        elif not isinstance(arguments, str):
            arguments = ""

        index = fragment.get("index")
        if not isinstance(index, int):
            index = self._index_without_position(call_id)
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call(index)

        if call.ended:
            # Servers may repeat id/name; only non-blank arguments after the end are an error.
            if arguments and not arguments.isspace():
                call.parts.append(arguments)
                raise call.error("arguments continue after a complete JSON value")
            return
        if call_id and not call.id:
            call.id = call_id
        if name and not call.name:
            call.name = name
        if arguments:
            call.parts.append(arguments)
            try:
                call.json.feed(arguments)
            except JsonStreamError as exc:
                raise call.error("arguments are not valid JSON", exc) from None
        if not call.started:
            if not call.name:
                # Arguments before the name: keep them; they go out with the first delta.
                return
            call.id = call.id or (f"call_{self._response_id}_{index}" if self._response_id
                                  else f"call_{uuid.uuid4().hex[:24]}")
            call.started = True
            out.append(ToolCallStart(index=index, id=call.id, name=call.name))
            arguments = call.raw()
        if arguments:
            out.append(
                ToolCallDelta(
                    index=index,
                    id=call.id,
                    arguments_delta=arguments,
                    partial_arguments=call.json.partial(),
                )
            )
        if call.json.done:
            call.complete = True
            self._end_calls(out, force=False)

    def _index_without_position(self, call_id: str) -> int:
        if call_id:
            for index, call in self._calls.items():
                if call.id == call_id:
                    return index
            return max(self._calls, default=-1) + 1
        # Neither index nor id: a continuation of the latest call, or the first call.
        return max(self._calls, default=0)

    def _end_calls(self, out: list[Chunk], *, force: bool) -> None:
        # Ends go out in index order: a complete call waits for every lower-index call.
        for index in sorted(self._calls):
            call = self._calls[index]
            if call.ended:
                continue
            if not (force or call.complete):
                return
            if not call.started:
                raise ProviderError(f"tool call at index {index} ended without a function name")
            call.end(out)

    def _close(self, out: list[Chunk], *, terminated: bool) -> None:
        if not terminated and self._finish_reason is None:
            open_calls = [c for c in self._calls.values() if not c.ended and not c.complete]
            if open_calls:
                ids = ", ".join(c.id or str(c.index) for c in open_calls)
                raise StreamBroken(
                    f"stream ended without finish_reason or [DONE] inside tool call(s) {ids}",
                    received=self.received + out,
                )
        self._end_calls(out, force=True)
        if self._usage is not None:
            out.append(self._usage)
        out.append(Done(finish_reason=self._finish_reason or "stop"))
        self._closed = True


def _content_parts(parts: list[Any], out: list[Chunk]) -> None:
    # Mistral's reasoning models send content as typed parts: {"type": "text", "text": ...}
    # and {"type": "thinking", "thinking": [{"type": "text", "text": ...}, ...]}.
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text:
                out.append(TextDelta(text))
        elif kind == "thinking":
            thinking = part.get("thinking")
            if isinstance(thinking, list):
                thinking = "".join(
                    p["text"] for p in thinking if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
            if isinstance(thinking, str) and thinking:
                out.append(ReasoningDelta(thinking))


# --- request --------------------------------------------------------------------------------


def to_openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Convert raygent messages to Chat Completions ``messages``.

    Parameters
    ----------
    messages : sequence of Message
        ``SystemMessage``, ``UserMessage``, ``AssistantMessage`` (tool calls become
        ``tool_calls`` with JSON-string arguments) and ``ToolMessage`` (role ``tool`` with
        ``tool_call_id``).

    Returns
    -------
    list of dict
        JSON-ready message objects.

    Raises
    ------
    TypeError
        For an object that is not a raygent message.
    """
    return inline_items(messages, _assistant_items, _tool_item)


def _assistant_items(message: AssistantMessage) -> list[dict[str, Any]]:
    item: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        # The API's own replies carry null content next to tool calls; an empty string there
        # is rejected by some compatible servers.
        item["content"] = message.content or None
        item["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": arguments_json(c.arguments)}}
            for c in message.tool_calls
        ]
    return [item]


def _tool_item(message: ToolMessage) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": message.call_id, "content": message.content}


def to_openai_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wrap ``{"name", "description", "parameters"}`` schemas as Chat Completions tools."""
    return [{"type": "function", "function": dict(tool)} for tool in tools]


class OpenAIChatProvider(HTTPStreamProvider):
    """A model behind an OpenAI-compatible Chat Completions endpoint, streamed over SSE.

    Works with OpenAI and with vLLM, Ollama, llama.cpp server, LM Studio, Groq, Mistral,
    DeepSeek, OpenRouter and others serving ``POST {base_url}/chat/completions``.

    Parameters
    ----------
    model : str
        The model id sent as ``model``.
    base_url : str, optional
        API root, e.g. ``"http://localhost:11434/v1"``. Default: ``$OPENAI_BASE_URL`` or
        ``https://api.openai.com/v1``.
    api_key : str, optional
        Bearer token. Default: ``$OPENAI_API_KEY``. Empty or unset sends no ``Authorization``
        header (local servers need none).
    headers : dict, optional
        Extra request headers (added after the defaults, so they can override them).
    timeout_s : float, default 600
        Seconds allowed to send the request and for each read -- the longest silence tolerated
        between two pieces of the stream. Connecting gets at most 30 s of it.
    max_retries : int, default 2
        Retries after the first attempt for HTTP 429, HTTP 5xx and connection failures, with
        exponential backoff (0.5 s, 1 s, 2 s ... with jitter) or the server's ``Retry-After``
        (seconds or HTTP date, or ``retry-after-ms``), each wait capped at 60 s. A response is
        only retried before any chunk has been yielded.
    temperature : float, optional
        Sampling temperature; omitted from the request when None.
    transport : httpx.AsyncBaseTransport, optional
        Custom transport (proxies, tests, ``httpx.ASGITransport``).

    Attributes
    ----------
    name : str
        ``"openai:<model>"``.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 600,
        max_retries: int = 2,
        temperature: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        all_headers = openai_headers(api_key, headers)
        super().__init__(
            model, name=f"openai:{model}",
            base_url=base_url or os.environ.get("OPENAI_BASE_URL") or _DEFAULT_BASE_URL,
            headers=all_headers, timeout_s=timeout_s, max_retries=max_retries, transport=transport,
        )
        self.temperature = temperature

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], *, stream: bool = True
    ) -> dict[str, Any]:
        """The JSON body :meth:`stream` or :meth:`complete` posts (for logging and recording).

        Parameters
        ----------
        messages : sequence of Message
            The conversation.
        tools : sequence of dict
            ``{"name", "description", "parameters"}`` schemas; ``tools`` is omitted when empty.
        stream : bool, default True
            True for :meth:`stream`, False for :meth:`complete`.

        Returns
        -------
        dict
            ``model``, ``messages``, ``stream``, with ``stream_options: {"include_usage":
            true}`` when streaming, and ``tools`` / ``temperature`` when given.
        """
        body: dict[str, Any] = {"model": self.model, "messages": to_openai_messages(messages), "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if tools:
            body["tools"] = to_openai_tools(tools)
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    decoder = OpenAIChatDecoder

    def decode_response(self, body: bytes) -> list[Chunk]:
        return decode_openai_chat_response(body)

    def stream_url(self) -> str:
        return f"{self.base_url}/chat/completions"


def openai_headers(api_key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    """Request headers of the OpenAI APIs: SSE, JSON, ``Authorization: Bearer`` when a key is
    given (``api_key``, else ``OPENAI_API_KEY``; none for keyless local servers), then ``extra``."""
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    headers.update(extra or {})
    return headers


def decode_openai_chat(chunks: Iterable[bytes]) -> list[Chunk]:
    """Decode a whole Chat Completions stream given as byte pieces (see :func:`decode_stream`)."""
    return OpenAIChatDecoder.decode_all(chunks)


def decode_openai_chat_response(body: bytes) -> list[Chunk]:
    """Decode a whole Chat Completions response (``stream: false``) into raygent chunks.

    The ``chat.completion`` object of the OpenAI API reference: ``choices[0].message`` is read
    as the one delta of a stream, so every decision of :class:`OpenAIChatDecoder` holds
    (reasoning fields, content parts, refusals, arguments given as objects); tool calls are
    numbered in message order. Per call: ``ToolCallStart``, one ``ToolCallDelta`` with the whole
    arguments, ``ToolCallEnd``; then ``Usage`` and ``Done(finish_reason)``.

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
        The body is not a JSON object, has no ``choices``, or carries an ``error`` object.
    ToolCallArgumentsError
        Tool-call arguments that are not a JSON object.
    """
    payload = load_response(body)
    if payload.get("error"):
        raise response_error(payload["error"])
    choices = payload.get("choices")
    if not isinstance(choices, list):
        raise ProviderError(f"chat completion without choices: {body[:PAYLOAD_PREVIEW_CHARS]!r}")
    as_deltas = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        delta = dict(message) if isinstance(message, dict) else {}
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            # A whole message lists its calls without "index": their position is the index.
            delta["tool_calls"] = [{**c, "index": i} for i, c in enumerate(calls) if isinstance(c, dict)]
        as_deltas.append({"index": choice.get("index", 0), "delta": delta,
                          "finish_reason": choice.get("finish_reason")})
    decoder = OpenAIChatDecoder()
    out: list[Chunk] = []
    decoder._payload({"id": payload.get("id"), "choices": as_deltas, "usage": payload.get("usage"),
                      "x_groq": payload.get("x_groq")}, "message", out)
    decoder._close(out, terminated=True)
    return out
