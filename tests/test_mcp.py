"""MCP servers as tool sources, against a real FastMCP server (tests/_mcp_server.py) on stdio and
on streamable HTTP at 127.0.0.1; no Ray here (see test_mcp_agent.py for a full turn on Ray)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from mcp import types as mcp_types

from raygent.actors import ToolActor
from raygent.messages import ToolCall, ToolResultChunk, ToolStreamItem, decode, encode
from raygent.pipeline import ToolPipeline
from raygent.tools import (
    MCPConfigError,
    MCPConnectError,
    MCPConnection,
    MCPRegistry,
    MCPServer,
    MCPTool,
)
from raygent.tools._mcp import render_result

SERVER_SCRIPT = Path(__file__).with_name("_mcp_server.py")
READY_TIMEOUT_S = 30.0  # bound on the HTTP server's start (a loaded 2-core machine)


def stdio_server(**options: object) -> MCPServer:
    options.setdefault("name", "kv-stdio")
    options.setdefault("connect_timeout_s", 60.0)
    return MCPServer.stdio(sys.executable, [str(SERVER_SCRIPT), "stdio"], **options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_http_server() -> tuple[subprocess.Popen[bytes], str]:
    """The test server on streamable HTTP at 127.0.0.1:<free port>, once it accepts connections."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "http", str(port)])
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"MCP test server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            if time.monotonic() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                raise RuntimeError(f"MCP test server not listening on {port} after {READY_TIMEOUT_S} s")
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    proc, url = start_http_server()
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(params=["stdio", "http"])
def server(request: pytest.FixtureRequest) -> MCPServer:
    if request.param == "stdio":
        return stdio_server()
    return MCPServer.http(request.getfixturevalue("http_url"), name="kv-http", connect_timeout_s=60.0)


async def connect(server: MCPServer) -> tuple[MCPConnection, dict[str, MCPTool]]:
    conn = MCPConnection(server)
    tools = await conn.open()
    return conn, {t.name: t for t in tools}


async def stats(tools: dict[str, MCPTool]) -> dict:
    return json.loads(await tools["stats"].invoke({}))


# --- descriptions -------------------------------------------------------------------------------


