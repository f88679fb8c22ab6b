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

Deviation: none in parsing. Reconnection itself (the ``EventSource`` object's job) is not done
here; the caller gets ``last_event_id`` and ``retry_ms`` to do it if it wants.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEDecoder"]

# The three line terminators of the spec; CRLF first so it is taken as one terminator.
_EOL = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched server-sent event.

    Attributes
    ----------
    event : str
        The event type; ``"message"`` when the block had no (or an empty) ``event`` field.
    data : str
        The ``data`` lines of the block joined with ``\\n`` (no trailing newline).
    id : str
        The last event id at dispatch time (set by this or an earlier block); ``""`` if none.
    retry : int or None
        The reconnection time in milliseconds if this block carried a valid ``retry`` field.
    """

    event: str
    data: str
    id: str = ""
    retry: int | None = None


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

    __slots__ = (
        "_utf8",
        "_started",
        "_skip_lf",
        "_pending",
        "_data",
        "_has_data",
        "_event",
        "_block_retry",
        "last_event_id",
        "retry_ms",
    )

    def __init__(self) -> None:
        # errors="replace" is what the spec's "UTF-8 decode" algorithm does with bad bytes.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False
        self._skip_lf = False
        # Pieces of the current, unterminated line; kept as a list so a long line arriving in
        # many small reads is joined once instead of being re-copied on every read.
        self._pending: list[str] = []
        self._data: list[str] = []
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
        text = self._utf8.decode(chunk)
        return self._feed_text(text) if text else []

    def finish(self) -> list[SSEEvent]:
        """End of stream: flush the UTF-8 decoder and discard an unterminated event.

        Returns
        -------
        list of SSEEvent
            Events completed by bytes held back until now (a final line end that was only
            recognisable at the end); usually empty.

        The decoder is reset and may be reused for a new stream; ``last_event_id`` and
        ``retry_ms`` are kept, as an ``EventSource`` keeps them across reconnections.
        """
        text = self._utf8.decode(b"", final=True)
        events = self._feed_text(text) if text else []
        # The spec: "If the file ends in the middle of an event, before the final empty line,
        # the incomplete event is not dispatched" -- and a partial line is part of that event.
        self._utf8.reset()
        self._started = False
        self._skip_lf = False
        self._pending.clear()
        self._reset_block()
        return events

    def _reset_block(self) -> None:
        self._data.clear()
        self._has_data = False
        self._event = ""
        self._block_retry = None

    def _feed_text(self, text: str) -> list[SSEEvent]:
        if not self._started:
            self._started = True
            if text[0] == _BOM:
                text = text[1:]
        if self._skip_lf:
            # The previous text ended with CR, already taken as a line end; an LF here is the
            # second half of that CRLF.
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        events: list[SSEEvent] = []
        if "\r" not in text:
            # Fast path, almost every real stream: LF line ends only, so str.split (a memchr scan
            # in C) finds them; the regex below costs a match attempt at every character, which
            # dominates on the 100 KB payloads of server tool results.
            lines = text.split("\n")
            rest = lines.pop()  # after the last LF: an unterminated line, or ""
            if lines and self._pending:
                self._pending.append(lines[0])
                lines[0] = "".join(self._pending)
                self._pending.clear()
            for line in lines:
                self._line(line, events)
            if rest:
                self._pending.append(rest)
            return events
        pos = 0
        for m in _EOL.finditer(text):
            piece = text[pos : m.start()]
            if self._pending:
                self._pending.append(piece)
                line = "".join(self._pending)
                self._pending.clear()
            else:
                line = piece
            self._line(line, events)
            pos = m.end()
        if pos < len(text):
            self._pending.append(text[pos:])
        elif text[-1] == "\r":
            self._skip_lf = True
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        # Fast path: almost every line of an LLM stream is "data: {...}".
        if line.startswith("data:"):
            value = line[6:] if line[5:6] == " " else line[5:]
            self._data.append(value)
            self._has_data = True
            return
        if line[0] == ":":
            return
        colon = line.find(":")
        if colon < 0:
            field, value = line, ""
        else:
            field = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == " " else line[colon + 1 :]
        if field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry":
            # "If the field value consists of only ASCII digits" -- str.isdigit would also
            # accept other scripts' digits, which the spec does not.
            if value and value.isascii() and value.isdigit():
                self._block_retry = int(value)
                self.retry_ms = self._block_retry
        # Any other field name is ignored, as the spec says.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._has_data:
            events.append(
                SSEEvent(
                    event=self._event or "message",
                    data="\n".join(self._data),
                    id=self.last_event_id,
                    retry=self._block_retry,
                )
            )
        self._reset_block()
