"""A ToolActor restarted after its process died keeps the tools and MCP servers it was given.

Without Ray: two :class:`~raygent.actors.ToolActor` objects sharing one
:class:`~raygent.actors.ToolRecord` play an actor and its restarted self (the MCP servers are
the real FastMCP test server over stdio). The same through a real Ray restart, by killing the
actor's process, is in test_recovery.py.
"""

from __future__ import annotations

import asyncio
import json
import logging

import raygent
from raygent._tool_record import MemoryKV, ToolRecord
from raygent.actors import ToolActor
from raygent.messages import ToolCall, ToolResult, ToolResultChunk, ToolStreamItem, decode, encode
from raygent.tools import MCPServer

from test_mcp import stdio_server


@raygent.tool(read_only=True)
def word_count(text: str) -> int:
    """Count the words of a text.

    Parameters
    ----------
    text : str
        The text.
    """
    return len(text.split())


def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


async def _results(actor: ToolActor, calls: list[ToolCall]) -> dict[str, ToolResult]:
    out = {}
    async for data in actor.run_turn(encode(calls)):
        item = decode(data, ToolStreamItem)
        if isinstance(item, ToolResultChunk):
            out[item.result.call_id] = item.result
    return out


def test_record_keeps_tools_and_servers_once_each():
    kv = MemoryKV()
    record = ToolRecord(kv, "k")
    assert record.tools() == [] and record.mcp_servers() == []
    record.add_tools([word_count, raygent.tool(shout)])
    record.add_tools([raygent.tool(shout, read_only=True)])  # same name: replaces
    rebuilt = {t.name: t for t in ToolRecord(kv, "k").tools()}
    assert set(rebuilt) == {"word_count", "shout"}
    assert rebuilt["word_count"].schema == word_count.schema and rebuilt["shout"].read_only
    assert rebuilt["word_count"](text="a b c") == 3

    one, two = stdio_server(name="one"), stdio_server(name="two", prefix="t_")
    record.add_mcp_servers([one])
    record.add_mcp_servers([two, one])
    assert ToolRecord(kv, "k").mcp_servers() == [one, two]
    assert ToolRecord(kv, "other").mcp_servers() == []  # one record per key

    record.drop_mcp_servers()
    assert record.mcp_servers() == [] and len(record.tools()) == 2
    record.forget()
    assert kv.data == {}


def test_a_tool_that_cannot_be_rebuilt_is_left_out_and_logged(caplog):
    kv = MemoryKV()
    record = ToolRecord(kv, "k")
    record.add_tools([word_count])
    import msgspec

    raw = msgspec.msgpack.decode(kv.data["k"])
    raw["tools"]["broken"] = b"not a pickle"
    kv.data["k"] = msgspec.msgpack.encode(raw)
    with caplog.at_level(logging.ERROR, logger="raygent._tool_record"):
        assert [t.name for t in record.tools()] == ["word_count"]
    assert "'broken'" in caplog.text


async def test_a_restarted_actor_has_its_user_tools_and_reconnects_its_mcp_servers(tmp_path):
    kv = MemoryKV()
    first = ToolActor(str(tmp_path), record=ToolRecord(kv, "actor"))
    second: ToolActor | None = None
    try:
        first.add_tools([word_count, raygent.tool(shout)])
        await first.add_mcp_servers(encode([stdio_server(prefix="kv_")]))
        calls = [
            ToolCall("a", "word_count", {"text": "one two three"}),
            ToolCall("b", "shout", {"text": "hi"}),
            ToolCall("c", "kv_lookup", {"key": "alpha"}),
            ToolCall("d", "kv_stats", {}),
        ]
        before = await _results(first, calls)
        old_server = json.loads(before["d"].content)["pid"]
        # The process dies: its MCP connections go with it, the record stays.
        await first.mcp.aclose()

        second = ToolActor(str(tmp_path), record=ToolRecord(kv, "actor"))
        # User tools are back at once, beside the built-ins; MCP tools once a call runs.
        assert {"word_count", "shout", "read_file"} <= set(second.tools) and "kv_lookup" not in second.tools
        assert "word_count" in second.read_only_tools()
        # Two calls at once (a turn and the predictor's hints): both wait for the reconnection.
        after, concurrent = await asyncio.gather(_results(second, calls), _results(second, calls[2:3]))
        assert concurrent["c"].content == "alpha=1"
        assert not any(r.is_error for r in after.values()), after
        assert (after["a"].content, after["b"].content, after["c"].content) == ("3", "HI", "alpha=1")
        assert json.loads(after["d"].content)["pid"] != old_server  # a new connection, a new server
        assert len(second.mcp.connections) == 1

        # Adding the same server again (another session of the workspace) reuses it.
        schemas = await second.add_mcp_servers(encode([stdio_server(prefix="kv_")]))
        assert "kv_lookup" in {s["name"] for s in schemas} and len(second.mcp.connections) == 1
        assert len(ToolRecord(kv, "actor").mcp_servers()) == 1
    finally:
        await first.close_mcp()
        if second is not None:
            await second.close()
    assert kv.data == {}  # close() forgets the record


async def test_closed_mcp_servers_are_not_reconnected_after_a_restart(tmp_path):
    kv = MemoryKV()
    first = ToolActor(str(tmp_path), record=ToolRecord(kv, "actor"))
    first.add_tools([word_count])
    await first.add_mcp_servers(encode([stdio_server(prefix="kv_")]))
    await first.close_mcp()
    second = ToolActor(str(tmp_path), record=ToolRecord(kv, "actor"))
    try:
        results = await _results(second, [ToolCall("a", "kv_lookup", {"key": "alpha"})])
        assert results["a"].error_kind == "not_found"
        assert not second.mcp.connections and "word_count" in second.tools
    finally:
        await second.close()


async def test_a_server_gone_after_the_restart_does_not_keep_the_others_away(tmp_path, caplog):
    kv = MemoryKV()
    good = stdio_server(prefix="kv_")
    gone = MCPServer.stdio("/nonexistent/mcp-server", name="gone", prefix="g_")
    record = ToolRecord(kv, "actor")
    record.add_mcp_servers([gone, good])  # what an actor that once had both recorded
    actor = ToolActor(str(tmp_path), record=record)
    try:
        with caplog.at_level(logging.ERROR, logger="raygent.actors"):
            results = await _results(actor, [ToolCall("a", "kv_lookup", {"key": "beta"})])
        assert results["a"].content == "beta=2" and not results["a"].is_error
        assert "'gone'" in caplog.text and "reconnected" in caplog.text
        # Tried once per restart, not before every call.
        caplog.clear()
        await _results(actor, [ToolCall("b", "kv_lookup", {"key": "alpha"})])
        assert "'gone'" not in caplog.text
    finally:
        await actor.close()


def test_outside_a_ray_actor_the_record_is_in_memory():
    record = ToolRecord.of_this_actor()
    assert isinstance(record.kv, MemoryKV) and record.tools() == []
