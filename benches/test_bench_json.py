"""Following a streamed tool call: raygent's JsonStream beside the parsers a user would pick.

The input is what a coding model streams as tool-call arguments: a JSON object
``{"path": ..., "content": <a source file>, "edits": [{"range": {...}, "old": ..., "new": ...}]}``
built from this repository's own sources (escapes: newlines, quotes, backslashes; some non-ASCII
text), at about 1 KB, 10 KB and 100 KB, cut into LLM-sized deltas of 1-8 characters (seeded).

Two jobs, one group each, per size:

- **events**: after every delta, learn what the new text added (``JsonStream(events=True)``:
  ``feed()`` + ``events()``). Peers: ijson push parsing (``parse_coro``, deltas sent as bytes),
  json-stream (``visit`` pulling the deltas from a generator), and jiter re-parsing the whole
  prefix with ``partial_mode="trailing-strings"`` (what a user of jiter does to follow a
  document; it gives a full partial value, more than events, at a cost that grows with the
  prefix).
- **partial**: after every delta, get the whole value so far (``feed()`` + ``partial()``).
  Peers: jiter re-parsing the prefix, partial-json-parser re-parsing the prefix.

``orjson.loads`` of the whole document once is in both groups as a reference (not a streaming
parser). ``items`` is the number of deltas handled per round, so ``mean / items`` is the cost
per delta. partial-json-parser is quadratic and slow (pure Python, about 5 ms per 50 KB
prefix), so it parses every k-th prefix only (at most about 500 per round; ``items`` is the
number parsed and ``extra_info["every"]`` is k): each prefix's cost is independent of the
others, so the per-delta mean stays an unbiased estimate. Quadratic peers run few rounds.

Run (numbers)::

    .venv/bin/python -m pytest benches/test_bench_json.py --benchmark-columns=mean,rounds \\
        --benchmark-sort=name

or as a quick check of every case (no timing)::

    .venv/bin/python -m pytest benches/test_bench_json.py --benchmark-disable -q
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
from conftest import case as _label_case

from raygent._native import JsonStream

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"1KB": 1_000, "10KB": 10_000, "100KB": 100_000}
SEED = 20240603
# Re-parsing peers that are quadratic parse at most about this many prefixes per round.
MAX_REPARSES = 500


def _sources() -> list[tuple[str, str]]:
    """This repository's sources, in a fixed order, as (path, text)."""
    files = sorted(ROOT.glob("rust/src/*.rs")) + sorted(ROOT.glob("python/raygent/**/*.py"))
    return [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in files]


def _edits(lines: list[str], budget: int) -> list[dict[str, Any]]:
    """Nested edit records over ``lines`` until their JSON takes about ``budget`` bytes."""
    edits: list[dict[str, Any]] = []
    size = 0
    for i, line in enumerate(lines):
        if size >= budget:
            break
        if not line.strip():
            continue
        edit = {
            "range": {"start": {"line": i + 1, "column": 0}, "end": {"line": i + 1, "column": len(line)}},
            "old": line,
            "new": line.replace("self", "this") + "  # revisé → ok",
            "tags": ["refactor", {"reason": "naming", "confidence": 0.875, "automatic": i % 2 == 0}],
        }
        edits.append(edit)
        size += len(json.dumps(edit, ensure_ascii=False).encode())
    return edits


