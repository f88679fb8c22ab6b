"""SSE decoder against the WHATWG HTML §9.2 "Interpreting an event stream" rules."""

from __future__ import annotations

import random
import re

import pytest

from raygent.providers._sse import SSEDecoder, SSEEvent


def decode_all(pieces: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.finish())
    return events


def reference(body: bytes) -> list[tuple[str, str, str, int | None]]:
    """Naive whole-body reading of the spec, written independently of the decoder."""
    text = body.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split(r"\r\n|\r|\n", text)
    # The last element is the unterminated rest of the stream; the spec discards it.
    lines = lines[:-1]
    events = []
    data: list[str] | None = None
    event_type = ""
    last_id = ""
    retry = None
    for line in lines:
        if line == "":
            if data is not None:
                events.append((event_type or "message", "\n".join(data), last_id, retry))
            data, event_type, retry = None, "", None
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data = (data or []) + [value]
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            retry = int(value)
    return events


def as_tuples(events: list[SSEEvent]) -> list[tuple[str, str, str, int | None]]:
    return [(e.event, e.data, e.id, e.retry) for e in events]


def test_fields_and_defaults():
    events = decode_all([b"event: add\ndata: 1\nid: 7\nretry: 1500\n\ndata:2\n\n"])
    assert events == [SSEEvent("add", "1", "7", 1500), SSEEvent("message", "2", "7", None)]


def test_only_one_leading_space_removed_and_colon_in_value_kept():
    events = decode_all([b"data:  two spaces: and a colon\n\n"])
    assert events[0].data == " two spaces: and a colon"


def test_field_without_colon_has_empty_value():
    # "data" alone appends an empty line; "event" alone resets the type to the default.
    events = decode_all([b"data\ndata\n\nevent\ndata: x\n\n"])
    assert as_tuples(events) == [("message", "\n", "", None), ("message", "x", "", None)]


def test_comments_ignored():
    events = decode_all([b": OPENROUTER PROCESSING\n\n:\ndata: a\n: between\ndata: b\n\n"])
    assert as_tuples(events) == [("message", "a\nb", "", None)]


def test_multiline_data_joined_with_newline():
    events = decode_all([b"data: first\ndata: second\ndata:\ndata: fourth\n\n"])
    assert events[0].data == "first\nsecond\n\nfourth"


def test_block_without_data_is_not_dispatched_but_sets_state():
    decoder = SSEDecoder()
    assert decoder.feed(b"event: ping\nid: 42\nretry: 10\n\n") == []
    assert decoder.last_event_id == "42"
    assert decoder.retry_ms == 10
    # The event type of the data-less block does not leak into the next one.
    assert decoder.feed(b"data: x\n\n") == [SSEEvent("message", "x", "42", None)]


def test_invalid_retry_and_id_with_nul_ignored():
    decoder = SSEDecoder()
    events = decoder.feed(b"id: ok\nretry: 12a\nretry: \xd9\xa3\ndata: x\nid: bad\x00id\n\n")
    assert events == [SSEEvent("message", "x", "ok", None)]
    assert decoder.retry_ms is None


def test_empty_id_resets_last_event_id():
    events = decode_all([b"id: 1\ndata: a\n\nid\ndata: b\n\n"])
    assert [e.id for e in events] == ["1", ""]


def test_unknown_fields_ignored():
    assert as_tuples(decode_all([b"foo: bar\ndata: x\nDATA: y\n\n"])) == [("message", "x", "", None)]


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"], ids=["lf", "cr", "crlf"])
def test_line_endings(eol):
    body = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    assert as_tuples(decode_all([body])) == [("e", "a\nb", "", None), ("message", "c", "", None)]


def test_mixed_line_endings():
    body = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"
    assert as_tuples(decode_all([body])) == [("message", "a\nb\nc", "", None), ("message", "d", "", None)]


def test_crlf_split_across_chunks_is_one_line_end():
    # CR ends one read and LF starts the next: one terminator, so no empty line, no dispatch.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [SSEEvent("message", "a\nb")]
    assert decoder.feed(b"\n") == []


def test_cr_then_cr_across_chunks_is_two_line_ends():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [SSEEvent("message", "a")]


def test_cr_then_empty_read_then_lf():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    # Half a UTF-8 code point decodes to no text: the pending CR must still absorb the LF.
    assert decoder.feed(b"\n\xc3") == []
    assert decoder.feed(b"\xa9\r\n\r\n") == [SSEEvent("message", "a")]


