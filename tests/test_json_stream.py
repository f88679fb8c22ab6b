"""JsonStream: RFC 8259 conformance on JSONTestSuite, partial values, errors and limits."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import orjson
import pytest

from raygent._native import JsonStream, JsonStreamError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SUITE = DATA / "json_test_suite" / "test_parsing"
TRANSFORM = DATA / "json_test_suite" / "test_transform"


def _suite(prefix: str) -> list[str]:
    if not SUITE.is_dir():
        return []
    return sorted(p.name for p in SUITE.iterdir() if p.name.startswith(prefix))


needs_suite = pytest.mark.skipif(
    not SUITE.is_dir(), reason=f"JSONTestSuite not found at {SUITE} (../shared/data absent)"
)

# Implementation-defined cases where JsonStream deliberately differs from orjson: a float whose
# exponent overflows is accepted as ±inf, the value json.loads gives (orjson rejects it).
FLOAT_OVERFLOW_ACCEPTED = {
    "i_number_huge_exp.json",
    "i_number_neg_int_huge_exp.json",
    "i_number_pos_double_huge_exp.json",
    "i_number_real_neg_overflow.json",
    "i_number_real_pos_overflow.json",
}


def parse(data: bytes | str, step: int | None = None, **kwargs: int) -> object:
    stream = JsonStream(**kwargs)
    if step is None:
        stream.feed(data)
    else:
        for i in range(0, len(data), step):
            stream.feed(data[i : i + step])
    return stream.finish()


def same(a: object, b: object) -> bool:
    """Equality that also holds for NaN and checks types (1 != 1.0, True != 1); iterative,
    so 500-deep documents compare without RecursionError."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):  # type: ignore[arg-type]
                return False
        elif isinstance(x, list):
            if len(x) != len(y):  # type: ignore[arg-type]
                return False
            pending.extend(zip(x, y))  # type: ignore[call-overload]
        elif isinstance(x, dict):
            if list(x) != list(y):  # type: ignore[call-overload]
                return False
            pending.extend((x[k], y[k]) for k in x)  # type: ignore[index]
        elif x != y:
            return False
    return True


@needs_suite
@pytest.mark.parametrize("step", [None, 1], ids=["whole", "1-byte"])
@pytest.mark.parametrize("name", _suite("y_"))
def test_accepts_every_y_file_like_json_loads(name: str, step: int | None) -> None:
    data = (SUITE / name).read_bytes()
    assert same(parse(data, step), json.loads(data))


@needs_suite
@pytest.mark.parametrize("step", [None, 1], ids=["whole", "1-byte"])
@pytest.mark.parametrize("name", _suite("n_"))
def test_rejects_every_n_file(name: str, step: int | None) -> None:
    data = (SUITE / name).read_bytes()
    with pytest.raises(JsonStreamError) as info:
        parse(data, step)
    assert 0 <= info.value.offset <= len(data)
    assert str(info.value) == f"{info.value.reason} at byte {info.value.offset}"


@needs_suite
@pytest.mark.parametrize("step", [None, 1], ids=["whole", "1-byte"])
@pytest.mark.parametrize("name", _suite("i_"))
def test_i_files_follow_orjson_except_float_overflow(name: str, step: int | None) -> None:
    data = (SUITE / name).read_bytes()
    try:
        expected: object = orjson.loads(data)
        orjson_accepts = True
    except orjson.JSONDecodeError:
        orjson_accepts = False
    if name in FLOAT_OVERFLOW_ACCEPTED:
        assert not orjson_accepts, f"orjson now accepts {name}; revisit the exception list"
        assert same(parse(data, step), json.loads(data))
        assert math.isinf(parse(data, step)[0])  # type: ignore[index]
        return
    if not orjson_accepts:
        with pytest.raises(JsonStreamError):
            parse(data, step)
        return
    got = parse(data, step)
    assert same(got, json.loads(data))
    if name.startswith("i_number_too_big") or name == "i_number_very_big_negative_int.json":
        # Integers beyond 64 bits stay exact Python ints (json.loads semantics) where orjson
        # falls back to the nearest float.
        assert isinstance(got[0], int)  # type: ignore[index]
        assert [float(got[0])] == expected  # type: ignore[index]
    else:
        assert same(got, expected)


