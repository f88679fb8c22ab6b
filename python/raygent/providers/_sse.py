"""Incremental decoder for ``text/event-stream`` (server-sent events).

Follows the WHATWG HTML Living Standard, §9.2 "Server-sent events", section "Interpreting an
event stream" (https://html.spec.whatwg.org/multipage/server-sent-events.html):

- the stream is UTF-8; invalid bytes become U+FFFD and one byte order mark at the very start is
  dropped;
- a line ends at CRLF, LF or CR, and a CR that ends one network read followed by an LF that
  starts the next is one line end, not two;
- a line starting with ``:`` is a comment; ``field:value`` loses one space after the colon; a line
  without a colon is a field with an empty value;
- ``data`` lines of one event are joined with ``\\n``; an empty line dispatches the event; an
  event without data is not dispatched; an unknown field is ignored;
- ``id`` (unless it contains NUL) sets the last event id, which persists across events;
  ``retry`` (ASCII digits only) sets the reconnection time in milliseconds;
- at the end of the stream an event without its closing empty line is discarded.

Lines are split and parsed as bytes and a payload is decoded only when it is read
(:attr:`SSEEvent.data`), or not at all when the consumer parses :attr:`SSEEvent.raw` itself
(orjson reads UTF-8 bytes): the same events, since CR and LF never occur inside a multi-byte
UTF-8 sequence, so decoding line by line replaces exactly the bytes a whole-stream decode
would. Deviation: none in parsing. Reconnection itself (the ``EventSource`` object's job) is not done
here; the caller gets ``last_event_id`` and ``retry_ms`` to do it if it wants.
"""

from __future__ import annotations
import re

__all__ = ["SSEEvent", "SSEDecoder"]

# The three line terminators of the spec; CRLF first so it is taken as one terminator.
_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"  # U+FEFF in UTF-8


class SSEEvent:
    """One dispatched server-sent event.

    Parameters
    ----------
    event : str
        The event type; ``"message"`` when the block had no (or an empty) ``event`` field.
    data : str or bytes
        The ``data`` lines of the block joined with ``\\n`` (no trailing newline); as received
        (UTF-8 bytes) or as text.
    id : str
        The last event id at dispatch time (set by this or an earlier block); ``""`` if none.
    retry : int or None
        The reconnection time in milliseconds if this block carried a valid ``retry`` field.

    Attributes
    ----------
    raw : bytes
        The data as received, UTF-8 (possibly invalid: it is not checked until decoded).
    data : str
        The data decoded as the spec says (invalid bytes become U+FFFD), on each access.
    """

    __slots__ = ("event", "raw", "id", "retry")

    def __init__(self, event: str, data: str | bytes, id: str = "", retry: int | None = None) -> None:
        self.event = event
        self.raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
        self.id = id
        self.retry = retry

    @property
    def data(self) -> str:
        # errors="replace" is what the spec's "UTF-8 decode" algorithm does with bad bytes.
        return self.raw.decode("utf-8", "replace")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (self.event, self.raw, self.id, self.retry) == (other.event, other.raw, other.id, other.retry)

    def __repr__(self) -> str:
        return f"SSEEvent(event={self.event!r}, data={self.data!r}, id={self.id!r}, retry={self.retry!r})"