def test_bom_dropped_only_at_start():
    assert decode_all([b"\xef\xbb\xbfdata: x\n\n"])[0].data == "x"
    # A BOM split across reads is still the stream's first character.
    assert decode_all([b"\xef", b"\xbb", b"\xbfdata: x\n\n"])[0].data == "x"
    # Only one is dropped: a second one starts the field name, which is then unknown.
    assert decode_all([b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n"]) == []
    assert decode_all([b"data: \xef\xbb\xbfx\n\n"])[0].data == "\ufeffx"


def test_utf8_split_inside_code_point_and_invalid_bytes():
    body = "data: héllo → 世界 🎉\n\n".encode()
    for cut in range(len(body) + 1):
        assert decode_all([body[:cut], body[cut:]])[0].data == "héllo → 世界 🎉"
    assert decode_all([b"data: a\xffb\n\n"])[0].data == "a\ufffdb"


def test_unterminated_event_discarded_at_end():
    assert decode_all([b"data: complete\n\ndata: cut"]) == [SSEEvent("message", "complete")]
    # A final line end without the empty line is still an unfinished event.
    assert decode_all([b"data: cut\n"]) == []


def test_decoder_reusable_after_finish():
    decoder = SSEDecoder()
    decoder.feed(b"id: 5\ndata: half")
    assert decoder.finish() == []
    assert decoder.feed(b"\xef\xbb\xbfdata: next\n\n") == [SSEEvent("message", "next", "5")]


def test_long_line_in_many_reads():
    payload = "x" * 200_000
    body = f"data: {payload}\n\n".encode()
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    assert decode_all(pieces) == [SSEEvent("message", payload)]


SAMPLE = (
    "\ufeff: comment line\r\n"
    "retry: 3000\n"
    "event: first\r"
    "data: héllo\r\n"
    "data:  wörld 世界\n"
    "id: 1\n"
    "\r\n"
    "data\n"
    "\n"
    "event: second\n"
    "data: {\"a\": [1, 2]}\r"
    "\r"
    ":tail comment\n"
    "id: ids\0bad\n"
    "data: last 🎉\n"
    "\n"
    "data: unterminated"
).encode()


def test_sample_reference_is_meaningful():
    expected = reference(SAMPLE)
    assert expected == [
        ("first", "héllo\n wörld 世界", "1", 3000),
        ("message", "", "1", None),
        ("second", '{"a": [1, 2]}', "1", None),
        ("message", "last 🎉", "1", None),
    ]


def test_every_split_point_matches_reference():
    expected = reference(SAMPLE)
    for cut in range(len(SAMPLE) + 1):
        assert as_tuples(decode_all([SAMPLE[:cut], SAMPLE[cut:]])) == expected, cut


def test_every_pair_of_split_points_matches_reference():
    expected = reference(SAMPLE)
    n = len(SAMPLE)
    for a in range(n + 1):
        for b in range(a, n + 1):
            got = as_tuples(decode_all([SAMPLE[:a], SAMPLE[a:b], SAMPLE[b:]]))
            assert got == expected, (a, b)


def test_byte_by_byte_and_random_cuts_match_reference():
    expected = reference(SAMPLE)
    assert as_tuples(decode_all([SAMPLE[i : i + 1] for i in range(len(SAMPLE))])) == expected
    rng = random.Random(20240601)
    for _ in range(300):
        pieces, pos = [], 0
        while pos < len(SAMPLE):
            size = rng.randint(0, 9)
            pieces.append(SAMPLE[pos : pos + size])
            pos += size
        assert as_tuples(decode_all(pieces)) == expected


def test_random_generated_streams_match_reference():
    # Bodies assembled from spec-relevant atoms (each line end, comments, empty values, BOMs,
    # multi-byte text), cut at random points, against the naive reference.
    rng = random.Random(7)
    atoms = [
        b"data: x", b"data:y", b"data", b"data:  z", b"event: e", b"event:", b"id: 9", b"id",
        b"retry: 15", b"retry: x1", b": c", b":", b"\xc3\xa9", b"\xf0\x9f\x8e\x89", b"\xef\xbb\xbf",
        b"\n", b"\r", b"\r\n", b"\n\n", b"\r\r", b"\r\n\r\n", b"field",
    ]
    for _ in range(400):
        body = b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 30)))
        expected = reference(body)
        pieces, pos = [], 0
        while pos < len(body):
            size = rng.randint(1, 5)
            pieces.append(body[pos : pos + size])
            pos += size
        assert as_tuples(decode_all(pieces)) == expected, body