@needs_suite
def test_deepest_n_file_is_a_clean_depth_error() -> None:
    data = (SUITE / "n_structure_100000_opening_arrays.json").read_bytes()
    stream = JsonStream()
    with pytest.raises(JsonStreamError) as info:
        stream.feed(data)
    assert isinstance(info.value, ValueError)
    assert info.value.offset == 512
    assert "max_depth" in info.value.reason


@pytest.mark.skipif(not TRANSFORM.is_dir(), reason=f"JSONTestSuite not found at {TRANSFORM}")
@pytest.mark.parametrize(
    "name", sorted(p.name for p in TRANSFORM.iterdir()) if TRANSFORM.is_dir() else []
)
def test_transform_files_match_json_loads_or_are_rejected_like_orjson(name: str) -> None:
    data = (TRANSFORM / name).read_bytes()
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        # Lone surrogates and invalid code points: rejected, as orjson does.
        with pytest.raises(JsonStreamError):
            parse(data)
        return
    assert same(parse(data), json.loads(data))
    assert same(parse(data, 1), json.loads(data))


TOOL_CALL = (
    '{"path": "src/main.py", "content": "line1\\nline2 \\u00e9 \\ud83d\\ude00", '
    '"n": [1, 2.5, -3e2, true, null]}'
)


def test_partial_progression_on_tool_call_arguments() -> None:
    stream = JsonStream()
    seen = []
    raw = TOOL_CALL.encode()
    for i in range(0, len(raw), 3):
        stream.feed(raw[i : i + 3])
        seen.append(stream.partial())
    assert seen[0] == {}  # b'{"p': the key is incomplete
    assert {"path": "src/main.py"} in seen
    assert any(s.get("path") == "src/m" for s in seen)  # type: ignore[union-attr]
    contents = [s["content"] for s in seen if "content" in s]  # type: ignore[operator,index]
    assert contents[0] == ""
    # The open string only ever grows, and never holds half an escape.
    for a, b in zip(contents, contents[1:]):
        assert b.startswith(a)
    assert all("\\" not in c for c in contents)
    assert contents[-1] == "line1\nline2 é 😀"
    lists = [s["n"] for s in seen if "n" in s]  # type: ignore[operator,index]
    for a, b in zip(lists, lists[1:]):
        assert b[: len(a)] == a
    assert [1, 2.5, -300.0, True] in lists  # null is incomplete until its last byte
    assert stream.done
    assert seen[-1] == json.loads(TOOL_CALL)
    assert stream.finish() == json.loads(TOOL_CALL)
    assert stream.bytes_fed == len(raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        ("12", None),
        ('"hel', "hel"),
        ("{", {}),
        ('{"a', {}),
        ('{"a"', {}),
        ('{"a": ', {}),
        ('{"a": 12', {}),
        ('{"a": tru', {}),
        ('{"a": true', {"a": True}),
        ('{"a": "hel', {"a": "hel"}),
        ('{"a": "x\\u00', {"a": "x"}),
        ("[1, 2, ", [1, 2]),
        ("[1, 2", [1]),
        ('[{"a": [1, {"b": "c', [{"a": [1, {"b": "c"}]}]),
    ],
)
def test_partial_examples(text: str, expected: object) -> None:
    stream = JsonStream()
    stream.feed(text)
    assert stream.partial() == expected


def test_partial_results_are_independent_snapshots() -> None:
    stream = JsonStream()
    stream.feed('{"a": [1, 2')
    first = stream.partial()
    stream.feed(', 3], "b": "x"}')
    assert first == {"a": [1]}
    assert stream.partial() == {"a": [1, 2, 3], "b": "x"}


