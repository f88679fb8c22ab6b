"""Actors and messages of ``test_bench_transport.py``, in a module the Ray workers import.

Kept out of the test module so Ray pickles these classes by reference, as it would a user's
installed code: pickled by value, every message would carry its class definition and the peer
(Ray pickling the Struct) would be timed with that added cost.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import msgspec

from raygent.transport import Batcher, decode_batch, pack

N_SMALL = 20_000


class ToolOutput(msgspec.Struct, frozen=True):
    """Raw output of one tool call, as a ToolActor would ship it before ANSI stripping."""

    call_id: str
    name: str
    data: bytes
    exit_code: int = 0


class Small(msgspec.Struct, frozen=True):
    """A 2 KB message (a chunk of tool output streamed to the agent)."""

    seq: int
    session_id: str
    text: str


def _check(view: Any, size: int) -> tuple[int, int, int]:
    mv = memoryview(view)
    return mv.nbytes, mv[0], mv[size - 1]


class Consumer:
    """Checks each tool output it receives; with tracing on, reports its Python-heap peak."""

    def trace(self, on: bool) -> None:
        if on:
            tracemalloc.start()
            tracemalloc.reset_peak()
        else:
            tracemalloc.stop()

    def _answer(self, data: Any, size: int) -> dict[str, Any]:
        nbytes, first, last = _check(data, size)
        out: dict[str, Any] = {
            "nbytes": nbytes,
            "first": first,
            "last": last,
            "is_view": isinstance(data, memoryview),
            "readonly": isinstance(data, memoryview) and data.readonly,
            "over": type(data.obj).__name__ if isinstance(data, memoryview) else type(data).__name__,
        }
        if tracemalloc.is_tracing():
            out["heap_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
        return out

    def receive_envelope(self, envelope: Any, size: int) -> dict[str, Any]:
        message = envelope.unpack(ToolOutput)
        return self._answer(message.data, size)

    def receive_struct(self, message: ToolOutput, size: int) -> dict[str, Any]:
        return self._answer(message.data, size)


def _payload(size: int) -> bytes:
    # Not all one byte value: the consumer's first/last checks then catch a misplaced buffer.
    return (bytes(range(256)) * (size // 256 + 1))[:size]


class Producer:
    """Holds one tool output and sends it to a :class:`Consumer`, as an envelope or a Struct."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = _payload(size)

    def send(self, consumer: Any, how: str, size: int | None = None, trace: bool = False) -> dict[str, Any]:
        """Send the output (or a fresh one of ``size`` bytes); with ``trace``, add the sender's heap peak."""
        import ray

        size = self.size if size is None else size
        data = self.data if size == self.size else _payload(size)
        message = ToolOutput(call_id="call_1", name="run_command", data=data)
        if trace:
            tracemalloc.start()
            tracemalloc.reset_peak()
        if how == "raygent":
            answer = ray.get(consumer.receive_envelope.remote(pack(message), size))
        else:
            answer = ray.get(consumer.receive_struct.remote(message, size))
        if trace:
            answer["sender_heap_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        return answer


# --- many small messages --------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.count = 0
        self.last_seq = -1
        self.in_order = True

    def _take(self, messages: list[Small]) -> None:
        for m in messages:
            if m.seq != self.last_seq + 1:
                self.in_order = False
            self.last_seq = m.seq
        self.count += len(messages)

    def batch(self, data: bytes) -> int:
        self._take(decode_batch(data, Small))
        return self.count

    def one(self, data: bytes) -> int:
        self._take([msgspec.msgpack.decode(data, type=Small)])
        return self.count

    def reset(self) -> None:
        self.count, self.last_seq, self.in_order = 0, -1, True

    def summary(self) -> tuple[int, int, bool]:
        return self.count, self.last_seq, self.in_order


class Sender:
    def __init__(self) -> None:
        self.messages = [Small(seq=i, session_id="s-0001", text="x" * 1990) for i in range(N_SMALL)]

    async def run(self, receiver: Any, how: str, n: int) -> None:
        if how == "raygent":
            async with Batcher(lambda batch, count: receiver.batch.remote(batch)) as batcher:
                for message in self.messages[:n]:
                    await batcher.put(message)
        else:
            refs = [receiver.one.remote(msgspec.msgpack.encode(m)) for m in self.messages[:n]]
            await asyncio.gather(*refs)
