"""A real HTTP/1.1 server on 127.0.0.1 serving recorded bytes in random cuts, for provider tests.

Shared by ``test_provider_openai.py``, ``test_providers_wire.py`` and
``test_provider_complete.py``: one request per
connection, answered by the next *plan* (a coroutine writing the raw response), so tests can
script 429s, 5xx, ``Retry-After`` and connections dropped midway. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
INDEX = DATA / "http" / "STREAMS_INDEX.jsonl"
SERVER_LIFETIME_S = 60.0  # hard bound on any one connection handler


def load_index() -> list[dict[str, Any]]:
    """Rows of ``../shared/data/http/STREAMS_INDEX.jsonl``; empty when the data is absent."""
    if not INDEX.is_file():
        return []
    return [json.loads(line) for line in INDEX.read_text().splitlines() if line.strip()]


def body_of(row: dict[str, Any]) -> bytes:
    """The response body bytes of an index row (``.chunks.jsonl`` re-framed as SSE)."""
    raw = (DATA / "http" / row["file"]).read_bytes()
    if row["framing"] == "sse":
        return raw
    assert row["framing"] == "chunks-jsonl", row["framing"]
    # vercel/ai fixtures keep one data payload per line with the SSE framing removed.
    return b"".join(b"data: " + line + b"\n\n" for line in raw.splitlines() if line.strip())


def seed_of(row: dict[str, Any]) -> int:
    return zlib.crc32(row["file"].encode())


def random_cuts(body: bytes, seed: int, max_size: int = 40) -> list[bytes]:
    rng = random.Random(seed)
    pieces, pos = [], 0
    while pos < len(body):
        size = rng.randint(1, max_size)
        pieces.append(body[pos : pos + size])
        pos += size
    return pieces



# --- a real HTTP/1.1 server on loopback -----------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Plan = Callable[[asyncio.StreamWriter], Awaitable[None]]


class LoopbackServer:
    """asyncio HTTP/1.1 server: one request per connection, answered by the next plan."""

    def __init__(self) -> None:
        self.plans: list[Plan] = []
        self.requests: list[Request] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(SERVER_LIFETIME_S):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Request(method, path, headers, body))
                # The last plan answers every further request (e.g. "429 forever").
                plan = self.plans.pop(0) if len(self.plans) > 1 else self.plans[0]
                await plan(writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


def sse_plan(body: bytes, *, seed: int, chunked: bool = True, max_size: int = 40) -> Plan:
    """200 text/event-stream: ``body`` cut into seeded random pieces of 1..``max_size`` bytes, each
    flushed."""

    async def plan(writer: asyncio.StreamWriter) -> None:
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else b""
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n" + framing + b"\r\n"
        )
        rng = random.Random(seed)
        for piece in random_cuts(body, seed, max_size):
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            # Mostly just yield to the loop; now and then let the reader catch up on its own.
            await asyncio.sleep(0.001 if rng.random() < 0.05 else 0)
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    return plan


def json_plan(body: bytes, *, seed: int, max_size: int = 4096) -> Plan:
    """200 application/json: a whole (non-streamed) response body, sent chunked in seeded random
    pieces of 1..``max_size`` bytes, as a server may flush a large JSON answer."""

    async def plan(writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for piece in random_cuts(body, seed, max_size):
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return plan


def drop_plan(body: bytes, *, seed: int) -> Plan:
    """Start a chunked 200 response, send ``body`` and close the connection without the final
    chunk. A graceful close rather than an RST: an RST may make the client's kernel discard
    bytes it had received but not yet read, and the test wants to know exactly what arrived."""

    async def plan(writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for piece in random_cuts(body, seed):
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()

    return plan


def status_plan(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Plan:
    async def plan(writer: asyncio.StreamWriter) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n".encode()
            + body
        )
        await writer.drain()

    return plan


@pytest.fixture
async def server():
    srv = LoopbackServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