def test_error_offset_and_message() -> None:
    stream = JsonStream()
    with pytest.raises(JsonStreamError) as info:
        stream.feed(b"[1,]")
    assert (info.value.offset, info.value.reason) == (3, "expected a value")
    assert str(info.value) == "expected a value at byte 3"
    # The offset counts from the first byte ever fed, across deltas.
    stream = JsonStream()
    stream.feed('{"a": 1')
    with pytest.raises(JsonStreamError) as info:
        stream.feed(' "b"}')
    assert (info.value.offset, info.value.reason) == (8, "expected ',' or '}'")


def test_stream_stays_failed() -> None:
    stream = JsonStream()
    with pytest.raises(JsonStreamError):
        stream.feed("[1,]")
    for call in (lambda: stream.feed("2]"), stream.finish, stream.partial):
        with pytest.raises(JsonStreamError) as info:
            call()
        assert info.value.offset == 3


def test_finish_on_incomplete_input() -> None:
    stream = JsonStream()
    stream.feed('{"a": [1')
    with pytest.raises(JsonStreamError) as info:
        stream.finish()
    assert (info.value.offset, info.value.reason) == (8, "unexpected end of input")


def test_top_level_number_completed_by_finish() -> None:
    stream = JsonStream()
    stream.feed("12")
    stream.feed("3")
    assert stream.partial() is None
    assert not stream.done
    assert stream.finish() == 123
    assert stream.done


def test_big_ints_stay_exact_and_floats_match_json_loads() -> None:
    text = "[123456789012345678901234567890, -9223372036854775809, 1.000000000000000005, 1e400, -1e400, 5e-400, -0.0, -0]"
    got = parse(text, 1)
    assert same(got, json.loads(text))
    assert got[0] == 123456789012345678901234567890  # type: ignore[index]
    assert math.copysign(1.0, got[6]) == -1.0  # type: ignore[index]


def test_ints_beyond_python_digit_limit_fail_like_json_loads() -> None:
    limit = sys.get_int_max_str_digits()
    if limit == 0:
        pytest.skip("int digit limit disabled in this interpreter")
    text = "[" + "7" * (limit + 1) + "]"
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(JsonStreamError) as info:
        parse(text)
    assert info.value.offset == 1


def test_duplicate_keys_last_wins() -> None:
    text = '{"a": 1, "b": 2, "a": {"c": 3}}'
    assert parse(text) == json.loads(text) == {"a": {"c": 3}, "b": 2}
    assert list(parse(text)) == ["a", "b"]  # type: ignore[arg-type]


def test_depth_limit() -> None:
    assert parse("[" * 4 + "]" * 4, max_depth=4) == [[[[]]]]
    with pytest.raises(JsonStreamError) as info:
        parse("[" * 5 + "]" * 5, max_depth=4)
    assert isinstance(info.value, ValueError)
    assert info.value.offset == 4
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(JsonStreamError):
        parse(deep)
    # A deep value within a raised limit converts to Python without recursion.
    value = parse(deep, max_depth=100_000)
    for _ in range(99_999):
        value = value[0]  # type: ignore[index]
    assert value == []


def test_str_and_bytes_deltas_mix() -> None:
    stream = JsonStream()
    stream.feed('{"é": ')
    stream.feed(b'"\xf0\x9f')
    stream.feed(b'\x98\x80"')
    stream.feed("}")
    assert stream.finish() == {"é": "😀"}
    assert stream.bytes_fed == len('{"é": "😀"}'.encode())


def test_str_with_lone_surrogate_is_invalid_utf8() -> None:
    stream = JsonStream()
    with pytest.raises(JsonStreamError) as info:
        stream.feed('["a\ud800"]')
    assert (info.value.offset, info.value.reason) == (3, "invalid UTF-8 in string")


def test_feed_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        JsonStream().feed(bytearray(b"[]"))  # type: ignore[arg-type]


