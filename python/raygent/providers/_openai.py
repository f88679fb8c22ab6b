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
  or else takes the next free index. A call without ``id`` gets one made by raygent.
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

import asyncio
import email.utils
import os
import random
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import httpx
import orjson

from raygent._native import JsonStream, JsonStreamError
from raygent.errors import (
    ProviderError,
    ProviderHTTPError,
    RateLimited,
    StreamBroken,
    ToolCallArgumentsError,
)
from raygent.messages import (
    AssistantMessage,
    Chunk,
    Done,
    Message,
    ReasoningDelta,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolMessage,
    Usage,
    UserMessage,
)
from raygent.providers._sse import SSEDecoder, SSEEvent

__all__ = ["OpenAIChatDecoder", "OpenAIChatProvider", "to_openai_messages", "to_openai_tools"]

_DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Longest wait between two attempts, whatever Retry-After asks: a turn should fail visibly
# rather than hang for minutes on one server hint.
_MAX_RETRY_WAIT_S = 60.0
_BACKOFF_BASE_S = 0.5
_CONNECT_TIMEOUT_S = 30.0
_ERROR_BODY_CHARS = 2000
_PAYLOAD_PREVIEW_CHARS = 500
_RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))


class _Call:
    """Decoding state of one tool call."""

    __slots__ = ("index", "id", "name", "parts", "json", "started", "complete", "ended")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = ""
        self.name = ""
        self.parts: list[str] = []
        self.json = JsonStream()
        self.started = False
        self.complete = False
        self.ended = False

    def raw(self) -> str:
        return "".join(self.parts)

    def error(self, what: str, exc: JsonStreamError | None = None) -> ToolCallArgumentsError:
        raw = self.raw()
        offset = exc.offset if exc is not None else 0
        where = f" at byte {offset}: {exc.reason}" if exc is not None else ""
        return ToolCallArgumentsError(
            f"tool call {self.id or self.index} ({self.name or 'unnamed'}): {what}{where}; "
            f"arguments received: {raw[:200]!r}",
            call_id=self.id,
            name=self.name,
            raw=raw,
            offset=offset,
        )


