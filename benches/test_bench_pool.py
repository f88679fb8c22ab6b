"""What BufferPool buys in the real encode path (``raygent.messages.encode``), if anything.

Every case turns one message into msgpack ``bytes`` (what ``encode`` must return: it is what
Ray ships), the same bytes each way:

- ``raygent`` *pooled*: a pooled ``bytearray`` (``BufferPool.acquire``),
  ``Encoder.encode_into`` into it, ``bytes(buf)``, ``BufferPool.release`` (the path
  ``encode`` had);
- ``msgspec`` *encode*: ``Encoder.encode(obj)`` (one reused Encoder);
- ``msgspec`` *encode-module*: ``msgspec.msgpack.encode(obj)``;
- ``msgspec`` *encode_into*: ``Encoder.encode_into`` into one reused ``bytearray``, then
  ``bytes(buf)`` (reuse without a pool);
- ``raygent`` *encode*: ``raygent.messages.encode`` as it is now, whatever it chose.

Messages of the sizes a turn really sends: a text delta (about 30 B), an assistant message
with a tool call (about 2 KB), a tool result of 64 KB and one of 4 MB. ``items`` is the number
of encodes per round. Allocations are counted with tracemalloc in
:func:`test_allocations_per_encode` (a plain test, it prints its table), outside the timed runs.

Run::

    .venv/bin/python -m pytest benches/test_bench_pool.py --benchmark-columns=mean,rounds -s
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import msgspec
import pytest
from conftest import case

from raygent import messages
from raygent._native import BufferPool
from raygent.messages import AssistantMessage, TextDelta, ToolCall, ToolResult

ROOT = Path(__file__).resolve().parents[1]
ENCODER = msgspec.msgpack.Encoder()
REPEAT = 100  # encodes per round (a batch of messages)


def _source(nbytes: int) -> str:
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("rust/src/*.rs")))
    while len(text) < nbytes:
        text += text
    return text[:nbytes]


MESSAGES: dict[str, Any] = {
    "text delta 30B": TextDelta(text="Reading the file now, then edit"),
    "tool call 2KB": AssistantMessage(
        content="I will apply the edit.",
        tool_calls=[ToolCall(id="call_1", name="edit_file", arguments={"path": "src/a.py", "content": _source(2_000)})],
    ),
    "tool result 64KB": ToolResult(call_id="call_1", name="read_file", content=_source(64_000), duration_ms=3.5),
    "tool result 4MB": ToolResult(call_id="call_2", name="shell", content=_source(4_000_000), duration_ms=900.0),
}


def pooled_encoder() -> Callable[[Any], bytes]:
    pool = BufferPool(max_buffers=32)

    def encode(obj: Any) -> bytes:
        buf = pool.acquire()
        try:
            ENCODER.encode_into(obj, buf)
            return bytes(buf)
        finally:
            pool.release(buf)

    return encode


def reused_buffer_encoder() -> Callable[[Any], bytes]:
    buf = bytearray()

    def encode(obj: Any) -> bytes:
        ENCODER.encode_into(obj, buf)
        return bytes(buf)

    return encode


WAYS: dict[str, tuple[str, Callable[[], Callable[[Any], bytes]]]] = {
    "pooled": ("raygent", pooled_encoder),
    "encode": ("msgspec", lambda: ENCODER.encode),
    "encode-module": ("msgspec", lambda: msgspec.msgpack.encode),
    "encode_into": ("msgspec", reused_buffer_encoder),
    "messages.encode": ("raygent", lambda: messages.encode),
}


def _repeat(nbytes_msg: int) -> int:
    return 10 if nbytes_msg > 1_000_000 else REPEAT


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("name", list(MESSAGES))
def test_encode(benchmark: Any, name: str, way: str) -> None:
    msg = MESSAGES[name]
    impl, make = WAYS[way]
    encode = make()
    expected = msgspec.msgpack.encode(msg)
    for _ in range(3):  # reused state must not leak between encodes
        assert encode(msg) == expected
    assert messages.decode(encode(msg), type(msg)) == msg
    repeat = _repeat(len(expected))

    def run() -> None:
        for _ in range(repeat):
            encode(msg)

    case(benchmark, group=f"pool: encode a {name} to bytes", impl=impl, nbytes=len(expected) * repeat, items=repeat)
    benchmark.extra_info["how"] = way
    benchmark(run)


def traced(encode: Callable[[Any], bytes], msg: Any, n: int) -> tuple[float, float, float]:
    """tracemalloc over ``n`` encodes after a warm-up one, each result dropped at once:
    (peak bytes traced beyond the starting point, per message byte; bytes still held after the
    encodes, per message byte; net new memory blocks per encode)."""
    size = len(encode(msg))
    gc.collect()
    tracemalloc.start()
    try:
        blocks = sys.getallocatedblocks()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(n):
            encode(msg)
        current, peak = tracemalloc.get_traced_memory()
        blocks = sys.getallocatedblocks() - blocks
    finally:
        tracemalloc.stop()
    return (peak - base) / size, (current - base) / size, blocks / n


def test_allocations_per_encode() -> None:
    """Memory traced per encode for each way and message (the table prints with -s)."""
    header = ["message", "bytes"] + [f"{w}: peak/size, held/size" for w in WAYS]
    rows = [header]
    for name, msg in MESSAGES.items():
        size = len(msgspec.msgpack.encode(msg))
        n = 3 if size > 1_000_000 else 200
        row = [name, str(size)]
        for way, (_, make) in WAYS.items():
            encode = make()
            assert encode(msg) == msgspec.msgpack.encode(msg)
            peak, held, _ = traced(encode, msg, n)
            row.append(f"{peak:.2f}, {held:.2f}")
        rows.append(row)
    print()
    for row in rows:
        print(" | ".join(row))
