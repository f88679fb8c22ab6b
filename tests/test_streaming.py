"""Stream: kinds, filtering, collect, readers, sync and async iteration (no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from raygent.messages import (
    Done,
    StateChange,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    ToolResultChunk,
    Usage,
)
from raygent.streaming import CHUNK_KINDS, Stream, StreamResult

CALL = ToolCall("c1", "grep", {"pattern": "x"})
BATCHES = [
    [StateChange("idle", "processing_prompt", "prompt"), TextDelta("Hello, "), TextDelta("wor")],
    [TextDelta("ld\nsecond "), ToolCallStart(0, "c1", "grep"), ToolCallDelta(0, "c1", '{"pattern":"x"}')],
    [ToolCallEnd(0, CALL)],
    [Usage(10, 3), Done("tool_calls"), ToolResultChunk(ToolResult("c1", "grep", "a.py:1:x"))],
    [TextDelta("line\nthird"), Usage(5, 2), Done("stop")],
]
ALL = [c for b in BATCHES for c in b]


class AsyncOnly:
    def __init__(self, batches):
        self.batches = batches

    async def __aiter__(self):
        for b in self.batches:
            await asyncio.sleep(0)
            yield b


def test_iterates_every_chunk_in_order_once():
    s = Stream(BATCHES)
    assert list(s) == ALL
    with pytest.raises(RuntimeError, match="read once"):
        list(s)


def test_collect_gathers_everything():
    got = Stream(BATCHES).collect()
    assert got == StreamResult(
        text="Hello, world\nsecond line\nthird",
        tool_calls=[CALL],
        tool_results=[ToolResult("c1", "grep", "a.py:1:x")],
        usage=Usage(15, 5),
        finish_reason="stop",
        chunks=len(ALL),
    )


def test_text_only_and_include_filter_and_drop_empty_batches():
    s = Stream(BATCHES, text_only=True)
    batches = list(s.batches())
    assert all(isinstance(c, TextDelta) for b in batches for c in b)
    assert len(batches) == 3  # the tool-call-end batch and the usage/done batch vanish
    got = Stream(BATCHES, include=["tool_call_end", ToolResultChunk]).collect()
    assert got.text == "" and got.tool_calls == [CALL] and len(got.tool_results) == 1
    assert got.chunks == 2
    with pytest.raises(ValueError, match="unknown chunk kind"):
        Stream(BATCHES, include=["text"])
    with pytest.raises(ValueError):
        Stream(BATCHES, buffer_size=0)
    assert set(CHUNK_KINDS) >= {"text_delta", "tool_result", "state"}


def test_reader_reads_and_readlines_over_text():
    r = Stream(BATCHES).as_reader()
    assert r.readable()
    assert r.read(3) == "Hel"
    assert r.readline() == "lo, world\n"
    assert r.readline(4) == "seco"
    assert list(r) == ["nd line\n", "third"]
    assert r.read() == "" and r.readline() == ""
    assert Stream(BATCHES).as_reader().read() == "Hello, world\nsecond line\nthird"


def test_reader_is_lazy():
    pulled = []

    def source():
        for i, b in enumerate(BATCHES):
            pulled.append(i)
            yield b

    r = Stream(source()).as_reader()
    assert r.read(2) == "He"
    assert pulled == [0]


def test_async_iteration_and_acollect():
    async def go():
        a = [c async for c in Stream(AsyncOnly(BATCHES))]
        b = await Stream(BATCHES).acollect()  # a sync source read asynchronously
        return a, b

    a, b = asyncio.run(go())
    assert a == ALL
    assert b == Stream(BATCHES).collect()
    with pytest.raises(TypeError, match="async"):
        list(Stream(AsyncOnly(BATCHES)))