class OpenAIChatDecoder:
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

    __slots__ = ("_sse", "_calls", "_finish_reason", "_usage", "_saw_payload", "_closed", "received")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._calls: dict[int, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self._saw_payload = False
        self._closed = False
        self.received: list[Chunk] = []

    @property
    def closed(self) -> bool:
        """True once :class:`Done` has been emitted; later input is ignored."""
        return self._closed

    def feed(self, data: bytes) -> list[Chunk]:
        """Decode the next bytes of the response body.

        Parameters
        ----------
        data : bytes
            Any slice of the body, in order.

        Returns
        -------
        list of Chunk
            Chunks completed by these bytes (often empty). Contains :class:`Done` (last) when
            ``data: [DONE]`` arrived.

        Raises
        ------
        ToolCallArgumentsError
            Tool-call arguments that cannot be (the start of) a JSON object.
        ProviderError
            A payload that is not JSON, or an ``error`` object sent in the stream.
        """
        if self._closed:
            return []
        out: list[Chunk] = []
        try:
            for event in self._sse.feed(data):
                self._event(event, out)
                if self._closed:
                    break
        finally:
            self.received.extend(out)
        return out

    def finish(self) -> list[Chunk]:
        """End of the body: end open tool calls, then emit :class:`Usage` and :class:`Done`.

        Returns
        -------
        list of Chunk
            The remaining chunks, :class:`Done` last; empty if ``[DONE]`` was already seen.

        Raises
        ------
        StreamBroken
            The body ended with no payload at all, or without ``finish_reason`` and ``[DONE]``
            while a tool call's arguments were incomplete. ``received`` holds every chunk
            decoded before.
        ToolCallArgumentsError
            ``finish_reason`` was given but a call's arguments are not a complete JSON object
            (e.g. cut by ``finish_reason: "length"``).
        """
        if self._closed:
            return []
        out: list[Chunk] = []
        try:
            for event in self._sse.finish():
                self._event(event, out)
            if not self._closed:
                self._close(out, terminated=False)
        finally:
            self.received.extend(out)
        return out

    # --- payloads ---------------------------------------------------------------------------

    def _event(self, event: SSEEvent, out: list[Chunk]) -> None:
        if self._closed or event.event not in ("message", "error"):
            # Chat Completions sends unnamed events only; a named one is some proxy's extra.
            return
        data = event.data
        if not data or data.isspace():
            return
        if data.strip() == "[DONE]":
            self._close(out, terminated=True)
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ProviderError(
                f"stream payload is not JSON ({exc}): {data[:_PAYLOAD_PREVIEW_CHARS]!r}"
            ) from None
        if not isinstance(payload, dict):
            raise ProviderError(f"stream payload is not a JSON object: {data[:_PAYLOAD_PREVIEW_CHARS]!r}")
        self._saw_payload = True
        if payload.get("error") or event.event == "error":
            raise _stream_error(payload.get("error") or payload)
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
            call.id = call.id or f"call_{uuid.uuid4().hex[:24]}"
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
            raw = call.raw()
            if not raw or raw.isspace():
                arguments: Any = {}
            else:
                try:
                    arguments = call.json.finish()
                except JsonStreamError as exc:
                    raise call.error("arguments are incomplete or invalid JSON", exc) from None
                if not isinstance(arguments, dict):
                    raise call.error(f"arguments are a JSON {type(arguments).__name__}, not an object")
            call.ended = True
            call_done = ToolCall(id=call.id, name=call.name, arguments=arguments)
            out.append(ToolCallEnd(index=index, call=call_done))

    def _close(self, out: list[Chunk], *, terminated: bool) -> None:
        if not terminated and self._finish_reason is None:
            if not self._saw_payload:
                raise StreamBroken("stream ended without any payload", received=self.received + out)
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


def _stream_error(error: Any) -> ProviderError:
    if isinstance(error, dict):
        message = error.get("message") or orjson.dumps(error).decode()
        details = ", ".join(f"{k}={error[k]}" for k in ("type", "code") if error.get(k))
        return ProviderError(f"provider error in stream: {message}" + (f" ({details})" if details else ""))
    return ProviderError(f"provider error in stream: {error}")


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
    result: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            result.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            result.append({"role": "user", "content": message.content})
        elif isinstance(message, AssistantMessage):
            item: dict[str, Any] = {"role": "assistant", "content": message.content}
            if message.tool_calls:
                # The API's own replies carry null content next to tool calls; an empty string
                # there is rejected by some compatible servers.
                item["content"] = message.content or None
                item["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
                    }
                    for call in message.tool_calls
                ]
            result.append(item)
        elif isinstance(message, ToolMessage):
            result.append({"role": "tool", "tool_call_id": message.call_id, "content": message.content})
        else:
            raise TypeError(f"not a raygent message: {type(message).__name__}")
    return result


def to_openai_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wrap ``{"name", "description", "parameters"}`` schemas as Chat Completions tools."""
    return [{"type": "function", "function": dict(tool)} for tool in tools]


def _retry_after_s(headers: httpx.Headers) -> float | None:
    """The server's wait hint in seconds (``retry-after-ms``, ``Retry-After`` seconds or date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _backoff_s(attempt: int, retry_after_s: float | None) -> float:
    if retry_after_s is not None:
        return min(retry_after_s, _MAX_RETRY_WAIT_S)
    # Exponential with jitter in [50%, 100%], so clients that failed together do not return
    # together.
    base = min(_BACKOFF_BASE_S * 2.0**attempt, _MAX_RETRY_WAIT_S)
    return base * random.uniform(0.5, 1.0)


def _error_message(status: int, body: str) -> str:
    detail = body[:300]
    try:
        error = orjson.loads(body).get("error")
        if isinstance(error, dict) and error.get("message"):
            detail = str(error["message"])
        elif isinstance(error, str):
            detail = error
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return f"HTTP {status}: {detail}" if detail else f"HTTP {status}"