def test_server_description_round_trips_as_msgpack():
    servers = [
        stdio_server(env={"A": "1"}, cwd="/tmp", prefix="kv_", timeout_s=5.0),
        MCPServer.http("https://example.com/mcp", headers={"Authorization": "Bearer t"}),
    ]
    assert decode(encode(servers), list[MCPServer]) == servers
    assert servers[1].label == "http: https://example.com/mcp"
    assert MCPServer.stdio("npx", ["-y", "some server"]).label == "stdio: npx -y 'some server'"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: MCPServer.stdio(""), "needs a command"),
        (lambda: MCPServer.http("ftp://host/mcp"), "http(s)"),
        (lambda: MCPServer.http("http://h/mcp", prefix="a b"), "prefix"),
        (lambda: MCPServer.stdio("x", timeout_s=0), "timeout_s"),
        (lambda: MCPServer.stdio("x", connect_timeout_s=-1), "connect_timeout_s"),
    ],
)
def test_bad_descriptions_are_typed_errors(make, words):
    with pytest.raises(MCPConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        make()


# --- listing and calls --------------------------------------------------------------------------


async def test_lists_tools_with_schemas_and_read_only_hints(server):
    conn, tools = await connect(server)
    try:
        assert set(tools) == {"lookup", "store", "fail", "picture", "nap", "stats"}
        assert {n for n, t in tools.items() if t.read_only} == {"lookup", "picture", "nap"}
        lookup = tools["lookup"].schema
        assert lookup["name"] == "lookup"
        assert lookup["description"] == "Read the value stored under a key."
        assert lookup["parameters"]["type"] == "object"
        assert lookup["parameters"]["properties"]["key"]["type"] == "string"
        assert lookup["parameters"]["required"] == ["key"]
        assert tools["store"].schema["parameters"]["required"] == ["key", "value"]
        assert tools["picture"].schema["parameters"]["properties"] == {}
        assert conn.server_info is not None and conn.server_info.name == "raygent-test"
    finally:
        await conn.aclose()
    assert not conn.connected


async def test_calls_return_text_and_describe_other_content(server):
    conn, tools = await connect(server)
    try:
        assert await tools["lookup"].invoke({"key": "beta"}) == "beta=2"
        assert await tools["picture"].invoke(None) == "a single pixel\n[image: image/png, 70 bytes]"
    finally:
        await conn.aclose()


async def test_prefix_renames_tools_but_calls_the_server_name():
    conn, tools = await connect(stdio_server(prefix="kv_"))
    try:
        assert set(tools) == {"kv_lookup", "kv_store", "kv_fail", "kv_picture", "kv_nap", "kv_stats"}
        assert tools["kv_lookup"].schema["name"] == "kv_lookup"
        assert tools["kv_lookup"].remote_name == "lookup"
        assert await tools["kv_lookup"].invoke({"key": "alpha"}) == "alpha=1"
    finally:
        await conn.aclose()


def test_render_result_covers_every_content_kind():
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(type="text", text="head"),
            mcp_types.AudioContent(type="audio", data="AAAA", mimeType="audio/wav"),
            mcp_types.ResourceLink(type="resource_link", uri="file:///a.txt", name="a", mimeType="text/plain"),
            mcp_types.EmbeddedResource(
                type="resource",
                resource=mcp_types.TextResourceContents(uri="file:///b.md", mimeType="text/markdown", text="# B"),
            ),
            mcp_types.EmbeddedResource(
                type="resource",
                resource=mcp_types.BlobResourceContents(uri="file:///c.bin", blob="AAAAAA=="),
            ),
        ]
    )
    assert render_result(result).split("\n") == [
        "head",
        "[audio: audio/wav, 3 bytes]",
        "[resource link: file:///a.txt (a, text/plain)]",
        "[resource: file:///b.md, text/markdown]",
        "# B",
        "[resource: file:///c.bin, 4 bytes]",
    ]
    structured = mcp_types.CallToolResult(content=[], structuredContent={"n": 3})
    assert render_result(structured) == '{"n":3}'
    assert render_result(mcp_types.CallToolResult(content=[])) == ""


# --- through the pipeline -----------------------------------------------------------------------


async def test_errors_become_error_results_naming_server_and_tool(server):
    conn, tools = await connect(server)
    pipeline = ToolPipeline(tools)
    try:
        before = (await stats(tools))["runs"]  # the HTTP server is shared by this module's tests
        failed = await pipeline.run_call(ToolCall("c1", "fail", {"reason": "nope"}))
        assert failed.is_error and failed.error_kind == "error"
        assert "refused: nope" in failed.content
        assert server.label in failed.content and "fail" in failed.content
        bad = await pipeline.run_call(ToolCall("c2", "lookup", {"key": 7}))
        assert bad.is_error and bad.error_kind == "bad_arguments"
        assert "key" in bad.content and "string" in bad.content
        missing = await pipeline.run_call(ToolCall("c3", "store", {"key": "k"}))
        assert missing.error_kind == "bad_arguments" and "value" in missing.content
        # Arguments checked against inputSchema never reached the server.
        runs = (await stats(tools))["runs"]
        assert runs.get("lookup") == before.get("lookup") and runs.get("store") == before.get("store")
    finally:
        await conn.aclose()