class SSEDecoder:
    """Turn the bytes of an event stream, in any chunking, into :class:`SSEEvent` objects.

    ``sum((d.feed(c) for c in chunks), []) + d.finish()`` is the same list of events for every
    way of cutting the same bytes into ``chunks``, including cuts inside a UTF-8 code point, a
    CRLF pair or the byte order mark. Memory is bounded by the longest line plus one event.

    Attributes
    ----------
    last_event_id : str
        The last event id seen (the spec's "last event ID string").
    retry_ms : int or None
        The last reconnection time set by a ``retry`` field, in milliseconds.
    """

    __slots__ = ("_started", "_head", "_skip_lf", "_pending", "_data", "_has_data", "_event",
                 "_block_retry", "last_event_id", "retry_ms")

    def __init__(self) -> None:
        self._started = False
        self._head = b""
        self._skip_lf = False
        # Pieces of the current, unterminated line; kept as a list so a long line arriving in
        # many small reads is joined once instead of being re-copied on every read.
        self._pending: list[bytes] = []
        self._data: list[bytes] = []
        self._has_data = False
        self._event = ""
        self._block_retry: int | None = None
        self.last_event_id = ""
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode one network read.

        Parameters
        ----------
        chunk : bytes
            The next bytes of the stream (any length, cut anywhere).

        Returns
        -------
        list of SSEEvent
            The events completed by this chunk, in stream order (often empty).
        """
        if not self._started:
            # The BOM may itself arrive cut: hold the first bytes until it can be recognised.
            head = self._head + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._head = head
                return []
            self._started = True
            self._head = b""
            chunk = head[len(_BOM):] if head.startswith(_BOM) else head
        return self._feed(chunk) if chunk else []

    def finish(self) -> list[SSEEvent]:
        """End of stream: discard an unterminated event and reset for a new stream.

        Returns
        -------
        list of SSEEvent
            Events completed by bytes held back until now (a stream shorter than a byte order
            mark); usually empty.

        ``last_event_id`` and ``retry_ms`` are kept, as an ``EventSource`` keeps them across
        reconnections. The spec: "If the file ends in the middle of an event, before the final
        empty line, the incomplete event is not dispatched" -- and a partial line is part of it.
        """
        events: list[SSEEvent] = []
        if not self._started and self._head:
            self._started = True
            head, self._head = self._head, b""
            events = self._feed(head)
        self._started = False
        self._head = b""
        self._skip_lf = False
        self._pending.clear()
        self._reset_block()
        return events

    def _reset_block(self) -> None:
        self._data.clear()
        self._has_data = False
        self._event = ""
        self._block_retry = None

    def _feed(self, data: bytes) -> list[SSEEvent]:
        if self._skip_lf:
            # The previous read ended with CR, already taken as a line end; an LF here is the
            # second half of that CRLF.
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        events: list[SSEEvent] = []
        if b"\r" not in data:
            # Fast path, almost every real stream: LF line ends only, so bytes.split (a memchr
            # scan in C) finds them; the regex below costs a match attempt at every byte.
            lines = data.split(b"\n")
            rest = lines.pop()
            if lines and self._pending:
                self._pending.append(lines[0])
                lines[0] = b"".join(self._pending)
                self._pending.clear()
            for line in lines:
                self._line(line, events)
            if rest:
                self._pending.append(rest)
            return events
        pos = 0
        for m in _EOL.finditer(data):
            piece = data[pos : m.start()]
            if self._pending:
                self._pending.append(piece)
                line = b"".join(self._pending)
                self._pending.clear()
            else:
                line = piece
            self._line(line, events)
            pos = m.end()
        if pos < len(data):
            self._pending.append(data[pos:])
        elif data[-1:] == b"\r":
            self._skip_lf = True
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._has_data:
                events.append(SSEEvent(self._event or "message", b"\n".join(self._data), self.last_event_id,
                                       self._block_retry))
            self._reset_block()
            return
        # Fast path: almost every line of an LLM stream is "data: {...}".
        if line.startswith(b"data:"):
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            self._has_data = True
            return
        if line[0] == 0x3A:
            return
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
        if field == b"data":
            self._data.append(value)
            self._has_data = True
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        elif field == b"id":
            if b"\0" not in value:
                self.last_event_id = value.decode("utf-8", "replace")
        elif field == b"retry":
            # "If the field value consists of only ASCII digits": bytes.isdigit is ASCII-only.
            if value and value.isdigit():
                self._block_retry = int(value)
                self.retry_ms = self._block_retry
