"""A real MCP server written with the SDK's FastMCP, for the MCP tests.

``python tests/_mcp_server.py stdio`` serves on stdin/stdout; ``python tests/_mcp_server.py
http PORT`` serves streamable HTTP on ``http://127.0.0.1:PORT/mcp``. Its tools: a read-only
key-value ``lookup``, a mutating ``store``, ``fail`` (an ``isError`` result), ``picture`` (text
and an image), ``nap`` (sleeps; for timeouts and cancellation) and ``stats`` (executions per tool
and the server's pid, so tests can tell a cached answer from a new execution and kill the
server). With ``RAYGENT_TEST_MCP_COLLIDE=1`` in its environment it also has a tool named
``read_file``, like the built-in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections import Counter

from mcp.server.fastmcp import FastMCP, Image
from mcp.types import ToolAnnotations

# A 1x1 transparent PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

server = FastMCP("raygent-test", host="127.0.0.1", log_level="WARNING")
STORE: dict[str, str] = {"alpha": "1", "beta": "2"}
RUNS: Counter[str] = Counter()
CANCELLED: list[float] = []


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def lookup(key: str) -> str:
    """Read the value stored under a key."""
    RUNS["lookup"] += 1
    return f"{key}={STORE.get(key, '<missing>')}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def store(key: str, value: str) -> str:
    """Store a value under a key."""
    RUNS["store"] += 1
    STORE[key] = value
    return f"stored {key}"


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the given reason."""
    RUNS["fail"] += 1
    raise ValueError(f"refused: {reason}")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def picture() -> list:
    """A caption and a one-pixel image."""
    RUNS["picture"] += 1
    return ["a single pixel", Image(data=PIXEL, format="png")]


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def nap(seconds: float) -> str:
    """Sleep, then say so."""
    RUNS["nap"] += 1
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        CANCELLED.append(seconds)
        raise
    return f"slept {seconds}"


@server.tool()
def stats() -> str:
    """Executions per tool, naps cancelled by the client, and this process's pid, as JSON."""
    return json.dumps({"runs": dict(RUNS), "cancelled": CANCELLED, "pid": os.getpid()})


if os.environ.get("RAYGENT_TEST_MCP_COLLIDE") == "1":

    @server.tool(name="read_file", annotations=ToolAnnotations(readOnlyHint=True))
    def read_file_tool(path: str) -> str:
        """Pretends to read a file."""
        return f"not really {path}"


if __name__ == "__main__":
    if sys.argv[1] == "http":
        server.settings.port = int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run("stdio")
