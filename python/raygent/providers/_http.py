"""HTTP plumbing shared by the streaming providers: one client per event loop, retries, errors.

Every HTTP provider (:class:`~raygent.providers.OpenAIChatProvider`,
:class:`~raygent.providers.OpenAIResponsesProvider`, :class:`~raygent.providers.AnthropicProvider`,
:class:`~raygent.providers.GeminiProvider`) posts one JSON body and decodes the streamed answer
with its wire decoder, or (:meth:`HTTPStreamProvider.complete`) the whole JSON answer with its
response decoder; this module owns everything between: the ``httpx.AsyncClient``, the retry
loop (HTTP 429, 5xx and connection failures, ``Retry-After`` honoured, exponential backoff with
jitter otherwise) and the typed errors (RFC 9110 §10.2.3 for ``Retry-After``).

Requests go only to the URL the provider was configured with: redirects are followed only to the
same scheme, host and port, so a misbehaving endpoint cannot send the request body (with the
API key in its headers) to a host the user never named.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import random
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar, Protocol

import httpx
import orjson

from raygent.errors import ProviderError, ProviderHTTPError, RateLimited, StreamBroken
from raygent.messages import Chunk, Message
from raygent.providers._ratelimit import RateLimits, limiter_for

__all__ = ["HTTPStreamProvider", "WholeBody", "retry_after_s", "backoff_s", "error_message"]

# Longest wait between two attempts, whatever Retry-After asks: a turn should fail visibly
# rather than hang for minutes on one server hint.
MAX_RETRY_WAIT_S = 60.0
BACKOFF_BASE_S = 0.5
CONNECT_TIMEOUT_S = 30.0
ERROR_BODY_CHARS = 2000
RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
# Anthropic answers 529 "overloaded"; it is in the 5xx range above.

# The pause between attempts; a module attribute so tests can observe the waits without
# sleeping (``monkeypatch.setattr(_http, "sleep", ...)``).
sleep: Callable[[float], Any] = asyncio.sleep


class StreamDecoder(Protocol):
    """What the retry loop needs of a wire decoder (every ``*Decoder`` class here has it)."""

    received: list[Chunk]

    @property
    def closed(self) -> bool: ...

    def feed(self, data: bytes) -> list[Chunk]: ...

    def finish(self) -> list[Chunk]: ...


class WholeBody:
    """A :class:`StreamDecoder` for a response read whole: keeps the bytes, decodes at the end.

    Lets :meth:`HTTPStreamProvider.complete` share the retry loop of streams. Nothing counts
    as received before the body is complete, so a connection that breaks midway is retried.
    """

    __slots__ = ("_parts", "_decode", "received")

    def __init__(self, decode: Callable[[bytes], list[Chunk]]) -> None:
        self._parts: list[bytes] = []
        self._decode = decode
        self.received: list[Chunk] = []

    @property
    def closed(self) -> bool:
        return False

    def feed(self, data: bytes) -> list[Chunk]:
        self._parts.append(data)
        return []

    def finish(self) -> list[Chunk]:
        self.received = self._decode(b"".join(self._parts))
        return self.received


def retry_after_s(headers: httpx.Headers) -> float | None:
    """The server's wait hint in seconds, or None.

    Parameters
    ----------
    headers : httpx.Headers
        Response headers. ``retry-after-ms`` (milliseconds, OpenAI's and Anthropic's) wins over
        ``Retry-After`` (delay in seconds or an HTTP date, RFC 9110 §10.2.3).

    Returns
    -------
    float or None
        Seconds to wait, at least 0 (a date in the past gives 0); None when absent or unreadable.
    """
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


def backoff_s(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    The server's hint when given, else ``0.5 * 2**attempt`` scaled by a random factor in
    [0.5, 1] (jitter, so that clients that failed together do not return together); either way
    at most 60 s.
    """
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_WAIT_S)
    base = min(BACKOFF_BASE_S * 2.0**attempt, MAX_RETRY_WAIT_S)
    return base * random.uniform(0.5, 1.0)


