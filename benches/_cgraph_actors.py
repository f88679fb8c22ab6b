"""Actors of ``test_bench_compiled_graphs.py``, in a module the Ray workers import.

Kept out of the test module so Ray pickles these classes by reference, as it would installed
code (see ``_transport_actors.py``). Every way of making a tool round trip carries the same bytes:
a ``ToolCall`` list encoded by :func:`raygent.messages.encode` one way and an encoded
``ToolResultChunk`` of the requested size the other, so the ways differ only in how Ray moves them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from raygent.messages import ToolCall, ToolResult, ToolResultChunk, ToolStreamItem, decode, encode
from raygent.transport import Batcher, decode_batch

#: The ways an ``AgentSide`` reaches its ``ToolSide`` (``how`` below).
COMPILED = "compiled graph"
CALL = "actor call"
RUN_TURN = "run_turn streaming generator"
BATCHER = "Batcher"


def make_call(call_id: str, nbytes: int = 2_000) -> bytes:
    """One encoded tool call of exactly ``nbytes`` bytes (a ``run_command`` with a long command).

    Raises
    ------
    ValueError
        If ``nbytes`` is below the size of the call with an empty command.
    """

    def encoded(n: int) -> bytes:
        return encode([ToolCall(id=call_id, name="run_command", arguments={"command": "x" * n})])

    n = max(0, nbytes - len(encoded(0)))
    # The string's msgpack header grows with its length (1, 2, 3 or 5 bytes): correct for it.
    n -= len(encoded(n)) - nbytes
    out = encoded(n)
    if len(out) != nbytes:
        raise ValueError(f"no tool call of {nbytes} bytes with id {call_id!r} (closest {len(out)})")
    return out


def check_answer(answer: bytes | memoryview, call_id: str, output_bytes: int) -> None:
    """Raise AssertionError unless ``answer`` is the result of ``call_id`` carrying ``output_bytes``."""
    item = decode(answer, ToolStreamItem)
    assert isinstance(item, ToolResultChunk), type(item).__name__
    assert item.result.call_id == call_id, (item.result.call_id, call_id)
    assert len(item.result.content) == output_bytes, (len(item.result.content), output_bytes)


class ToolSide:
    """Answers each tool call with a result of ``output_bytes`` bytes of content.

    ``answer`` is a plain method (compiled graphs and ordinary calls); ``run_turn`` mirrors
    :meth:`raygent.actors.ToolActor.run_turn`, a streaming generator of encoded items, which is
    how raygent's ``AgentActor`` reaches its tools.
    """

    def __init__(self, output_bytes: int) -> None:
        self.content = "o" * output_bytes
        self.go = threading.Event()
        self.received = 0

    def pid(self) -> int:
        return os.getpid()

    def _result(self, calls: bytes) -> bytes:
        (call,) = decode(calls, list[ToolCall])
        return encode(ToolResultChunk(ToolResult(call_id=call.id, name=call.name, content=self.content)))

    def answer(self, calls: bytes) -> bytes:
        return self._result(calls)

    async def run_turn(self, calls: bytes) -> AsyncIterator[bytes]:
        yield self._result(calls)

    def numbers(self, n: int) -> Any:
        # A generator method: Ray runs it as a streaming generator when called normally.
        yield from range(n)

    async def answer_async(self, calls: bytes) -> bytes:
        await asyncio.sleep(0)
        return self._result(calls)

    def wait_for_go(self, timeout_s: float) -> str:
        """Block until :meth:`release` is called (by an ordinary call) or ``timeout_s`` passes."""
        return "released" if self.go.wait(timeout_s) else "timed out"

    def release(self) -> int:
        self.go.set()
        return os.getpid()

    def take(self, message: bytes) -> int:
        self.received += 1
        return self.received

    def take_batch(self, batch: bytes) -> int:
        self.received += len(decode_batch(batch, msgspec.Raw))
        return self.received

    def count(self) -> int:
        return self.received


class AgentSide:
    """The agent's end: makes tool round trips to a ``ToolSide`` one way, timing each inside
    the actor (where raygent's ``AgentActor`` would see it).

    With ``how == COMPILED`` this actor compiles a graph ``InputNode -> tool.<method>`` at start
    and is its driver (``method`` is ``"answer"`` for round trips, ``"take"`` for one-way
    messages); :meth:`close` tears it down.
    """

    def __init__(self, tool: Any, how: str, method: str = "answer") -> None:
        self.tool = tool
        self.how = how
        self.graph: Any = None
        if how == COMPILED:
            from ray.dag import InputNode

            with InputNode() as inp:
                self.graph = getattr(tool, method).bind(inp).experimental_compile(enable_asyncio=True)

    def pid(self) -> int:
        return os.getpid()

    async def _trip(self, calls: bytes) -> bytes:
        if self.how == COMPILED:
            return await (await self.graph.execute_async(calls))  # type: ignore[no-any-return]
        if self.how == CALL:
            return await self.tool.answer.remote(calls)  # type: ignore[no-any-return]
        assert self.how == RUN_TURN, self.how
        answers = [await ref async for ref in self.tool.run_turn.options(num_returns="streaming").remote(calls)]
        assert len(answers) == 1, len(answers)
        return answers[0]  # type: ignore[no-any-return]

    async def check(self, output_bytes: int) -> None:
        """One round trip, its answer checked (raises AssertionError when wrong)."""
        check_answer(await self._trip(make_call("call_check")), "call_check", output_bytes)

    async def trips(self, n: int) -> list[float]:
        """``n`` round trips one after the other; each one's seconds, in order."""
        calls = [make_call(f"call_{i}") for i in range(n)]
        out = []
        for c in calls:
            started = time.perf_counter()
            await self._trip(c)
            out.append(time.perf_counter() - started)
        return out

    async def send(self, messages: list[bytes], window: int = 8) -> int:
        """Send ``messages`` one way (their number as the receiver counted it at the end).

        ``COMPILED``: one graph execution per message, up to ``window`` in flight (compiled
        graphs cap in-flight executions). ``CALL``: one actor call per message, pipelined.
        ``BATCHER``: raygent's way for many small messages, a :class:`raygent.transport.Batcher`
        sending one call per batch.
        """
        if self.how == COMPILED:
            pending: deque[Any] = deque()
            last = 0
            for m in messages:
                if len(pending) >= window:
                    last = await pending.popleft()
                pending.append(await self.graph.execute_async(m))
            while pending:
                last = await pending.popleft()
            return last
        if self.how == CALL:
            refs = [self.tool.take.remote(m) for m in messages]
            return max(await asyncio.gather(*refs))
        assert self.how == BATCHER, self.how
        async with Batcher(lambda batch, count: self.tool.take_batch.remote(batch)) as batcher:
            for m in messages:
                await batcher.put_encoded(m)
        return await self.tool.count.remote()  # type: ignore[no-any-return]

    def close(self) -> None:
        """Tear the compiled graph down (its actors stop polling); a no-op for the other ways."""
        if self.graph is not None:
            self.graph.teardown()
            self.graph = None
