"""Type stubs for ``raygent._native``, the Rust extension (PyO3).

Three parts, one Rust module each: ECMA-48 stripping (``rust/src/ansi.rs``), incremental JSON
(``rust/src/json_stream.rs``) and a buffer pool (``rust/src/pool.rs``).
"""

from typing import Literal, final

__all__ = [
    "AnsiStripper",
    "BufferPool",
    "JsonStream",
    "JsonStreamError",
    "__version__",
    "strip_ansi",
    "strip_ansi_bytes",
]
__version__: str

# --- ANSI / ECMA-48 stripping (rust/src/ansi.rs) ---------------------------------------------

def strip_ansi(text: str, *, render: bool = False) -> str:
    """Remove ECMA-48 control sequences from ``text``; optionally render CR, BS and EL.

    Removed: CSI sequences (private markers ``<=>?``, intermediates, colon sub-parameters);
    OSC strings ended by BEL, ``ESC \\`` or U+009C (an OSC 8 hyperlink keeps only its visible
    text); DCS, SOS, PM and APC strings, ended by ST or, tolerated, BEL; other escape sequences
    (``ESC ( B``, ``ESC 7``, ``ESC =``, ``ESC M``, ``ESC # 8`` ...); and the C1 controls
    U+0080..U+009F, of which U+009B, U+009D, U+0090, U+0098, U+009E and U+009F start
    sequences like their ``ESC`` forms.

    Kept: all text and every C0 control other than ESC (TAB, LF, CR, BS, BEL, NUL ...) and DEL,
    as the ``strip-ansi`` npm package does; CR and BS are not interpreted. CAN (U+0018) and
    SUB (U+001A) abort a sequence and are kept. A C0 control inside a CSI or ESC sequence is
    kept and the sequence goes on (a terminal executes it); inside a control string it is
    part of the string. A character at or above U+00A0 inside a CSI or ESC sequence ends the
    sequence and is kept. An unterminated sequence at the end is dropped.

    With ``render=True`` the line being drawn is also played back as a terminal would, one
    line at a time, so a progress bar redrawn 500 times leaves only its final state:
    CR returns to the start of the line, BS moves one cell left, text overwrites the cells
    under the cursor, EL (``CSI K``: 0 to the end, 1 from the start, 2 the whole line, and
    DECSEL ``CSI ? K``) erases, and CHA/HPA (``CSI n G``, ``CSI n ```), CUF/HPR (``CSI n C``,
    ``CSI n a``) and CUB (``CSI n D``) move within the line; LF ends the line. A cell is one
    code point; TAB, BEL and other kept controls are one cell each. Erased cells become
    spaces only when text is written after them (no trailing blanks).
    Not emulated: cursor movement across lines (CUU, CUD, CUP, CNL/CPL, ``ESC M`` ...),
    scroll regions, erase in display, insert/delete character or line, tab stops, wrapping
    at a screen width, the width of wide or combining characters, the alternate screen;
    those sequences are removed and their effect is lost (a multi-line progress display
    that moves the cursor up keeps every redraw). A line longer than 256 KiB is emitted in
    pieces of that size, as if wrapped; CR and BS then act within the last piece.

    Parameters
    ----------
    text : str
        Any text, including lone surrogates (e.g. from ``surrogateescape`` decoding), which
        are kept.
    render : bool, default False
        Apply CR, BS and the in-line cursor and erase sequences as described above.

    Returns
    -------
    str
        The text with every control sequence removed (and, with ``render``, the lines as
        drawn); ``text`` itself (the same object) when it contains no ESC and no C1 control
        (and, with ``render``, no CR and no BS). Without ``render`` the text is stripped on
        the ``str``'s own storage (1, 2 or 4 bytes per character, no UTF-8 round trip) and
        written into a ``str`` made at ``text``'s length; when at most half of it was
        removed, that ``str`` is cut in place rather than reallocated, so it may hold up to
        twice the memory of an exact copy (``sys.getsizeof`` reports the exact size).

    Raises
    ------
    TypeError
        If ``text`` is not a ``str``.

    Sources: ECMA-48 5th ed. (1991) sections 5.3-5.6 and 8.3; ECMA-35 section 13; the DEC
    VT500 parser (https://vt100.net/emu/dec_ansi_parser). Deviations from the latter are
    listed in the crate docs of ``rust/src/ansi.rs``.
    """