def test_done_and_trailing_data() -> None:
    stream = JsonStream()
    assert not stream.done
    stream.feed("[1, 2]")
    assert stream.done
    stream.feed(" \n\t\r")
    assert stream.done
    with pytest.raises(JsonStreamError) as info:
        stream.feed(" [3]")
    assert (info.value.offset, info.value.reason) == (11, "unexpected data after the JSON value")
    assert not stream.done
    assert stream.bytes_fed == 14


def test_bom_and_non_finite_literals_rejected() -> None:
    for text in (b"\xef\xbb\xbf{}", b"NaN", b"[Infinity]", b"[-Infinity]", b"[1.]", b"[.5]", b"[+1]", b"[01]"):
        with pytest.raises(JsonStreamError):
            parse(text)


def test_completed_subtrees_are_built_once_and_shared() -> None:
    stream = JsonStream()
    stream.feed('{"done": {"x": [1, 2]}, "open": [3, ')
    first = stream.partial()
    stream.feed("4")
    second = stream.partial()
    assert first == {"done": {"x": [1, 2]}, "open": [3]}
    assert second == first
    # The completed member is the same Python object each time, not a fresh conversion; the
    # open containers are fresh copies.
    assert first["done"] is second["done"]  # type: ignore[index]
    assert first is not second
    assert first["open"] is not second["open"]  # type: ignore[index]


# --- exact semantics, one named test each --------------------------------------------------------


def test_semantics_duplicate_keys_last_value_wins_at_first_position() -> None:
    text = '{"a": 1, "b": 2, "a": 3}'
    assert parse(text, 1) == json.loads(text) == orjson.loads(text) == {"a": 3, "b": 2}
    assert list(parse(text)) == ["a", "b"]  # type: ignore[arg-type]


def test_semantics_big_ints_are_exact_python_ints() -> None:
    for text in ("18446744073709551616", "-9223372036854775809", "1" + "0" * 400):
        got = parse(text, 3)
        assert type(got) is int and got == int(text) == json.loads(text)


def test_semantics_floats_equal_json_loads() -> None:
    for text in ("0.1", "1.7976931348623157e308", "4.9e-324", "2.2250738585072011e-308", "-0.0", "1E+2", "123456789.123456789e-5"):
        got = parse(text, 1)
        assert type(got) is float and got == json.loads(text) == orjson.loads(text)
        assert math.copysign(1.0, got) == math.copysign(1.0, json.loads(text))  # type: ignore[arg-type]
    # Overflow: json.loads' value (orjson rejects it).
    assert parse("[1e400, -1e400, 1e-400]") == json.loads("[1e400, -1e400, 1e-400]") == [math.inf, -math.inf, 0.0]


def test_semantics_surrogate_pairs_decode_like_orjson() -> None:
    text = '["\\ud83d\\ude00", "\\uD834\\uDD1E"]'
    assert parse(text, 1) == orjson.loads(text) == ["😀", "𝄞"]


@pytest.mark.parametrize("text", ['["\\ud800"]', '["\\udc00"]', '["\\ud800\\u0041"]', '["\\udc00\\ud800"]', '["\\ud83d"'])
def test_semantics_lone_surrogates_rejected_like_orjson(text: str) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text)
    with pytest.raises(JsonStreamError) as info:
        parse(text, 1)
    assert info.value.reason == "lone surrogate in \\u escape"


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "[-Infinity]", '{"a": NaN}', "[nan]"])
def test_semantics_nan_and_infinity_rejected(text: str) -> None:
    with pytest.raises(JsonStreamError):
        parse(text)


def test_semantics_depth_limit_has_a_clear_error() -> None:
    with pytest.raises(JsonStreamError) as info:
        parse("[" * 513 + "]" * 513)
    assert (info.value.offset, info.value.reason) == (512, "nesting deeper than max_depth")
    assert str(info.value) == "nesting deeper than max_depth at byte 512"
    assert parse("[" * 512 + "]" * 512) is not None


def test_semantics_utf8_bom_rejected() -> None:
    with pytest.raises(JsonStreamError) as info:
        parse(b"\xef\xbb\xbf{}")
    assert (info.value.offset, info.value.reason) == (0, "UTF-8 byte order mark is not allowed")
    with pytest.raises(JsonStreamError):
        parse("\ufeff{}")


