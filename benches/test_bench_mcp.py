"""What calling an MCP tool through raygent costs beside a direct call with the ``mcp`` SDK.

The FastMCP test server (``tests/_mcp_server.py``) runs over stdio and over streamable HTTP on
127.0.0.1; its read-only ``lookup`` tool is called ``CALLS`` times in sequence per round:

- ``raygent``: ``ToolPipeline.run_call`` with the cache off (argument check against the
  ``inputSchema``, queue, breaker, timeout, result rendering, ``ToolResult`` building), over an
  :class:`~raygent.tools.MCPConnection`;
- ``mcp``: ``ClientSession.call_tool`` on the same SDK session, text content joined.

Both talk to the same server process over the same transport, so the ratio is raygent's added
cost per call on top of the protocol round trip.

Run::

    .venv/bin/python -m pytest benches/test_bench_mcp.py --benchmark-columns=median,iqr,rounds
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import case

from raygent.messages import ToolCall
from raygent.pipeline import ToolPipeline
from raygent.tools import MCPConnection, MCPServer

SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "_mcp_server.py"
CALLS = 50  # calls per round
READY_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "http", str(port)])
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, "the MCP test server exited before listening"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"MCP test server not listening after {READY_TIMEOUT_S} s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def connections(loop, http_url) -> Iterator[dict[str, MCPConnection]]:
    """One connection per transport, shared by raygent's case and the SDK's."""
    opened: dict[str, MCPConnection] = {}
    try:
        for transport, server in [
            ("stdio", MCPServer.stdio(sys.executable, [str(SERVER_SCRIPT), "stdio"], connect_timeout_s=60.0)),
            ("streamable HTTP", MCPServer.http(http_url, connect_timeout_s=60.0)),
        ]:
            opened[transport] = MCPConnection(server)
            loop.run_until_complete(opened[transport].open())
        yield opened
    finally:
        for conn in opened.values():
            loop.run_until_complete(conn.aclose())


@pytest.mark.parametrize("transport", ["stdio", "streamable HTTP"])
@pytest.mark.parametrize("impl", ["raygent", "mcp"])
def test_mcp_call_overhead(benchmark, loop, connections, transport, impl):
    case(benchmark, group=f"mcp tools/call lookup over {transport}", impl=impl, items=CALLS)
    conn = connections[transport]
    pipe = ToolPipeline({t.name: t for t in conn.tools}, cache=False)
    session = conn.session
    assert session is not None
    keys = ["alpha", "beta"] * (CALLS // 2)

    async def via_raygent() -> list[str]:
        return [(await pipe.run_call(ToolCall(f"c{i}", "lookup", {"key": k}))).content for i, k in enumerate(keys)]

    async def via_sdk() -> list[str]:
        out = []
        for k in keys:
            result = await session.call_tool("lookup", {"key": k})
            out.append("\n".join(getattr(b, "text", "") for b in result.content))
        return out

    run = via_raygent if impl == "raygent" else via_sdk
    assert loop.run_until_complete(run()) == [f"{k}={'1' if k == 'alpha' else '2'}" for k in keys]
    benchmark.pedantic(lambda: loop.run_until_complete(run()), rounds=10, warmup_rounds=1)
