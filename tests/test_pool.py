"""BufferPool: hit/miss counting, bounds, and reuse with msgspec's encode_into."""

from __future__ import annotations

import msgspec
import pytest

from raygent._native import BufferPool


def test_hits_and_misses() -> None:
    pool = BufferPool()
    a, b = pool.acquire(), pool.acquire()
    assert (pool.hits, pool.misses, pool.available) == (0, 2, 0)
    pool.release(a)
    pool.release(b)
    assert pool.available == 2
    assert pool.acquire() is b  # last released, first reused
    assert pool.acquire() is a
    pool.acquire()
    assert (pool.hits, pool.misses, pool.available) == (2, 3, 0)


def test_bounded_by_max_buffers() -> None:
    pool = BufferPool(max_buffers=2)
    buffers = [pool.acquire() for _ in range(3)]
    for buf in buffers:
        pool.release(buf)
    assert pool.available == 2
    assert pool.acquire() in buffers[:2]


def test_zero_max_buffers_keeps_nothing() -> None:
    pool = BufferPool(max_buffers=0)
    pool.release(pool.acquire())
    assert pool.available == 0
    pool.acquire()
    assert (pool.hits, pool.misses) == (0, 2)


def test_oversized_buffer_is_dropped() -> None:
    pool = BufferPool(max_buffer_bytes=1024)
    big = pool.acquire()
    big.extend(b"x" * 4096)
    pool.release(big)
    assert pool.available == 0
    small = pool.acquire()
    small.extend(b"x" * 100)
    pool.release(small)
    assert pool.available == 1


def test_cleared_on_reuse_keeping_its_memory() -> None:
    pool = BufferPool()
    buf = pool.acquire()
    buf.extend(b"secret" * 10_000)
    allocated = buf.__alloc__()
    pool.release(buf)
    assert len(buf) == 0
    again = pool.acquire()
    assert again is buf
    assert again == bytearray()
    assert bytes(again) == b""
    # The point of pooling: the allocation survives the release (bytearray.clear() frees it).
    assert again.__alloc__() == allocated
    again.extend(b"abc")
    assert again == bytearray(b"abc")


def test_release_twice_is_an_error() -> None:
    pool = BufferPool()
    buf = pool.acquire()
    pool.release(buf)
    with pytest.raises(ValueError):
        pool.release(buf)
    assert pool.available == 1


def test_buffer_with_live_export_is_not_pooled() -> None:
    pool = BufferPool()
    buf = pool.acquire()
    buf.extend(b"abc")
    view = memoryview(buf)
    with pytest.raises(BufferError):
        pool.release(buf)
    assert pool.available == 0
    assert view.tobytes() == b"abc"
    view.release()
    pool.release(buf)
    assert pool.available == 1


def test_release_rejects_non_bytearray() -> None:
    with pytest.raises(TypeError):
        BufferPool().release(b"bytes")  # type: ignore[arg-type]


class Call(msgspec.Struct):
    name: str
    args: dict[str, object]
    blob: bytes


def test_msgspec_encode_into_round_trip() -> None:
    pool = BufferPool()
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(Call)
    messages = [
        Call(name="read_file", args={"path": "src/main.py"}, blob=b"\x00" * 50_000),
        Call(name="grep", args={"pattern": "TODO", "n": 3}, blob=b""),
        Call(name="shell", args={"cmd": ["ls", "-la"]}, blob=b"\xff" * 10),
    ]
    for msg in messages:
        buf = pool.acquire()
        encoder.encode_into(msg, buf)
        assert decoder.decode(buf) == msg
        assert bytes(buf) == encoder.encode(msg)
        pool.release(buf)
    assert (pool.hits, pool.misses, pool.available) == (2, 1, 1)
    # The memory grown for a large message is still there on reuse, and a message of the same
    # size encodes into it without growing it again. (A much smaller message would let CPython
    # shrink the bytearray, which it does when resized below half its allocation.)
    buf = pool.acquire()
    encoder.encode_into(messages[0], buf)
    pool.release(buf)
    buf = pool.acquire()
    allocated = buf.__alloc__()
    assert allocated >= 50_000
    encoder.encode_into(messages[0], buf)
    assert decoder.decode(buf) == messages[0]
    assert buf.__alloc__() == allocated
    pool.release(buf)