# --- events ----------------------------------------------------------------------------------------


def merged(events: list[tuple[str, tuple[object, ...], object]]) -> list[tuple[str, tuple[object, ...], object]]:
    """Events with each string's deltas joined, so the result does not depend on the cuts."""
    out: list[tuple[str, tuple[object, ...], object]] = []
    for kind, path, value in events:
        if kind == "delta" and out and out[-1][0] == "delta" and out[-1][1] == path:
            out[-1] = ("delta", path, out[-1][2] + value)  # type: ignore[operator]
        else:
            out.append((kind, path, value))
    return out


def events_of(text: str | bytes, deltas: list[str | bytes] | None = None, **kwargs: bool) -> list[tuple[str, tuple[object, ...], object]]:
    stream = JsonStream(events=True, **kwargs)
    got = []
    for d in deltas if deltas is not None else [text]:
        stream.feed(d)
        got.extend(stream.events())
    stream.finish()
    got.extend(stream.events())
    return got


def test_events_example_from_the_docs() -> None:
    assert events_of('{"a": "hi", "b": [1]}') == [
        ("delta", ("a",), "hi"),
        ("value", ("a",), "hi"),
        ("value", ("b", 0), 1),
        ("value", ("b",), [1]),
        ("value", (), {"a": "hi", "b": [1]}),
    ]


def test_events_follow_a_tool_call_delta_by_delta() -> None:
    stream = JsonStream(events=True)
    steps = ['{"pa', 'th": "', "src/", "m\\u00", "e9.py", '", "n": [', "1", "2, ", "true]}"]
    got = []
    for d in steps:
        stream.feed(d)
        got.append(stream.events())
    assert got == [
        [],  # a key produces no event
        [("delta", ("path",), "")],  # the first delta comes with the opening quote
        [("delta", ("path",), "src/")],
        [("delta", ("path",), "m")],  # half an escape is held back
        [("delta", ("path",), "é.py")],
        [("value", ("path",), "src/mé.py")],
        [],  # the number may still grow
        [("value", ("n", 0), 12)],
        [("value", ("n", 1), True), ("value", ("n",), [12, True]), ("value", (), {"path": "src/mé.py", "n": [12, True]})],
    ]
    assert stream.events() == []
    assert stream.finish() == {"path": "src/mé.py", "n": [12, True]}


def test_events_top_level_number_completes_at_finish() -> None:
    stream = JsonStream(events=True)
    stream.feed("-12.5")
    assert stream.events() == []
    assert stream.finish() == -12.5
    assert stream.events() == [("value", (), -12.5)]


def test_events_value_objects_are_those_finish_returns() -> None:
    stream = JsonStream(events=True)
    stream.feed('{"a": {"b": [1]}}')
    events = stream.events()
    final = stream.finish()
    assert events[-1][2] is final
    assert final["a"] is events[-2][2]  # type: ignore[index]


def test_events_need_the_option() -> None:
    with pytest.raises(ValueError, match="events=True"):
        JsonStream().events()


def test_events_do_not_depend_on_the_cuts() -> None:
    doc = json.dumps({"path": "é😀.py", "content": 'a\\b"c\n\u2028' * 3, "edits": [{"old": "", "new": "x", "n": [1.5, -0, None, False]}]})
    whole = merged(events_of(doc))
    for cut in range(len(doc) + 1):
        assert merged(events_of(doc, [doc[:cut], doc[cut:]])) == whole
    raw = doc.encode()
    assert merged(events_of(raw, [raw[i : i + 1] for i in range(len(raw))])) == whole
    # The joined deltas of each string are its value.
    for (kind, path, text), (kind2, path2, value) in zip(whole, whole[1:]):
        if kind == "delta":
            assert (kind2, path2, value) == ("value", path, text)


# --- multiple values (NDJSON, concatenated) --------------------------------------------------------


