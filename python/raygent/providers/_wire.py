"""Pieces shared by the wire decoders: tool-call assembly, the SSE/JSON event loop, errors.

Each wire decoder (:mod:`._openai`, :mod:`._responses`, :mod:`._anthropic`, :mod:`._gemini`) is a
pure state machine from response bytes to :mod:`raygent.messages` chunks; what they have in
common lives here so that one tool call is assembled, checked and reported the same way whatever
the format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import orjson

from raygent._native import JsonStream, JsonStreamError
from raygent.errors import ProviderError, StreamBroken, ToolCallArgumentsError
from raygent.messages import Chunk, ToolCall, ToolCallDelta, ToolCallEnd, ToolCallStart
from raygent.providers._sse import SSEDecoder, SSEEvent

__all__ = [
    "ToolCallState",
    "SSEJsonDecoder",
    "stream_error",
    "response_error",
    "load_response",
    "PAYLOAD_PREVIEW_CHARS",
]

PAYLOAD_PREVIEW_CHARS = 500
# "[DONE]" with whatever padding a proxy adds; longer data is a payload, and not stripping it
# saves copying every (space-padded, sometimes 100 KB) payload once more.
_DONE_MAX_CHARS = 64


class ToolCallState:
    """Decoding state of one tool call: its argument text so far, parsed incrementally.

    Attributes
    ----------
    index : int
        The call's position among the response's tool calls (0, 1, ...).
    id, name : str
        As the provider gave them (or as the decoder made them).
    parts : list of str
        Argument text fragments received, in order.
    json : raygent._native.JsonStream
        The incremental parser fed with ``parts``.
    started, complete, ended : bool
        ``ToolCallStart`` emitted; arguments form a complete JSON value; ``ToolCallEnd`` emitted.
    """

    __slots__ = ("index", "id", "name", "parts", "json", "started", "complete", "ended")

    def __init__(self, index: int, id: str = "", name: str = "") -> None:
        self.index = index
        self.id = id
        self.name = name
        self.parts: list[str] = []
        self.json = JsonStream()
        self.started = False
        self.complete = False
        self.ended = False

    def raw(self) -> str:
        """The argument text received so far."""
        return "".join(self.parts)

    def error(self, what: str, exc: JsonStreamError | None = None) -> ToolCallArgumentsError:
        """A :class:`ToolCallArgumentsError` for this call, naming the byte where JSON broke."""
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

    def start(self, out: list[Chunk]) -> None:
        """Emit :class:`ToolCallStart` (once)."""
        if not self.started:
            self.started = True
            out.append(ToolCallStart(index=self.index, id=self.id, name=self.name))

    def add(self, text: str, out: list[Chunk]) -> None:
        """Append argument text and emit a :class:`ToolCallDelta` with the partial value.

        Raises
        ------
        ToolCallArgumentsError
            The text cannot continue a JSON value, or arrives after the value was complete.
        """
        if not text:
            return
        if self.complete and not text.isspace():
            self.parts.append(text)
            raise self.error("arguments continue after a complete JSON value")
        self.parts.append(text)
        try:
            self.json.feed(text)
        except JsonStreamError as exc:
            raise self.error("arguments are not valid JSON", exc) from None
        self.complete = self.json.done
        out.append(ToolCallDelta(index=self.index, id=self.id, arguments_delta=text,
                                 partial_arguments=self.json.partial()))

    def end(self, out: list[Chunk]) -> None:
        """Emit :class:`ToolCallEnd` with the parsed arguments (once); blank arguments mean ``{}``.

        Raises
        ------
        ToolCallArgumentsError
            The arguments are incomplete, invalid, or not a JSON object.
        """
        if self.ended:
            return
        raw = self.raw()
        if not raw or raw.isspace():
            arguments: Any = {}
        else:
            try:
                arguments = self.json.finish()
            except JsonStreamError as exc:
                raise self.error("arguments are incomplete or invalid JSON", exc) from None
            if not isinstance(arguments, dict):
                raise self.error(f"arguments are a JSON {type(arguments).__name__}, not an object")
        self.ended = True
        out.append(ToolCallEnd(index=self.index, call=ToolCall(id=self.id, name=self.name, arguments=arguments)))


def _error_text(error: Any) -> str:
    # "<message> (type=..., code=...)" from an API error object, or the bare value.
    if isinstance(error, dict):
        message = error.get("message") or orjson.dumps(error).decode()
        details = ", ".join(f"{k}={error[k]}" for k in ("type", "code", "status") if error.get(k))
        return f"{message}" + (f" ({details})" if details else "")
    return f"{error}"


def stream_error(error: Any, received: list[Chunk]) -> StreamBroken:
    """The typed error for an error the server reported inside a stream.

    Parameters
    ----------
    error : dict or any
        The error object (``{"message", "type" / "code" / "status", ...}``) or a bare value.
    received : list of Chunk
        The chunks decoded before the error, kept on the exception.

    Returns
    -------
    StreamBroken
        Message ``"provider error in stream: <message> (type=..., code=...)"``.
    """
    return StreamBroken(f"provider error in stream: {_error_text(error)}", received=received)


def response_error(error: Any) -> ProviderError:
    """The typed error for an error object in a whole (non-streamed) 2xx response body.

    Returns
    -------
    ProviderError
        Message ``"provider error in response: <message> (type=..., code=...)"``.
    """
    return ProviderError(f"provider error in response: {_error_text(error)}")


def load_response(body: bytes) -> dict[str, Any]:
    """Parse a whole JSON response body (the answer to a request without streaming).

    Parameters
    ----------
    body : bytes
        The response body as received.

    Returns
    -------
    dict
        The parsed JSON object.

    Raises
    ------
    ProviderError
        The body is not JSON, or not a JSON object (the message shows its first 500 characters).
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        preview = body[:PAYLOAD_PREVIEW_CHARS].decode("utf-8", errors="replace")
        raise ProviderError(f"response body is not JSON ({exc}): {preview!r}") from None
    if not isinstance(payload, dict):
        preview = body[:PAYLOAD_PREVIEW_CHARS].decode("utf-8", errors="replace")
        raise ProviderError(f"response body is not a JSON object: {preview!r}")
    return payload