@functools.lru_cache(maxsize=None)
def document(nbytes: int) -> str:
    """A tool-call arguments document of about ``nbytes`` UTF-8 bytes (within 1%)."""
    sources = _sources()
    # The largest source goes first: a long "content" string is the common case.
    path, text = max(sources, key=lambda s: len(s[1]))
    corpus = text + "".join(t for p, t in sources if p != path)
    edits = _edits(corpus.splitlines(), nbytes // 4)

    def build(n: int) -> str:
        return json.dumps({"path": path, "content": corpus[:n], "edits": edits}, ensure_ascii=False)

    lo, hi = 0, len(corpus)
    while lo < hi:  # largest content whose document fits in nbytes
        mid = (lo + hi + 1) // 2
        if len(build(mid).encode()) <= nbytes:
            lo = mid
        else:
            hi = mid - 1
    doc = build(lo)
    assert abs(len(doc.encode()) - nbytes) <= nbytes // 100, (len(doc.encode()), nbytes)
    return doc


@functools.lru_cache(maxsize=None)
def deltas(nbytes: int) -> tuple[list[str], list[bytes], list[int]]:
    """The document cut into 1-8 character deltas: as str, as UTF-8 bytes, and the end offset
    of each delta in the UTF-8 text."""
    doc = document(nbytes)
    rng = random.Random(SEED + nbytes)
    texts: list[str] = []
    i = 0
    while i < len(doc):
        n = rng.randint(1, 8)
        texts.append(doc[i : i + n])
        i += n
    raw = [t.encode() for t in texts]
    ends = []
    end = 0
    for r in raw:
        end += len(r)
        ends.append(end)
    return texts, raw, ends


def case(benchmark: Any, *, group: str, impl: str, nbytes: int, items: int) -> None:
    """conftest's case, plus the document size for the per-delta plot of ``raygent bench``."""
    _label_case(benchmark, group=group, impl=impl, nbytes=nbytes, items=items)
    benchmark.extra_info["doc_bytes"] = nbytes


def _label(nbytes: int) -> str:
    return next(k for k, v in SIZES.items() if v == nbytes)


def _group(job: str, nbytes: int) -> str:
    return f"json {job} after each 1-8 byte delta: {_label(nbytes)}"


def _rounds(nbytes: int) -> int:
    return {1_000: 3, 10_000: 2, 100_000: 1}[nbytes]


sizes = pytest.mark.parametrize("nbytes", list(SIZES.values()), ids=list(SIZES))


def _run(benchmark: Any, fn: Callable[[], Any], *, quadratic: bool, nbytes: int) -> None:
    if quadratic:
        benchmark.pedantic(fn, rounds=_rounds(nbytes), iterations=1, warmup_rounds=0)
    else:
        benchmark(fn)


# --- events -------------------------------------------------------------------------------------


def raygent_events(texts: list[str]) -> list[tuple[str, tuple[Any, ...], Any]]:
    stream = JsonStream(events=True)
    feed, events = stream.feed, stream.events
    got: list[tuple[str, tuple[Any, ...], Any]] = []
    for d in texts:
        feed(d)
        got += events()
    stream.finish()
    return got


@sizes
def test_events_raygent(benchmark: Any, nbytes: int) -> None:
    texts, _, _ = deltas(nbytes)
    doc = document(nbytes)
    expected = orjson.loads(doc)
    got = raygent_events(texts)
    assert got[-1] == ("value", (), expected)
    content = "".join(v for kind, path, v in got if kind == "delta" and path == ("content",))
    assert content == expected["content"]
    assert sum(1 for kind, _, _ in got if kind == "value") > len(expected["edits"]) * 10

    def run() -> None:
        stream = JsonStream(events=True)
        feed, events = stream.feed, stream.events
        for d in texts:
            feed(d)
            events()

    case(benchmark, group=_group("events", nbytes), impl="raygent", nbytes=len(doc.encode()), items=len(texts))
    _run(benchmark, run, quadratic=False, nbytes=nbytes)


@sizes
def test_events_ijson(benchmark: Any, nbytes: int) -> None:
    ijson = pytest.importorskip("ijson", reason="peer ijson not installed (pip install ijson)")
    _, raw, _ = deltas(nbytes)
    doc = document(nbytes)
    expected = orjson.loads(doc)
    seen: list[tuple[str, str, Any]] = []
    events = ijson.sendable_list()
    coro = ijson.parse_coro(events, use_float=True)
    for d in raw:
        coro.send(d)
        seen += events
        del events[:]
    coro.close()
    seen += events
    assert ("content", "string", expected["content"]) in seen
    lines = [v for p, kind, v in seen if p == "edits.item.range.start.line"]
    assert lines == [e["range"]["start"]["line"] for e in expected["edits"]]
    assert seen[-1] == ("", "end_map", None)

    def run() -> None:
        events = ijson.sendable_list()
        coro = ijson.parse_coro(events, use_float=True)
        for d in raw:
            coro.send(d)
            del events[:]
        coro.close()

    case(benchmark, group=_group("events", nbytes), impl="ijson", nbytes=len(doc.encode()), items=len(raw))
    benchmark.extra_info["backend"] = ijson.backend
    _run(benchmark, run, quadratic=False, nbytes=nbytes)


@sizes
def test_events_json_stream(benchmark: Any, nbytes: int) -> None:
    json_stream = pytest.importorskip("json_stream", reason="peer json-stream not installed (pip install json-stream)")
    texts, _, _ = deltas(nbytes)
    doc = document(nbytes)
    expected = orjson.loads(doc)

    def pulled() -> Iterator[str]:
        yield from texts

    leaves: dict[tuple[Any, ...], Any] = {}
    json_stream.visit(pulled(), lambda item, path: leaves.__setitem__(path, item))
    assert leaves[("content",)] == expected["content"]
    assert leaves[("edits", 0, "tags", 1, "confidence")] == 0.875
    assert len(leaves) > len(expected["edits"]) * 10

    def run() -> None:
        json_stream.visit(pulled(), lambda item, path: None)

    case(benchmark, group=_group("events", nbytes), impl="json-stream", nbytes=len(doc.encode()), items=len(texts))
    _run(benchmark, run, quadratic=False, nbytes=nbytes)


# --- re-parsing peers (both groups) -------------------------------------------------------------


def _jiter_case(benchmark: Any, nbytes: int, job: str) -> None:
    jiter = pytest.importorskip("jiter", reason="peer jiter not installed (pip install jiter)")
    _, raw, ends = deltas(nbytes)
    doc = document(nbytes)
    data = doc.encode()
    expected = orjson.loads(doc)
    assert jiter.from_json(data, partial_mode="trailing-strings") == expected
    mid = ends[len(ends) // 2]
    ours = JsonStream()
    ours.feed(data[:mid])
    theirs = jiter.from_json(data[:mid], partial_mode="trailing-strings")
    assert theirs["path"] == ours.partial()["path"]  # type: ignore[index]

    def run() -> None:
        from_json = jiter.from_json
        for end in ends:
            from_json(data[:end], partial_mode="trailing-strings")

    case(benchmark, group=_group(job, nbytes), impl="jiter", nbytes=len(data), items=len(ends))
    benchmark.extra_info["how"] = "re-parse the prefix"
    _run(benchmark, run, quadratic=True, nbytes=nbytes)


@sizes
def test_events_jiter_reparse(benchmark: Any, nbytes: int) -> None:
    _jiter_case(benchmark, nbytes, "events")


@sizes
def test_partial_jiter_reparse(benchmark: Any, nbytes: int) -> None:
    _jiter_case(benchmark, nbytes, "partial")


def _orjson_case(benchmark: Any, nbytes: int, job: str) -> None:
    _, raw, _ = deltas(nbytes)
    data = document(nbytes).encode()
    assert orjson.loads(data) == json.loads(data)
    case(benchmark, group=_group(job, nbytes), impl="orjson", nbytes=len(data), items=len(raw))
    benchmark.extra_info["how"] = "one-shot on the whole document (reference, not streaming)"
    benchmark(orjson.loads, data)


@sizes
def test_events_orjson_oneshot(benchmark: Any, nbytes: int) -> None:
    _orjson_case(benchmark, nbytes, "events")


@sizes
def test_partial_orjson_oneshot(benchmark: Any, nbytes: int) -> None:
    _orjson_case(benchmark, nbytes, "partial")


# --- partial ------------------------------------------------------------------------------------


@sizes
def test_partial_raygent(benchmark: Any, nbytes: int) -> None:
    texts, _, _ = deltas(nbytes)
    doc = document(nbytes)
    expected = orjson.loads(doc)
    stream = JsonStream()
    last: Any = None
    content = ""
    for d in texts:
        stream.feed(d)
        last = stream.partial()
        if last and "content" in last:  # the open string only grows
            assert last["content"].startswith(content)
            content = last["content"]
    assert last == expected == stream.finish()

    def run() -> None:
        stream = JsonStream()
        feed, partial = stream.feed, stream.partial
        for d in texts:
            feed(d)
            partial()

    case(benchmark, group=_group("partial", nbytes), impl="raygent", nbytes=len(doc.encode()), items=len(texts))
    # The open string is copied whole after each delta: quadratic by nature at 100 KB.
    _run(benchmark, run, quadratic=nbytes >= 100_000, nbytes=nbytes)


@sizes
def test_partial_partial_json_parser(benchmark: Any, nbytes: int) -> None:
    pjp = pytest.importorskip(
        "partial_json_parser", reason="peer partial-json-parser not installed (pip install partial-json-parser)"
    )
    texts, _, _ = deltas(nbytes)
    doc = document(nbytes)
    assert pjp.loads(doc) == orjson.loads(doc)
    ours = JsonStream()
    half = "".join(texts[: len(texts) // 2])
    ours.feed(half)
    assert pjp.loads(half)["path"] == ours.partial()["path"]  # type: ignore[index]
    every = max(1, len(texts) // MAX_REPARSES)
    ends: list[int] = []
    end = 0
    for i, t in enumerate(texts):
        end += len(t)
        if i % every == every - 1 or i == len(texts) - 1:
            ends.append(end)

    def run() -> None:
        loads = pjp.loads
        for end in ends:
            loads(doc[:end])

    case(benchmark, group=_group("partial", nbytes), impl="partial-json-parser", nbytes=len(doc.encode()), items=len(ends))
    benchmark.extra_info["every"] = every
    benchmark.extra_info["how"] = "re-parse the prefix"
    _run(benchmark, run, quadratic=True, nbytes=nbytes)