class OpenAIChatProvider:
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
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or _DEFAULT_BASE_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.temperature = temperature
        self._transport = transport
        self._headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._headers.update(headers or {})
        self._client: httpx.AsyncClient | None = None
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def __repr__(self) -> str:
        return f"OpenAIChatProvider(model={self.model!r}, base_url={self.base_url!r})"

    def request_body(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The JSON body :meth:`stream` posts (for logging and recording).

        Parameters
        ----------
        messages : sequence of Message
            The conversation.
        tools : sequence of dict
            ``{"name", "description", "parameters"}`` schemas; ``tools`` is omitted when empty.

        Returns
        -------
        dict
            ``model``, ``messages``, ``stream: true``, ``stream_options: {"include_usage":
            true}``, and ``tools`` / ``temperature`` when given.
        """
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = to_openai_tools(tools)
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def _client_here(self) -> httpx.AsyncClient:
        # An httpx client's connections belong to the event loop that opened them, so a client
        # is kept per loop: reused across turns (keep-alive) and replaced if the loop changes.
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.is_closed or self._client_loop is None or self._client_loop() is not loop:
            client = httpx.AsyncClient(
                transport=self._transport,
                # Connecting is capped at 30 s: a host that does not answer a SYN in 30 s will not
                # answer it in 600, while a slow model may well be silent that long mid-stream.
                timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, _CONNECT_TIMEOUT_S)),
                follow_redirects=True,
            )
            self._client = client
            self._client_loop = weakref.ref(loop)
        return client

    async def aclose(self) -> None:
        """Close the HTTP client (and a custom transport with it)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> OpenAIChatProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> AsyncIterator[Chunk]:
        """Stream one response (see :class:`~raygent.providers.Provider` for the contract).

        Parameters
        ----------
        messages : sequence of Message
            The conversation so far.
        tools : sequence of dict
            ``{"name", "description", "parameters"}`` schemas; may be empty.

        Yields
        ------
        Chunk
            Text, reasoning and tool-call chunks, at most one :class:`Usage`, :class:`Done` last.

        Raises
        ------
        RateLimited
            HTTP 429 on the last attempt (``retry_after_s`` set from the server's hint).
        ProviderHTTPError
            HTTP 5xx on the last attempt, or any other non-2xx status at once (``status`` and
            ``body``, at most 2,000 characters).
        StreamBroken
            The connection failed or the body ended early after chunks were decoded;
            ``received`` holds them.
        ToolCallArgumentsError
            Tool-call arguments that are not a JSON object.
        ProviderError
            Connection failures after the last retry, an ``error`` object in the stream, or a
            payload that is not JSON.
        """
        content = orjson.dumps(self.request_body(messages, tools))
        url = f"{self.base_url}/chat/completions"
        client = self._client_here()
        attempt = 0
        while True:
            decoder = OpenAIChatDecoder()
            try:
                async with client.stream("POST", url, content=content, headers=self._headers) as response:
                    if not 200 <= response.status_code < 300:
                        error = await self._http_error(response)
                        if response.status_code not in _RETRY_STATUSES or attempt >= self.max_retries:
                            raise error
                        wait_s = _backoff_s(attempt, _retry_after_s(response.headers))
                    else:
                        async for piece in response.aiter_bytes():
                            for chunk in decoder.feed(piece):
                                yield chunk
                            if decoder.closed:
                                # [DONE] seen: the rest of the body carries nothing for us.
                                return
                        for chunk in decoder.finish():
                            yield chunk
                        return
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                what = f"{type(exc).__name__} from {url}: {exc}"
                if decoder.received:
                    raise StreamBroken(f"stream broke after {len(decoder.received)} chunks: {what}",
                                       received=decoder.received) from exc
                if attempt >= self.max_retries:
                    raise ProviderError(f"{what} (after {attempt + 1} attempts)") from exc
                wait_s = _backoff_s(attempt, None)
            attempt += 1
            await asyncio.sleep(wait_s)

    async def _http_error(self, response: httpx.Response) -> ProviderHTTPError:
        raw = await response.aread()
        body = raw.decode("utf-8", errors="replace")[:_ERROR_BODY_CHARS]
        status = response.status_code
        message = f"{self.name}: {_error_message(status, body)}"
        if status == 429:
            retry_after_s = _retry_after_s(response.headers)
            return RateLimited(message, status=status, body=body, retry_after_s=retry_after_s)
        return ProviderHTTPError(message, status=status, body=body)


def decode_openai_chat(chunks: Iterable[bytes]) -> list[Chunk]:
    """Decode a whole Chat Completions stream given as byte pieces (see :func:`decode_stream`)."""
    decoder = OpenAIChatDecoder()
    out: list[Chunk] = []
    for piece in chunks:
        out.extend(decoder.feed(piece))
    out.extend(decoder.finish())
    return out