def error_message(status: int, body: str) -> str:
    """``"HTTP <status>: <message>"`` with the API's own message when the body carries one.

    Understands ``{"error": {"message": ...}}`` (OpenAI, Anthropic's ``{"type": "error",
    "error": {...}}``, Gemini's ``{"error": {"code", "message", "status"}}``) and
    ``{"error": "..."}``; otherwise the body's first 300 characters.
    """
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


async def _same_origin_only(request: httpx.Request) -> None:
    # Request hook: follow_redirects is on, but a redirect may not leave the configured origin.
    origin = request.extensions.get("raygent_origin")
    if origin is not None and (request.url.scheme, request.url.host, request.url.port) != origin:
        raise ProviderError(f"refusing to follow a redirect to {request.url.scheme}://{request.url.host}: "
                            "requests only go to the configured base URL")


class HTTPStreamProvider(ABC):
    """Base of the HTTP providers: client, retry loop and HTTP errors (no wire format).

    Parameters
    ----------
    model : str
        The model id.
    name : str
        ``"<kind>:<model>"``, shown in errors and logs.
    base_url : str
        API root; every request goes under it, never elsewhere.
    headers : dict
        Complete request headers (defaults, authentication and the caller's extras).
    timeout_s : float
        Seconds allowed to send the request and for each read -- the longest silence tolerated
        between two pieces of the stream. Connecting gets at most 30 s of it.
    max_retries : int
        Retries after the first attempt for HTTP 429, HTTP 5xx and connection failures. A
        response is only retried before any chunk has been decoded from it.
    transport : httpx.AsyncBaseTransport or None
        Custom transport (proxies, tests, ``httpx.ASGITransport``).

    Raises
    ------
    ValueError
        ``max_retries`` below 0.
    """

    def __init__(
        self,
        model: str,
        *,
        name: str,
        base_url: str,
        headers: dict[str, str],
        timeout_s: float,
        max_retries: int,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self._transport = transport
        self._headers = headers
        self._client: httpx.AsyncClient | None = None
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # Rate limits (see raygent.providers._ratelimit); set by make_provider or by the caller.
    rate_limits: RateLimits | None = None
    rate_limit_key: str | None = None

    def _limiter(self) -> Any:
        if self.rate_limits is None:
            return None
        key = self.rate_limit_key or hashlib.sha1(f"{self.name}@{self.base_url}".encode()).hexdigest()[:16]
        return limiter_for(key, self.rate_limits)

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
                timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, CONNECT_TIMEOUT_S)),
                follow_redirects=True,
                event_hooks={"request": [_same_origin_only]},
            )
            self._client = client
            self._client_loop = weakref.ref(loop)
        return client

    async def aclose(self) -> None:
        """Close the HTTP client (and a custom transport with it)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Each wire format names its decoders and URLs; posting and retrying are the same for all.
    decoder: ClassVar[type[StreamDecoder]]

    @abstractmethod
    def stream_url(self) -> str:
        """The URL one streamed response is POSTed to."""

    def complete_url(self) -> str:
        """The URL one whole (non-streamed) response is POSTed to; the stream URL unless the
        API has a separate method (Gemini's ``:generateContent``)."""
        return self.stream_url()

    @abstractmethod
    def request_body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], *, stream: bool = True
    ) -> dict[str, Any]:
        """The JSON body :meth:`stream` (``stream=True``) or :meth:`complete` posts."""

    @abstractmethod
    def decode_response(self, body: bytes) -> list[Chunk]:
        """Decode a whole JSON response body (see :func:`raygent.providers.decode_response`)."""

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> list[Chunk]:
        """Ask for one whole response, without streaming, and decode it into chunks.

        The request is :meth:`request_body` with ``stream=False`` posted to :meth:`complete_url`
        (``Accept: application/json``); the answer is one JSON document, decoded by the
        format's response decoder into the chunk vocabulary of :meth:`stream`: text and
        reasoning deltas (one per part), per tool call a ``ToolCallStart``, one
        ``ToolCallDelta`` with the whole arguments and a ``ToolCallEnd``, then ``Usage`` and
        ``Done``.

        Parameters
        ----------
        messages : sequence of Message
            The conversation so far.
        tools : sequence of dict
            ``{"name", "description", "parameters"}`` schemas; may be empty.

        Returns
        -------
        list of Chunk
            The response's chunks, :class:`~raygent.messages.Done` last.

        Raises
        ------
        RateLimited
            HTTP 429 on the last attempt (``retry_after_s`` set from the server's hint).
        ProviderHTTPError
            HTTP 5xx on the last attempt, or any other non-2xx status at once.
        ToolCallArgumentsError
            Tool-call arguments that are not a JSON object.
        ProviderError
            Connection failures after the last retry (a body cut off midway is retried like a
            failed connection: nothing was passed on yet), a body that is not a JSON object, or
            an error object in a 2xx body.
        """
        content = orjson.dumps(self.request_body(messages, tools, stream=False))
        headers = self._headers
        if headers.get("Accept") == "text/event-stream":
            headers = {**headers, "Accept": "application/json"}
        decode = self.decode_response
        return [chunk async for chunk in self._post_stream(self.complete_url(), content,
                                                           lambda: WholeBody(decode), headers=headers)]

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
            The connection failed or the body ended early after chunks were decoded, or the
            server sent an ``error`` object in the stream; ``received`` holds the chunks.
        ToolCallArgumentsError
            Tool-call arguments that are not a JSON object.
        ProviderError
            Connection failures after the last retry, or a payload that is not JSON.
        """
        content = orjson.dumps(self.request_body(messages, tools))
        async for chunk in self._post_stream(self.stream_url(), content, self.decoder):
            yield chunk

    async def _post_stream(
        self, url: str, content: bytes, new_decoder: Callable[[], StreamDecoder],
        *, headers: dict[str, str] | None = None,
    ) -> AsyncIterator[Chunk]:
        """POST ``content`` to ``url`` and yield the decoded chunks, retrying as documented.

        ``headers`` replaces the provider's request headers when given.

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
        ProviderError
            Connection failures after the last retry, or what the decoder raises.
        """
        client = self._client_here()
        request_url = httpx.URL(url)
        origin = (request_url.scheme, request_url.host, request_url.port)
        limiter = self._limiter()
        request_headers = self._headers if headers is None else headers
        attempt = 0
        while True:
            decoder = new_decoder()
            if limiter is not None:
                await limiter.acquire(len(content) // 4)
            try:
                try:
                    request = client.build_request("POST", request_url, content=content, headers=request_headers,
                                                   extensions={"raygent_origin": origin})
                    response = await client.send(request, stream=True)
                    try:
                        if not 200 <= response.status_code < 300:
                            error = await self._http_error(response)
                            if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                                raise error
                            wait_s = backoff_s(attempt, retry_after_s(response.headers))
                        else:
                            async for piece in response.aiter_bytes():
                                for chunk in decoder.feed(piece):
                                    yield chunk
                                if decoder.closed:
                                    # The format's end marker was seen: the rest carries nothing for us.
                                    return
                            for chunk in decoder.finish():
                                yield chunk
                            return
                    finally:
                        await response.aclose()
                except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                    what = f"{type(exc).__name__} from {url}: {exc}"
                    if decoder.received:
                        raise StreamBroken(f"stream broke after {len(decoder.received)} chunks: {what}",
                                           received=decoder.received) from exc
                    if attempt >= self.max_retries:
                        raise ProviderError(f"{what} (after {attempt + 1} attempts)") from exc
                    wait_s = backoff_s(attempt, None)
            finally:
                if limiter is not None:
                    # The slot is held for the whole attempt, body included; a retry waits again.
                    await limiter.release()
            attempt += 1
            await sleep(wait_s)

    async def _http_error(self, response: httpx.Response) -> ProviderHTTPError:
        raw = await response.aread()
        body = raw.decode("utf-8", errors="replace")[:ERROR_BODY_CHARS]
        status = response.status_code
        message = f"{self.name}: {error_message(status, body)}"
        if status == 429:
            return RateLimited(message, status=status, body=body, retry_after_s=retry_after_s(response.headers))
        return ProviderHTTPError(message, status=status, body=body)