def strip_ansi_bytes(data: bytes, *, render: bool = False) -> bytes:
    """Remove ECMA-48 control sequences from raw terminal bytes.

    Same sequences, the same kept controls and the same ``render`` mode as
    :func:`strip_ansi` (cells are counted by UTF-8 lead bytes). C1 controls are the
    UTF-8 encodings of U+0080..U+009F (``C2 80`` .. ``C2 9F``) and any lone byte
    0x80..0x9F that is not part of a valid UTF-8 sequence; a byte inside a valid multi-byte
    character (``A9`` of "é" = ``C3 A9``, ``80`` of "›" = ``E2 80 BA``) is never touched.
    Other invalid UTF-8 bytes are passed through unchanged. For UTF-8 input,
    ``strip_ansi_bytes(s.encode()) == strip_ansi(s).encode()``.

    Parameters
    ----------
    data : bytes
        Raw bytes as a terminal program wrote them.
    render : bool, default False
        Apply CR, BS and the in-line cursor and erase sequences (see :func:`strip_ansi`).

    Returns
    -------
    bytes
        The bytes with every control sequence removed; ``data`` itself (the same object) when
        it is valid UTF-8 with no ESC and no C1 control (and, with ``render``, no CR or BS).

    Raises
    ------
    TypeError
        If ``data`` is not ``bytes`` (``bytearray`` and ``memoryview`` are not accepted).
    """

@final
class AnsiStripper:
    """Streaming ECMA-48 stripper: state is kept across chunks, nothing is buffered.

    For ``str`` chunks, ``"".join(feed(c) for c in chunks) + finish()`` equals
    ``strip_ansi("".join(chunks))`` for any chunking, even one that cuts an escape sequence
    in two. For ``bytes`` chunks it equals
    ``strip_ansi_bytes(b"".join(chunks)).decode("utf-8", "replace")``, even when a chunk
    boundary cuts a UTF-8 character: the stripped bytes are decoded incrementally, invalid
    bytes becoming U+FFFD. Between calls the stripper holds only the parser state and at most
    three bytes of a cut character.

    The first chunk fixes the stream's kind; feeding the other kind before :meth:`finish`
    raises ``TypeError`` and changes nothing.

    With ``render=True`` it renders as :func:`strip_ansi` does with ``render=True``, with the
    same guarantee for any chunking; :meth:`feed` then returns only lines that LF has ended,
    and holds the current line (at most 256 KiB, see :func:`strip_ansi`) until then or until
    :meth:`finish`.

    Parameters
    ----------
    render : bool, default False
        Apply CR, BS and the in-line cursor and erase sequences.
    """

    def __new__(cls, *, render: bool = False) -> AnsiStripper: ...
    @property
    def render(self) -> bool:
        """Whether this stripper renders (fixed at construction)."""
    def feed(self, chunk: str | bytes) -> str:
        """Strip one chunk; return the text that is complete so far (possibly ``""``).

        A ``str`` chunk with no ESC and no C1 control, fed between sequences without render,
        is returned as it is (the same object).

        Raises ``TypeError`` if ``chunk`` is neither ``str`` nor ``bytes``, or is not of the
        kind this stream started with.
        """
    def finish(self) -> str:
        """End the stream and return its last text.

        An unterminated sequence is dropped and a held incomplete UTF-8 character becomes
        U+FFFD. The stripper is reset: it can start a new stream of either kind.
        """

# --- Incremental JSON (rust/src/json_stream.rs) -----------------------------------------------

class JsonStreamError(ValueError):
    """Malformed JSON fed to :class:`JsonStream`.

    ``str(error)`` is ``"<reason> at byte <offset>"``, e.g. ``"expected ',' or '}' at byte 17"``.

    Attributes
    ----------
    offset : int
        Byte offset (from the first byte ever fed, across deltas) where the input stopped being
        valid JSON; ``bytes_fed`` for ``"unexpected end of input"``.
    reason : str
        What was wrong, e.g. ``"expected ',' or '}'"``, ``"lone surrogate in \\u escape"``,
        ``"nesting deeper than max_depth"``.
    """

    offset: int
    reason: str