async def test_read_only_tool_is_cached_and_a_mutating_one_invalidates_it():
    conn, tools = await connect(stdio_server())
    pipeline = ToolPipeline(tools, workspace=None)
    try:
        first = await pipeline.run_call(ToolCall("c1", "lookup", {"key": "alpha"}))
        again = await pipeline.run_call(ToolCall("c2", "lookup", {"key": "alpha"}))
        assert (first.content, first.cached) == ("alpha=1", False)
        assert (again.content, again.cached, again.call_id) == ("alpha=1", True, "c2")
        assert (await stats(tools))["runs"]["lookup"] == 1
        # "store" is not annotated read-only: it runs every time and drops cached reads.
        stored = await pipeline.run_call(ToolCall("c3", "store", {"key": "alpha", "value": "9"}))
        assert stored.content == "stored alpha" and not stored.cached
        after = await pipeline.run_call(ToolCall("c4", "lookup", {"key": "alpha"}))
        assert (after.content, after.cached) == ("alpha=9", False)
        assert (await stats(tools))["runs"] == {"lookup": 2, "store": 1}
        assert pipeline.metrics()["cache"]["hits"] == 1
    finally:
        await conn.aclose()


async def test_read_only_calls_of_a_turn_run_in_parallel():
    conn, tools = await connect(stdio_server())
    pipeline = ToolPipeline(tools, cache=False)
    try:
        calls = [ToolCall(f"c{i}", "nap", {"seconds": 1.5 + i / 100}) for i in range(3)]
        started = time.perf_counter()
        results = await pipeline.run_all(calls)
        elapsed = time.perf_counter() - started
        assert [r.content for r in results] == ["slept 1.5", "slept 1.51", "slept 1.52"]
        # Observed overlap, not a speed claim: one after the other would take at least 4.53 s.
        assert elapsed < 4.5
    finally:
        await conn.aclose()


async def test_timeout_cancels_the_call_on_the_server():
    conn, tools = await connect(stdio_server(timeout_s=0.5))
    pipeline = ToolPipeline(tools)
    try:
        result = await pipeline.run_call(ToolCall("c1", "nap", {"seconds": 30}))
        assert result.is_error and result.error_kind == "timeout"
        for _ in range(50):  # notifications/cancelled is handled by the server asynchronously
            if (await stats(tools))["cancelled"]:
                break
            await asyncio.sleep(0.1)
        assert (await stats(tools))["cancelled"] == [30.0]
    finally:
        await conn.aclose()


async def test_dead_stdio_server_gives_an_error_result_naming_it():
    conn, tools = await connect(stdio_server(name="doomed"))
    pipeline = ToolPipeline(tools)
    try:
        os.kill((await stats(tools))["pid"], signal.SIGKILL)
        result = await pipeline.run_call(ToolCall("c1", "lookup", {"key": "alpha"}))
        assert result.is_error and result.error_kind == "error"
        assert "'doomed'" in result.content and "lookup" in result.content
    finally:
        await conn.aclose()


async def test_dead_http_server_gives_an_error_result_naming_it():
    proc, url = start_http_server()
    try:
        conn, tools = await connect(MCPServer.http(url, name="far", connect_timeout_s=60.0))
        pipeline = ToolPipeline(tools)
        assert (await pipeline.run_call(ToolCall("c0", "lookup", {"key": "beta"}))).content == "beta=2"
        stop(proc)
        result = await pipeline.run_call(ToolCall("c1", "lookup", {"key": "alpha"}))
        assert result.is_error and "'far'" in result.content and "lookup" in result.content
        later = await pipeline.run_call(ToolCall("c2", "lookup", {"key": "gamma"}))
        assert later.is_error and "'far' is not connected" in later.content
        await conn.aclose()
    finally:
        stop(proc)


# --- failed connections -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server, words",
    [
        (MCPServer.stdio("/nonexistent/mcp-server", name="ghost"), "No such file"),
        (MCPServer.stdio(sys.executable, ["-c", "pass"], name="quitter"), "Connection closed"),
        (MCPServer.stdio(sys.executable, ["-c", "import time; time.sleep(30)"], name="mute",
                         connect_timeout_s=0.5), "within 0.5 s"),  # fmt: skip
    ],
)
async def test_failed_connect_is_a_typed_error_naming_the_server(server, words):
    with pytest.raises(MCPConnectError, match=words) as caught:
        await MCPConnection(server).open()
    assert caught.value.server == server.name
    assert repr(server.name) in str(caught.value)


