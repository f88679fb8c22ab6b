"""raygent.transport: envelopes with out-of-band payloads, and the coalescing batcher."""

from __future__ import annotations

import asyncio
import pickle
import sys

import msgspec
import pytest

from raygent.errors import RaygentError, TransportError
from raygent.messages import Message, ToolMessage, UserMessage, encode
from raygent.transport import (
    DEFAULT_MAX_BATCH_BYTES,
    RAY_INLINE_LIMIT_BYTES,
    Batcher,
    Coalescer,
    Envelope,
    decode_batch,
    encode_all,
    pack,
)


class Output(msgspec.Struct, frozen=True):
    call_id: str
    data: bytes
    chunks: list[bytes] = []
    extra: dict[str, bytes] = {}


class ViewOutput(msgspec.Struct):
    call_id: str
    data: memoryview


def _by_value(ray) -> None:
    # Ray workers cannot import this test module: its helpers travel with the remote code.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _oob_roundtrip(env: Envelope) -> tuple[Envelope, list[pickle.PickleBuffer]]:
    """Pickle as Ray does (protocol 5 with a buffer callback) and load with the same buffers."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(env, protocol=5, buffer_callback=buffers.append)
    return pickle.loads(data, buffers=buffers), buffers


# --- envelopes --------------------------------------------------------------------------------


def test_envelope_round_trip_equal_at_every_depth():
    big = bytes(range(256)) * 1024  # 256 KiB
    msg = Output(call_id="c1", data=big, chunks=[b"small", big[:100_000]], extra={"stderr": big[::-1]})
    env = pack(msg, threshold_bytes=64 * 1024)
    assert env.paths == (("data",), ("chunks", 1), ("extra", "stderr"))
    assert len(env.body) < 200  # the payloads are not in the body
    loaded, buffers = _oob_roundtrip(env)
    assert len(buffers) == 3
    out = loaded.unpack(Output)
    assert out.call_id == "c1" and out.chunks[0] == b"small"
    assert bytes(out.data) == big
    assert bytes(out.chunks[1]) == big[:100_000]
    assert bytes(out.extra["stderr"]) == big[::-1]


def test_large_field_is_a_view_over_the_senders_buffer_not_a_copy():
    source = bytearray(b"a" * 100_000)
    env = pack(Output(call_id="c", data=source), threshold_bytes=1024)  # type: ignore[arg-type]
    loaded, _ = _oob_roundtrip(env)
    out = loaded.unpack(Output)
    assert isinstance(out.data, memoryview)
    # Out of band means shared: a write to the sender's buffer shows through the view.
    source[0:3] = b"xyz"
    assert bytes(out.data[:3]) == b"xyz"


def test_small_fields_stay_in_the_body_and_decode_as_declared():
    msg = Output(call_id="c", data=b"x" * 100)
    env = pack(msg)
    assert env.buffers == () and env.paths == ()
    assert env.unpack(Output) == msg
    # A field typed memoryview is a view over the body even below the threshold.
    view = pack(ViewOutput(call_id="v", data=memoryview(b"y" * 10))).unpack(ViewOutput)
    assert isinstance(view.data, memoryview) and bytes(view.data) == b"y" * 10


def test_in_band_pickle_still_round_trips():
    big = b"q" * 200_000
    env = pack(Output(call_id="c", data=big))
    out = pickle.loads(pickle.dumps(env, protocol=4)).unpack(Output)
    assert bytes(out.data) == big


def test_messages_of_the_vocabulary_pass_unchanged():
    msg = ToolMessage(call_id="c", name="grep", content="hit\n" * 50_000)
    env = pack(msg)
    assert env.buffers == ()  # text is not extracted: only binary fields travel out of band
    assert env.unpack(Message) == msg


def test_unpack_to_the_wrong_type_is_a_typed_error():
    env = pack(UserMessage(content="hi"))
    with pytest.raises(TransportError) as err:
        env.unpack(Output)
    assert isinstance(err.value, RaygentError)
    # The envelope is unharmed: the right type still decodes.
    assert env.unpack(Message) == UserMessage(content="hi")


def test_non_contiguous_view_is_refused_with_its_path():
    strided = memoryview(b"ab" * 100_000)[::2]
    with pytest.raises(TransportError) as err:
        pack({"payload": strided}, threshold_bytes=1024)
    assert err.value.path == ("payload",)


@pytest.mark.ray
def test_envelope_across_ray_decodes_over_the_object_store(ray_cluster):
    ray = ray_cluster
    _by_value(ray)

    @ray.remote(num_cpus=0)
    def receive(env: Envelope) -> tuple[bool, bool, str, int, int]:
        # A plain dict: msgspec Structs cannot be pickled by value, and this module's are.
        data = env.unpack()["data"]
        return isinstance(data, memoryview), data.readonly, type(data.obj).__name__, data.nbytes, data[-1]

    data = bytes(range(256)) * 4096  # 1 MiB: above the inline limit, so it goes to the object store
    is_view, readonly, over, nbytes, last = ray.get(receive.remote(pack({"call_id": "c", "data": data})))
    assert is_view and readonly  # read-only: a view over shared memory, not a private copy
    assert over != "bytes"
    assert nbytes == len(data) and last == 255


# --- coalescer --------------------------------------------------------------------------------


def _msgs(n: int, size: int = 2000) -> list[UserMessage]:
    return [UserMessage(content=f"{i:06d}" + "x" * (size - 6)) for i in range(n)]


def test_batches_respect_size_and_count_bounds_and_keep_order():
    msgs = _msgs(500)
    batches = encode_all(msgs)
    assert all(len(b) <= DEFAULT_MAX_BATCH_BYTES < RAY_INLINE_LIMIT_BYTES for b in batches)
    decoded = [m for b in batches for m in decode_batch(b, Message)]
    assert decoded == msgs
    # Bytes bound first for 2 KB messages, and batches are filled, not cut early.
    assert len(batches) == -(-500 // len(decode_batch(batches[0], Message)))
    tiny = encode_all([UserMessage(content="t")] * 1000, max_count=64)
    assert [len(decode_batch(b, Message)) for b in tiny] == [64] * 15 + [40]


def test_coalescer_header_forms_and_exact_bounds():
    c = Coalescer(max_bytes=10_000_000, max_count=70_000)
    for _ in range(69_999):
        assert c.add(b"\xc0") == []  # msgpack nil
    (batch,) = c.add(b"\xc0")
    assert batch[0] == 0xDD  # array32 header past 65,535 items
    assert decode_batch(batch) == [None] * 70_000
    c = Coalescer(max_bytes=100, max_count=1000)
    out = []
    for i in range(30):
        out += c.add(encode(i * 1000))  # 3-byte ints
    last = c.flush()
    assert last is not None
    assert all(len(b) <= 100 for b in out + [last])
    assert [x for b in out + [last] for x in decode_batch(b, int)] == [i * 1000 for i in range(30)]
    assert c.flush() is None


def test_oversized_message_is_refused_and_the_batch_kept():
    c = Coalescer(max_bytes=1000)
    c.add(encode("a"))
    with pytest.raises(TransportError):
        c.add(b"\xc4" + b"x" * 1000)
    assert len(c) == 1 and decode_batch(c.flush() or b"") == ["a"]


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        Coalescer(max_count=0)
    with pytest.raises(ValueError):
        Coalescer(max_bytes=5)
    with pytest.raises(ValueError):
        Batcher(lambda b, n: None, flush_interval_ms=0)


def test_decode_batch_of_the_wrong_type_is_a_typed_error():
    with pytest.raises(TransportError):
        decode_batch(encode_all([UserMessage(content="x")])[0], int)


# --- batcher ----------------------------------------------------------------------------------


async def test_batcher_flushes_a_partial_batch_on_its_timer():
    got: list[tuple[bytes, int]] = []
    batcher = Batcher(lambda b, n: got.append((b, n)), flush_interval_ms=5)
    await batcher.put(UserMessage(content="one"))
    await batcher.put(UserMessage(content="two"))
    assert got == [] and len(batcher) == 2
    for _ in range(200):  # bounded: at most 2 s
        if got:
            break
        await asyncio.sleep(0.01)
    assert [n for _, n in got] == [2]
    assert decode_batch(got[0][0], Message) == [UserMessage(content="one"), UserMessage(content="two")]
    assert len(batcher) == 0


async def test_batcher_timer_does_not_cut_the_next_batch_short():
    got: list[int] = []
    batcher = Batcher(lambda b, n: got.append(n), max_count=10, flush_interval_ms=50)
    for m in _msgs(15, size=10):
        await batcher.put(m)
    await asyncio.sleep(0.02)  # less than the interval since the 11th message
    assert got == [10]
    await batcher.flush()
    assert got == [10, 5]


async def test_batcher_preserves_order_and_bounds_in_flight():
    received: list[UserMessage] = []
    in_flight = 0
    peak = 0

    async def ack(batch: bytes) -> None:
        nonlocal in_flight
        await asyncio.sleep(0.001)
        received.extend(decode_batch(batch, Message))
        in_flight -= 1

    def send(batch: bytes, count: int):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        return asyncio.ensure_future(ack(batch))

    msgs = _msgs(1000)
    async with Batcher(send, max_in_flight=3) as batcher:
        for m in msgs:
            await batcher.put(m)
    assert received == msgs
    assert batcher.messages_sent == 1000 and batcher.batches_sent == len(encode_all(msgs))
    assert peak <= 4  # max_in_flight outstanding plus the one just sent


async def test_batcher_raises_the_receivers_error_on_the_sender():
    async def fail() -> None:
        raise RuntimeError("receiver down")

    batcher = Batcher(lambda b, n: asyncio.ensure_future(fail()), max_count=1, max_in_flight=1)
    with pytest.raises(RuntimeError, match="receiver down"):
        for m in _msgs(5, size=10):
            await batcher.put(m)


@pytest.mark.ray
def test_batcher_between_two_ray_actors_in_order(ray_cluster):
    ray = ray_cluster
    _by_value(ray)

    @ray.remote(num_cpus=0)
    class Sink:
        def __init__(self) -> None:
            self.seen: list[str] = []
            self.batches = 0

        def take(self, batch: bytes) -> None:
            self.batches += 1
            self.seen.extend(m.content for m in decode_batch(batch, Message))

        def result(self) -> tuple[list[str], int]:
            return self.seen, self.batches

    @ray.remote(num_cpus=0)
    class Source:
        async def send(self, sink, n: int) -> int:
            async with Batcher(lambda b, c: sink.take.remote(b)) as batcher:
                for m in _msgs(n):
                    await batcher.put(m)
            return batcher.batches_sent

    sink = Sink.remote()
    source = Source.remote()
    batches = ray.get(source.send.remote(sink, 500))
    seen, received_batches = ray.get(sink.result.remote())
    assert seen == [m.content for m in _msgs(500)]
    assert received_batches == batches < 500 // 40
    ray.kill(source)
    ray.kill(sink)