@final
class JsonStream:
    """Incremental RFC 8259 parser for JSON that arrives in deltas (tool-call arguments).

    Each :meth:`feed` does work proportional to the delta; nothing already parsed is parsed
    again, and a value is converted to Python once, when it completes. Nesting is kept on an
    explicit stack (no recursion), up to ``max_depth``.

    Strict RFC 8259 (sections 2-8): whitespace is only space, tab, LF and CR; numbers without
    leading zeros, ``+``, ``.5``, ``1.``, ``NaN`` or ``Infinity``; strings without raw control
    characters and with only the RFC escapes; input must be UTF-8 without a BOM (a code point
    may be split across deltas); exactly one top-level value, then only whitespace.

    Where JSONTestSuite leaves the choice to the parser (``i_`` cases) this follows orjson,
    except for float overflow:

    - ``\\u`` escapes that leave a lone or inverted UTF-16 surrogate are rejected.
    - Integers of any size become exact ``int`` (like ``json.loads``; orjson gives a float);
      one longer than ``sys.get_int_max_str_digits()`` fails the stream, as ``json.loads``
      fails.
    - Floats are the same value as ``json.loads`` (correctly rounded); an exponent overflow
      such as ``1e400`` gives ``inf`` (orjson rejects it) and underflow gives ``0.0``.
    - Duplicate keys: the last value wins, at the key's first position.
    - A UTF-8 byte order mark is rejected (``"UTF-8 byte order mark is not allowed"``), as are
      ``NaN``, ``Infinity`` and ``-Infinity``.

    Costs: :meth:`feed` is proportional to the delta (plus, with ``events=True``, one small
    tuple per event); :meth:`events` and :meth:`values` to what they hand back;
    :meth:`partial` to the open containers and the open string it must copy, never to the
    text already parsed. Following a long string through :meth:`partial` after every delta is
    therefore quadratic by nature (each result holds the whole string so far); events are the
    cheap path: measured here, ``feed()`` + ``events()`` costs about 0.23 µs per 1-8 byte
    delta whether the document is 1 KB or 100 KB (``benches/test_bench_json.py``).

    Parameters
    ----------
    max_depth : int, default 512
        Deepest nesting of arrays and objects accepted; deeper raises :class:`JsonStreamError`
        (reason ``"nesting deeper than max_depth"``) at the opening bracket.
    multiple : bool, default False
        Accept a stream of top-level values (NDJSON, or JSON texts concatenated with or
        without whitespace between them: ``{"a":1}{"b":2}``, ``[1]"x"``; two numbers need
        whitespace between them, as ``12`` is one number). Each value, once complete, is
        handed over by :meth:`values`; :meth:`finish` returns those not yet taken.
    events : bool, default False
        Record events for :meth:`events`. The same values are built either way (a container's
        ``"value"`` event carries the container, and :meth:`partial` / :meth:`finish` keep
        working); the extra cost is one ``(kind, path, value)`` tuple per event. Leave it off
        when nobody drains them: undrained events are kept.

    Raises
    ------
    JsonStreamError
        From :meth:`feed` as soon as the input cannot be the prefix of a JSON text (including
        anything but whitespace after the complete value), and from :meth:`finish` if the text
        is incomplete. After an error the stream stays failed: :meth:`feed`, :meth:`partial`
        and :meth:`finish` raise the same error again.
    """

    def __new__(cls, *, max_depth: int = 512, multiple: bool = False, events: bool = False) -> JsonStream: ...
    def feed(self, delta: str | bytes) -> None:
        """Parse ``delta`` on top of what was fed before.

        Parameters
        ----------
        delta : str or bytes
            The next piece of the text: UTF-8 bytes, or text (taken as its UTF-8 encoding; a
            ``str`` holding a lone surrogate is invalid UTF-8 and fails the stream). ``str`` and
            ``bytes`` deltas may be mixed.

        Raises
        ------
        JsonStreamError
            The input is no longer a prefix of a JSON text.
        TypeError
            ``delta`` is neither ``str`` nor ``bytes``.
        """
    def events(self) -> list[tuple[Literal["delta", "value"], tuple[str | int, ...], object]]:
        """Drain the events produced by the deltas fed since the last call, in order.

        Each event is ``(kind, path, value)``; ``path`` is the tuple of keys (``str``) and array
        indices (``int``) from the root to the value, ``()`` for the top-level value; with
        ``multiple=True`` it starts with the value's ordinal in the stream (``(0, "a")``).

        - ``("delta", path, text)``: ``text`` was appended to the string value at ``path``.
          A string value's first delta comes in the same drain as its opening quote, even if
          it is ``""``; later deltas carry whole characters only (never half an escape or a
          split UTF-8 sequence), at most one per :meth:`feed`; the deltas of one string
          concatenate to its final value, and are followed by its ``"value"`` event.
        - ``("value", path, value)``: the value at ``path`` is complete: a scalar, a string,
          or a container when it closes (children's events come first). Object keys produce
          no events; a number completes on the byte after it (or at :meth:`finish`).

        For ``{"a": "hi", "b": [1]}`` fed at once: ``("delta", ("a",), "hi")``,
        ``("value", ("a",), "hi")``, ``("value", ("b", 0), 1)``, ``("value", ("b",), [1])``,
        ``("value", (), {"a": "hi", "b": [1]})``. The sequence of ``"value"`` events, and the
        concatenated deltas of each string, do not depend on how the text is cut into deltas.

        Values are shared with :meth:`partial` and :meth:`finish`: do not mutate them.

        Raises
        ------
        ValueError
            The stream was made without ``events=True``.
        """
    def values(self) -> list[object]:
        """Drain the top-level values completed since the last call (``multiple=True`` only).

        A top-level number is complete once a byte after it arrives (``1 2`` gives ``1`` at
        once, ``2`` at :meth:`finish`).

        Raises
        ------
        ValueError
            The stream was made without ``multiple=True``.
        """
    def partial(self) -> object:
        """The best value so far, never re-parsed.

        Cost: proportional to the size of what it hands back, that is the open containers on
        the path to the innermost open value (each copied shallowly: completed children are
        shared, not copied) plus the open string's text; the completed subtrees were built once
        when they completed. With ``multiple=True``, the value currently open (``None`` between
        values).

        Complete members and elements, and an open string value's text so far (whole characters
        only, no half escape); an incomplete number (``12`` may grow), literal (``tru``), key,
        or a member whose value has not started, is left out: ``{"a": "hel`` gives
        ``{"a": "hel"}``, ``{"a": 12`` gives ``{}``, ``[1, 2, `` gives ``[1, 2]``. ``None``
        before the first value starts (or while a top-level number or literal is incomplete).

        Returns
        -------
        object
            Fresh copies of the open containers; completed values inside them are shared
            between successive results and with :meth:`finish`'s result, so do not mutate them.

        Raises
        ------
        JsonStreamError
            The stream has failed.
        """
    def finish(self) -> object:
        """End of input: return the complete value.

        A top-level number still open (``123``) is completed here. May be called again; it
        returns the same value. With ``multiple=True``: the list of values not yet taken by
        :meth:`values` (possibly empty; a second call returns ``[]``), and an open value is an
        error.

        Raises
        ------
        JsonStreamError
            The text is incomplete (reason ``"unexpected end of input"``, offset ``bytes_fed``)
            or the stream failed earlier.
        """
    @property
    def bytes_fed(self) -> int:
        """Total bytes fed so far (UTF-8 bytes for ``str`` deltas), failed deltas included."""
    @property
    def done(self) -> bool:
        """True once a complete top-level value has been parsed and no error followed; with
        ``multiple=True``, true while no value is open (between values, before the first)."""