async def test_unreachable_http_server_is_a_typed_error():
    server = MCPServer.http(f"http://127.0.0.1:{free_port()}/mcp", name="nobody", connect_timeout_s=10.0)
    with pytest.raises(MCPConnectError, match="'nobody'") as caught:
        await MCPConnection(server).open()
    assert caught.value.server == "nobody"


# --- registry and ToolActor (without Ray) -------------------------------------------------------


async def test_tool_actor_registers_a_server_once_and_runs_its_tools(tmp_path):
    actor = ToolActor(str(tmp_path))
    try:
        server = stdio_server(prefix="kv_")
        schemas = await actor.add_mcp_servers(encode([server]))
        assert [s["name"] for s in schemas] == ["kv_lookup", "kv_store", "kv_fail", "kv_picture", "kv_nap",
                                                "kv_stats"]  # fmt: skip
        again = await actor.add_mcp_servers(encode([server]))
        assert again == schemas and len(actor.mcp.connections) == 1
        calls = [ToolCall("a", "kv_lookup", {"key": "alpha"}), ToolCall("b", "read_file", {"path": "x.txt"})]
        (tmp_path / "x.txt").write_text("built-in")
        results = {r.call_id: r async for r in _results(actor, calls)}
        assert results["a"].content == "alpha=1" and results["b"].content.endswith("built-in")
        # The server runs in the workspace unless told otherwise.
        pid = json.loads((await actor.pipeline.run_call(ToolCall("s", "kv_stats"))).content)["pid"]
        assert Path(f"/proc/{pid}/cwd").resolve() == tmp_path.resolve()
    finally:
        await actor.close_mcp()
    assert "kv_lookup" not in actor.tools and "kv_lookup" not in actor.pipeline.tools
    assert not actor.mcp.connections


async def _results(actor: ToolActor, calls: list[ToolCall]):
    async for data in actor.run_turn(encode(calls)):
        item = decode(data, ToolStreamItem)
        if isinstance(item, ToolResultChunk):
            yield item.result


async def test_collision_with_a_built_in_is_refused_and_a_prefix_resolves_it(tmp_path):
    actor = ToolActor(str(tmp_path))
    colliding = stdio_server(env={"RAYGENT_TEST_MCP_COLLIDE": "1"}, name="collider")
    try:
        with pytest.raises(MCPConfigError, match="built-in tool 'read_file'.*prefix") as caught:
            await actor.add_mcp_servers(encode([colliding]))
        assert caught.value.server == "collider"
        assert not actor.mcp.connections and "lookup" not in actor.tools
        fixed = msgspec.structs.replace(colliding, prefix="c_")
        names = [s["name"] for s in await actor.add_mcp_servers(encode([fixed]))]
        assert "c_read_file" in names
        assert actor.tools["read_file"] is not actor.tools["c_read_file"]
    finally:
        await actor.close_mcp()


async def test_two_servers_giving_one_name_are_refused_atomically(tmp_path):
    registry = MCPRegistry()
    first, second = stdio_server(name="one"), stdio_server(name="two")
    with pytest.raises(MCPConfigError, match="given by MCP servers 'one' and 'two'"):
        await registry.add([first, second], {})
    assert registry.connections == []
    tools = await registry.add([first, msgspec.structs.replace(second, prefix="two_")], {})
    try:
        assert len(tools) == 12 and len(registry.connections) == 2
    finally:
        await registry.aclose()


async def test_a_failing_server_closes_the_others_of_the_same_call(tmp_path):
    registry = MCPRegistry()
    good = stdio_server(name="good")
    with pytest.raises(MCPConnectError, match="'ghost'"):
        await registry.add([good, MCPServer.stdio("/nonexistent/mcp", name="ghost")], {})
    assert registry.connections == []