def test_multiple_ndjson_values_as_they_complete() -> None:
    stream = JsonStream(multiple=True)
    assert stream.done
    stream.feed('{"a": 1}\n{"b"')
    assert stream.values() == [{"a": 1}]
    assert not stream.done
    assert stream.partial() == {}
    stream.feed(': [2]}\n3')
    assert stream.values() == [{"b": [2]}]
    assert stream.values() == []
    assert stream.finish() == [3]
    assert stream.finish() == []


def test_multiple_concatenated_without_separators() -> None:
    text = '{"a":1}{"b":2}[3]"x""y"true null 4 5{}'
    expected = [{"a": 1}, {"b": 2}, [3], "x", "y", True, None, 4, 5, {}]
    for step in (None, 1, 2, 5):
        stream = JsonStream(multiple=True)
        got = []
        chunks = [text] if step is None else [text[i : i + step] for i in range(0, len(text), step)]
        for c in chunks:
            stream.feed(c)
            got.extend(stream.values())
        got.extend(stream.finish())  # type: ignore[arg-type]
        assert got == expected


def test_multiple_finish_raises_on_an_incomplete_value() -> None:
    stream = JsonStream(multiple=True)
    stream.feed('{"a": 1}\n{"b": ')
    with pytest.raises(JsonStreamError) as info:
        stream.finish()
    assert (info.value.offset, info.value.reason) == (15, "unexpected end of input")


def test_multiple_rejects_garbage_between_values() -> None:
    stream = JsonStream(multiple=True)
    with pytest.raises(JsonStreamError) as info:
        stream.feed("[1] ]")
    assert (info.value.offset, info.value.reason) == (4, "expected a value")


def test_multiple_event_paths_start_with_the_ordinal() -> None:
    assert events_of('{"a":"x"}\n[true]', multiple=True) == [
        ("delta", (0, "a"), "x"),
        ("value", (0, "a"), "x"),
        ("value", (0,), {"a": "x"}),
        ("value", (1, 0), True),
        ("value", (1,), [True]),
    ]


def test_values_need_the_option() -> None:
    with pytest.raises(ValueError, match="multiple=True"):
        JsonStream().values()


# --- differential: hypothesis documents at random split points equal orjson.loads of the whole ---

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Number texts at the edges of int64/uint64 and of double range (subnormals, rounding ties);
# overflow to infinity is left out: there orjson rejects and we follow json.loads (tested above).
EDGE_NUMBERS = [
    "0", "-0", "0.0", "-0.0", "0e0", "0E-0", "1E+2", "-1e-2",
    "9223372036854775807", "-9223372036854775808", "18446744073709551615",
    "1.7976931348623157e308", "-1.7976931348623157e+308", "2.2250738585072014e-308",
    "2.2250738585072011e-308", "4.9e-324", "5e-324", "2.4703282292062328e-324", "1e-400",
    "9007199254740993", "9007199254740993.0", "0.30000000000000004", "1.00000000000000011102230246251565404236316680908203125",
    "123456789012345678901234567890e-10", "0.000000000000000000000000000001e30",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.sampled_from(EDGE_NUMBERS).map(lambda t: _Raw(t)),
)


class _Raw(str):
    """Number text written as is."""


documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=6)),
    max_leaves=40,
)


def _write_str(s: str, rng: random.Random, out: list[str]) -> None:
    out.append('"')
    for ch in s:
        roll = rng.random()
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\b\f\n\r\t" and roll < 0.5:
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x20 or roll < 0.2:
            code = ord(ch)
            if code >= 0x10000:
                code -= 0x10000
                units = [0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)]
            else:
                units = [code]
            for u in units:
                out.append(f"\\u{u:04x}" if rng.random() < 0.5 else f"\\u{u:04X}")
        elif ch == "/" and roll < 0.6:
            out.append("\\/")
        else:
            out.append(ch)
    out.append('"')