class SSEJsonDecoder(ABC):
    """Base of the decoders whose SSE events each carry one JSON object.

    Subclasses implement :meth:`_payload` (one parsed event) and :meth:`_end_of_body` (the body
    ended without the format's end marker), and call :meth:`_close` to emit the final chunks.
    The SSE event name is passed along but the payload decides: vercel/ai's recordings drop the
    ``event:`` lines, and every format here repeats the event type inside the payload.

    Attributes
    ----------
    received : list of Chunk
        Every chunk decoded so far, in order (what :class:`StreamBroken` carries).
    """

    __slots__ = ("_sse", "_closed", "_saw_payload", "received")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._closed = False
        self._saw_payload = False
        self.received: list[Chunk] = []

    @property
    def closed(self) -> bool:
        """True once :class:`~raygent.messages.Done` has been emitted; later input is ignored."""
        return self._closed

    @classmethod
    def decode_all(cls, chunks: Iterable[bytes]) -> list[Chunk]:
        """Decode a whole recorded body given as byte pieces: every ``feed``, then ``finish``.

        What :func:`~raygent.providers.decode_stream` runs for the format; raises what
        :meth:`feed` and :meth:`finish` raise.
        """
        decoder = cls()
        out: list[Chunk] = []
        for piece in chunks:
            out.extend(decoder.feed(piece))
        out.extend(decoder.finish())
        return out

    def feed(self, data: bytes) -> list[Chunk]:
        """Decode the next bytes of the response body.

        Parameters
        ----------
        data : bytes
            Any slice of the body, in order.

        Returns
        -------
        list of Chunk
            Chunks completed by these bytes (often empty); :class:`~raygent.messages.Done` last
            when the format's end marker arrived.

        Raises
        ------
        ProviderError
            A payload that is not a JSON object; ``StreamBroken`` (with ``received``) for an
            error the server reported in the stream; ``ToolCallArgumentsError`` for tool-call
            arguments that are not JSON.
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
        """End of the body: the last chunks, :class:`~raygent.messages.Done` last.

        Returns
        -------
        list of Chunk
            Empty if the end marker was already seen.

        Raises
        ------
        StreamBroken
            The body ended before the format's end marker (see each decoder); ``received``
            holds every chunk decoded before.
        ToolCallArgumentsError
            A tool call's arguments are not a complete JSON object.
        """
        if self._closed:
            return []
        out: list[Chunk] = []
        try:
            for event in self._sse.finish():
                self._event(event, out)
                if self._closed:
                    break
            if not self._closed:
                if not self._saw_payload:
                    raise StreamBroken("stream ended without any payload", received=self.received + out)
                self._end_of_body(out)
        finally:
            self.received.extend(out)
        return out

    def _event(self, event: SSEEvent, out: list[Chunk]) -> None:
        raw = event.raw
        if not raw or raw.isspace():
            return
        if len(raw) <= _DONE_MAX_CHARS and raw.strip() == b"[DONE]":
            # Not part of these formats, but some proxies (OpenRouter) append it: an end of body.
            if not self._saw_payload:
                raise StreamBroken("stream ended without any payload", received=self.received + out)
            self._end_of_body(out)
            return
        try:
            payload = orjson.loads(raw)  # UTF-8 bytes as received: no decode to str first
        except orjson.JSONDecodeError:
            # orjson refuses invalid UTF-8, which the SSE spec decodes to U+FFFD: parse that text.
            try:
                payload = orjson.loads(event.data)
            except orjson.JSONDecodeError as exc:
                raise ProviderError(
                    f"stream payload is not JSON ({exc}): {event.data[:PAYLOAD_PREVIEW_CHARS]!r}"
                ) from None
        if not isinstance(payload, dict):
            raise ProviderError(f"stream payload is not a JSON object: {event.data[:PAYLOAD_PREVIEW_CHARS]!r}")
        self._saw_payload = True
        self._payload(payload, event.event, out)

    @abstractmethod
    def _payload(self, payload: dict[str, Any], event: str, out: list[Chunk]) -> None:
        """Decode one event's JSON object, appending the chunks it completes to ``out``."""

    @abstractmethod
    def _end_of_body(self, out: list[Chunk]) -> None:
        """The body ended without the format's end marker: close, or raise ``StreamBroken``."""

    def _broken(self, what: str, out: list[Chunk]) -> StreamBroken:
        return StreamBroken(what, received=self.received + out)