# --- Buffer pool (rust/src/pool.rs) -------------------------------------------------------------

@final
class BufferPool:
    """A bounded pool of reusable ``bytearray`` encode buffers.

    For ``msgspec.msgpack.Encoder.encode_into`` when the caller can use the buffer itself
    (write it to a file or socket, decode it) and give it back. A released buffer is emptied
    but keeps its memory (``bytearray.clear()`` would free it); CPython still shrinks a
    bytearray later resized to under half its allocation, so the memory is reused best by
    messages of similar size.

    Not in ``raygent.messages.encode``'s hot path: when ``bytes`` are needed (what Ray ships)
    plain ``Encoder.encode`` wins at every size, because the copy out of the buffer costs more
    than the allocation saved. Best of 5 on the project's 2-core machine, µs per encode, plain
    ``encode`` / ``encode_into`` a reused bytearray + ``bytes()`` / pooled + ``bytes()``:
    54 B 0.13 / 0.28 / 0.48; 2 KB 0.3-0.5 / 0.63 / 1.15; 64 KB 1.7 / 3.5 / 4.2; 4 MB 110 / 252
    / 256 (``benches/test_bench_pool.py``). Traced peak memory per encode: 1.5x the message for
    plain ``encode``, plus about 1.5x kept per pooled buffer.

    Parameters
    ----------
    max_buffers : int, default 64
        Buffers kept for reuse; a release beyond that drops the buffer.
    max_buffer_bytes : int, default 4 MiB
        A released buffer whose allocation exceeds this many bytes is dropped instead of kept
        (bounds idle memory).
    """

    def __new__(cls, *, max_buffers: int = 64, max_buffer_bytes: int = 4 * 1024 * 1024) -> BufferPool: ...
    def acquire(self) -> bytearray:
        """An empty ``bytearray``: the most recently released one (a hit) or a new one (a miss)."""
    def release(self, buffer: bytearray) -> None:
        """Empty ``buffer`` and keep it for reuse, unless the pool is full or it is too large.

        The caller must not use ``buffer`` afterwards.

        Raises
        ------
        ValueError
            ``buffer`` is already in the pool.
        BufferError
            ``buffer`` has live exports (an open ``memoryview``); it is left untouched.
        TypeError
            ``buffer`` is not a ``bytearray``.
        """
    @property
    def hits(self) -> int:
        """Acquires served from the pool."""
    @property
    def misses(self) -> int:
        """Acquires that created a new buffer."""
    @property
    def available(self) -> int:
        """Buffers currently pooled."""