def _write(value: object, rng: random.Random, out: list[str]) -> None:
    """Serialize with random whitespace, escapes and number spellings (iteration-free depth is
    bounded by the strategies, so recursion is fine here)."""
    ws = lambda: out.append(rng.choice(["", "", " ", "\n", "\t", "\r\n  "]))  # noqa: E731
    ws()
    if isinstance(value, _Raw):
        out.append(str(value))
    elif value is None or isinstance(value, bool):
        out.append(json.dumps(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(rng.choice([repr(value), f"{value:.17e}", f"{value:.17E}"]))
    elif isinstance(value, str):
        _write_str(value, rng, out)
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, rng, out)
        ws()
        out.append("]")
    else:
        assert isinstance(value, dict)
        out.append("{")
        for i, (k, item) in enumerate(value.items()):
            if i:
                out.append(",")
            ws()
            _write_str(k, rng, out)
            ws()
            out.append(":")
            _write(item, rng, out)
        ws()
        out.append("}")
    ws()


def _feed_split(data: bytes, cuts: list[int], **kwargs: bool) -> JsonStream:
    stream = JsonStream(**kwargs)
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        stream.feed(data[start:cut])
        start = cut
    return stream


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.randoms(use_true_random=False), st.lists(st.integers(min_value=0), max_size=12))
def test_differential_random_documents_at_random_splits_equal_orjson(value: object, rng: random.Random, cuts: list[int]) -> None:
    out: list[str] = []
    _write(value, rng, out)
    data = "".join(out).encode()
    expected = orjson.loads(data)
    assert same(_feed_split(data, cuts).finish(), expected)
    assert same(json.loads(data), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=500), st.sampled_from(["[", '{"k":', '{"":[', '[{"\\u00e9":']), st.lists(st.integers(min_value=0), max_size=6))
def test_differential_deep_nesting_equals_orjson(depth: int, opener: str, cuts: list[int]) -> None:
    closer = {"[": "]", '{"k":': "}", '{"":[': "]}", '[{"\\u00e9":': "}]"}[opener]
    levels = depth // (2 if len(closer) == 2 else 1) or 1
    data = (opener * levels + '"\\ud83d\\ude00"' + closer * levels).encode()
    assert same(_feed_split(data, cuts).finish(), orjson.loads(data))


@settings(max_examples=100, deadline=None)
@given(st.integers().filter(lambda i: not -(2**63) <= i < 2**64) | st.integers(), st.lists(st.integers(min_value=0), max_size=4))
def test_differential_big_ints_equal_json_loads(number: int, cuts: list[int]) -> None:
    data = f"[{number}, {-number}]".encode()
    assert same(_feed_split(data, cuts).finish(), json.loads(data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.randoms(use_true_random=False), st.lists(st.integers(min_value=0), max_size=12))
def test_differential_events_rebuild_the_document(value: object, rng: random.Random, cuts: list[int]) -> None:
    out: list[str] = []
    _write(value, rng, out)
    data = "".join(out).encode()
    stream = _feed_split(data, cuts, events=True)
    final = stream.finish()
    events = merged(stream.events())
    assert events[-1] == ("value", (), final)
    assert same(final, orjson.loads(data))
    for i, (kind, path, text) in enumerate(events):
        if kind == "delta":
            assert events[i + 1] == ("value", path, text)
        else:
            node = final
            for seg in path:
                node = node[seg]  # type: ignore[index]
            assert node is text or same(node, text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents, max_size=5), st.randoms(use_true_random=False), st.lists(st.integers(min_value=0), max_size=12))
def test_differential_concatenated_documents_equal_orjson_of_each(values: list[object], rng: random.Random, cuts: list[int]) -> None:
    texts = []
    for v in values:
        out: list[str] = []
        _write(v, rng, out)
        texts.append("".join(out))
    # Whitespace (or a newline, NDJSON) keeps two numbers apart; otherwise values may touch.
    data = rng.choice([" ", "\n"]).join(texts).encode()
    stream = _feed_split(data, cuts, multiple=True)
    got = stream.values() + stream.finish()  # type: ignore[operator]
    assert same(got, [orjson.loads(t) for t in texts])
