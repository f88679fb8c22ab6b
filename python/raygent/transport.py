"""Messages across Ray: large binary fields out of band, small messages coalesced into batches.

Two costs dominate moving msgspec messages between Ray actors, and each has its own tool here.

**Large payloads** (a tool's 100 MB of raw output): pickling a Struct puts its ``bytes`` in the
pickle stream, so the payload is copied into the pickle, again into Ray's object store and again
out of it on the receiving side. :func:`pack` instead wraps the message in an :class:`Envelope`
that pickles with protocol 5 (PEP 574): binary fields of at least ``threshold_bytes`` leave the
msgpack body and travel as out-of-band ``PickleBuffer`` s, which Ray writes into its shared-memory
object store once; on the other side :meth:`Envelope.unpack` decodes the small body and puts the
payloads back as read-only ``memoryview`` s over the object store's memory (no copy). Fields
typed ``memoryview`` below the threshold are also views (msgspec decodes them over the body).

**Small messages** (2 KB deltas and events): one Ray actor call costs about 1 ms on the project's
2-core machine while msgpack-encoding a 2 KB message costs under 1 µs, so :class:`Coalescer`
(pure) and :class:`Batcher` (asyncio) pack many encoded messages into one msgpack array per call,
each batch kept under Ray's 100 KiB inline-argument limit (:data:`RAY_INLINE_LIMIT_BYTES`) so it
travels inside the task spec rather than through the object store. :func:`decode_batch` reads a
batch back into a list in send order.

**Ray Compiled Graphs are not used**: the ``AgentActor`` -> ``ToolActor`` hot path stays on
ordinary calls. Figures from ``benches/test_bench_compiled_graphs.py`` (Ray 2.60, the 2-core
machine shared with other work, load average 20-28, so read ranges): a 2 KB tool round trip
took p50 0.3-0.37 ms through a compiled graph, 1.1-1.2 ms as an actor call and 2.0-2.8 ms as the
``run_turn`` streaming generator raygent uses, a saving of 1.7-2.2 ms per tool call; in the most
loaded run the compiled graph's lead vanished (3.6 ms against 4.2 and 3.8 ms per trip; at 1 MB
16.6 ms against 4.7 and 12.4 ms), because its polling loop competes for the same two cores. A
turn is a model response (50 ms to seconds) plus tools (the 35 recorded SWE-agent calls: p50
228 ms, 115 ms to 1.95 s) plus raygent's own overhead (``raygent replay``: 9-13 ms per turn),
so the saving is 0.6-0.8% of a turn at p50 with a 50 ms model response, 0.1-0.2% with 1 s,
2.7-3.7% at most with a tool that takes no time. The costs: each compiled actor polls while idle
(0.12-0.56 of a core under that load, against 0.02 for ordinary actors and for the same actor
once the graph is torn down); ``run_turn`` is a streaming generator (refused at compile time)
on an asyncio actor (``async def`` methods fail: the graph does not await them); a ToolActor
serves every session of its workspace but runs one graph at a time (a second graph's executions wait
until the first is torn down); ordinary calls such as ``cancel`` run meanwhile on another
thread; a graph dies with its actor (its channels close; it must be compiled again). For many
small messages :class:`Batcher` is faster anyway: 48 µs per one-way 2 KB message against 392 µs
as one compiled execution each. On a larger machine (not measured: only this one was
available) the idle core per compiled actor becomes affordable and the loop no longer starves,
but the saving stays a millisecond or two of a turn that lasts hundreds, so the decision holds
unless a workload's tools and model responses take a few milliseconds.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from raygent.errors import TransportError

__all__ = [
    "RAY_INLINE_LIMIT_BYTES",
    "DEFAULT_THRESHOLD_BYTES",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_COUNT",
    "DEFAULT_FLUSH_INTERVAL_MS",
    "Envelope",
    "pack",
    "Coalescer",
    "Batcher",
    "decode_batch",
    "encode_all",
]

#: Ray passes a task argument whose serialized size is below this inside the task spec
#: (``max_direct_call_object_size``, 100 KiB); larger ones go through the object store.
RAY_INLINE_LIMIT_BYTES = 100 * 1024

#: Binary fields from this size (bytes) travel out of band. Measured actor to actor on the 2-core
#: machine (median round trip, the same envelope with the payload out of band / in the body):
#: 16 KiB 1.0 / 0.85 ms, 64 KiB 1.0 / 1.0 ms, 512 KiB 3.5 / 3.4 ms, 2 MiB 5.0 / 4.6 ms,
#: 8 MiB 8.9 / 34 ms, 32 MiB 9.2 / 156 ms. Up to a few MiB the time is a wash (noise on a
#: shared machine is larger than the difference), so the threshold is set by memory: from
#: 64 KiB a message is near Ray's 100 KiB inline limit, past which Ray stores it in the object
#: store, and out of band that is the payload's only copy instead of three.
DEFAULT_THRESHOLD_BYTES = 64 * 1024

#: Batch size bound (bytes of the msgpack array): under Ray's inline limit with 4 KiB left for
#: the pickle framing of the argument and the rest of the task spec.
DEFAULT_MAX_BATCH_BYTES = RAY_INLINE_LIMIT_BYTES - 4 * 1024

#: Batch count bound. With 2 KB messages the byte bound (48 messages) is reached first; the count
#: bound keeps batches of tiny messages (30 B text deltas) from growing into thousands, which
#: would delay the first of them for the whole batch.
DEFAULT_MAX_BATCH_COUNT = 512

#: Longest a message waits for its batch to fill (milliseconds). 2 ms keeps the added latency
#: near one Ray call's own cost (about 1 ms here) while a busy sender fills batches long before.
DEFAULT_FLUSH_INTERVAL_MS = 2.0


# --- large payloads out of band --------------------------------------------------------------

_BINARY = (bytes, bytearray, memoryview)
FieldPath = tuple[str | int, ...]


def _nbytes(value: bytes | bytearray | memoryview) -> int:
    return value.nbytes if isinstance(value, memoryview) else len(value)


def _extract(obj: Any, threshold: int, path: FieldPath, paths: list[FieldPath], buffers: list[memoryview]) -> Any:
    """``obj`` with every binary value of at least ``threshold`` bytes replaced by ``b""``.

    Walks Structs, lists, tuples and dicts; each replaced value's position goes to ``paths`` and
    a view of it to ``buffers``. Containers without a large value are returned as they are, so a
    message with nothing to extract costs one walk and no copy.
    """
    if isinstance(obj, _BINARY):
        if _nbytes(obj) >= threshold:
            view = memoryview(obj)
            if not view.contiguous:
                raise TransportError(f"binary field at {path!r} is not contiguous", path=path)
            paths.append(path)
            buffers.append(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
            return b""
        return obj
    if isinstance(obj, msgspec.Struct):
        changes = {}
        for name in obj.__struct_fields__:
            value = getattr(obj, name)
            new = _extract(value, threshold, path + (name,), paths, buffers)
            if new is not value:
                changes[name] = new
        return msgspec.structs.replace(obj, **changes) if changes else obj
    if isinstance(obj, (list, tuple)):
        items = None
        for i, value in enumerate(obj):
            new = _extract(value, threshold, path + (i,), paths, buffers)
            if new is not value:
                if items is None:
                    items = list(obj)
                items[i] = new
        if items is None:
            return obj
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, dict):
        out = None
        for key, value in obj.items():
            new = _extract(value, threshold, path + (key,), paths, buffers)
            if new is not value:
                if out is None:
                    out = dict(obj)
                out[key] = new
        return obj if out is None else out
    return obj


def _inject(obj: Any, path: FieldPath, value: memoryview) -> Any:
    """``obj`` with the value at ``path`` replaced by ``value`` (containers along it rebuilt)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, msgspec.Struct):
        assert isinstance(head, str)
        # replace() does not validate, so a field typed ``bytes`` takes the view as it is.
        return msgspec.structs.replace(obj, **{head: _inject(getattr(obj, head), rest, value)})
    if isinstance(obj, list):
        assert isinstance(head, int)
        obj[head] = _inject(obj[head], rest, value)
        return obj
    if isinstance(obj, tuple):
        assert isinstance(head, int)
        items = list(obj)
        items[head] = _inject(items[head], rest, value)
        return tuple(items)
    if isinstance(obj, dict):
        obj[head] = _inject(obj[head], rest, value)
        return obj
    raise TransportError(f"cannot place a payload at {path!r}: reached a {type(obj).__name__}", path=path)


def _rebuild(body: bytes, paths: tuple[FieldPath, ...], *buffers: Any) -> Envelope:
    return Envelope(body, paths, tuple(memoryview(b) for b in buffers))


class Envelope:
    """A message as msgpack body plus its large binary fields as separate buffers.

    Build one with :func:`pack`; send it as a Ray argument or return value; call
    :meth:`unpack` on the other side. Pickled with protocol 5 and a ``buffer_callback`` (as Ray
    does), the buffers are out-of-band ``pickle.PickleBuffer`` s: Ray copies each into its
    shared-memory object store once, and the receiver's buffers are read-only views over it.
    With an older protocol the buffers are pickled in band (copied), which is still correct.

    Attributes
    ----------
    body : bytes
        msgpack of the message with each extracted field set to ``b""``.
    paths : tuple of tuple
        Where each buffer goes back: field names and list indexes from the message root.
    buffers : tuple of memoryview
        The extracted payloads (1-D, format ``"B"``), in the order of ``paths``.
    """

    __slots__ = ("body", "paths", "buffers")

    def __init__(self, body: bytes, paths: tuple[FieldPath, ...], buffers: tuple[memoryview, ...]) -> None:
        self.body = body
        self.paths = paths
        self.buffers = buffers

    @property
    def nbytes(self) -> int:
        """Body plus payload size in bytes."""
        return len(self.body) + sum(b.nbytes for b in self.buffers)

    def unpack(self, type: Any = Any) -> Any:
        """Decode the message, its large binary fields as ``memoryview`` s over the buffers.

        Parameters
        ----------
        type : type, default Any
            What the body decodes to (a Struct class, :data:`raygent.messages.Message` ...).

        Returns
        -------
        The message. Extracted fields are ``memoryview`` s whatever their declared type
        (``bytes`` fields included): read-only views over Ray's object store when the envelope
        crossed Ray, over the sender's objects when it did not.

        Raises
        ------
        raygent.errors.TransportError
            If the body does not decode to ``type`` or a buffer's path does not exist in it.
        """
        try:
            obj = msgspec.msgpack.decode(self.body, type=type)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise TransportError(f"envelope body is not a {type!r}: {exc}", path=()) from exc
        for path, buf in zip(self.paths, self.buffers):
            obj = _inject(obj, path, buf)
        return obj

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        if isinstance(protocol, int) and protocol >= 5:
            return _rebuild, (self.body, self.paths, *(pickle.PickleBuffer(b) for b in self.buffers))
        return _rebuild, (self.body, self.paths, *(b.tobytes() for b in self.buffers))

    def __repr__(self) -> str:
        sizes = ", ".join(str(b.nbytes) for b in self.buffers)
        return f"Envelope(body={len(self.body)} B, buffers=[{sizes}])"


def pack(message: Any, *, threshold_bytes: int = DEFAULT_THRESHOLD_BYTES) -> Envelope:
    """Wrap a message for Ray, its large binary fields out of band.

    Parameters
    ----------
    message : msgspec.Struct, list, tuple or dict
        Anything msgspec encodes. ``bytes``, ``bytearray`` and ``memoryview`` values of at least
        ``threshold_bytes`` bytes, at any depth of Structs, lists, tuples and dicts, travel as
        separate buffers (referenced, not copied, until Ray writes them to its object store).
    threshold_bytes : int, default 64 KiB
        Size in bytes from which a binary value leaves the body.

    Returns
    -------
    Envelope

    Raises
    ------
    raygent.errors.TransportError
        If a large binary value is a non-contiguous memoryview.
    msgspec.EncodeError
        If the message holds a value msgspec cannot encode.
    """
    paths: list[FieldPath] = []
    buffers: list[memoryview] = []
    stripped = _extract(message, threshold_bytes, (), paths, buffers)
    return Envelope(msgspec.msgpack.encode(stripped), tuple(paths), tuple(buffers))


# --- small messages coalesced ----------------------------------------------------------------


def _array_header(n: int) -> bytes:
    """The msgpack array header for ``n`` items (fixarray, array16 or array32)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


#: Longest msgpack array header (array32): the room a batch keeps for it.
_HEADER_MAX = 5


class Coalescer:
    """Packs encoded messages into batches bounded by count and size (pure, no clock, no Ray).

    A batch is one msgpack array whose items are the messages' own msgpack encodings, joined
    without re-encoding; :func:`decode_batch` reads it back. Messages keep their order within
    and across batches.

    Parameters
    ----------
    max_bytes : int, default :data:`DEFAULT_MAX_BATCH_BYTES`
        Largest batch in bytes, array header included.
    max_count : int, default :data:`DEFAULT_MAX_BATCH_COUNT`
        Most messages in one batch.

    Raises
    ------
    ValueError
        If a bound is not positive or ``max_bytes`` leaves no room past the array header.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BATCH_BYTES, max_count: int = DEFAULT_MAX_BATCH_COUNT) -> None:
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, got {max_count}")
        if max_bytes <= _HEADER_MAX:
            raise ValueError(f"max_bytes must exceed {_HEADER_MAX} (the array header), got {max_bytes}")
        self.max_bytes = max_bytes
        self.max_count = max_count
        self._items: list[bytes] = []
        self._nbytes = 0

    def __len__(self) -> int:
        """Messages waiting in the open batch."""
        return len(self._items)

    @property
    def pending_bytes(self) -> int:
        """Bytes of the messages waiting in the open batch (header excluded)."""
        return self._nbytes

    def add(self, encoded: bytes) -> list[bytes]:
        """Queue one encoded message; return the batches it closed (none, one or two).

        A message that would push the open batch past ``max_bytes`` closes it first; the batch
        then also closes when it reaches ``max_count`` messages or cannot take another byte.

        Raises
        ------
        raygent.errors.TransportError
            If the message alone exceeds ``max_bytes`` (send it as an :class:`Envelope`); the
            open batch is kept as it was.
        """
        size = len(encoded)
        if size + _HEADER_MAX > self.max_bytes:
            raise TransportError(
                f"message of {size} bytes exceeds the batch bound of {self.max_bytes} bytes; "
                "send it on its own (raygent.transport.pack)",
                path=(),
            )
        out = []
        if self._nbytes + size + _HEADER_MAX > self.max_bytes:
            out.append(self._close())
        self._items.append(encoded)
        self._nbytes += size
        if len(self._items) >= self.max_count or self._nbytes + _HEADER_MAX >= self.max_bytes:
            out.append(self._close())
        return out

    def flush(self) -> bytes | None:
        """Close the open batch and return it, or None when it is empty."""
        return self._close() if self._items else None

    def _close(self) -> bytes:
        items, self._items, self._nbytes = self._items, [], 0
        return _array_header(len(items)) + b"".join(items)


def decode_batch(batch: bytes | memoryview, type: Any = Any) -> list[Any]:
    """The messages of a batch made by :class:`Coalescer`, in send order.

    Raises
    ------
    raygent.errors.TransportError
        If the batch is not a msgpack array of ``type``.
    """
    try:
        return msgspec.msgpack.decode(batch, type=list[type])  # type: ignore[valid-type]
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise TransportError(f"batch is not a list of {type!r}: {exc}", path=()) from exc


class Batcher:
    """Coalesces messages into batches and hands each to ``send``, on count, size or a timer.

    A batch is sent when it reaches ``max_count`` messages or ``max_bytes``, when its oldest
    message has waited ``flush_interval_ms`` (unless the sender is itself waiting for batches in
    flight, which means it is busy filling the next one), and on :meth:`flush`.

    ``send(batch, count)`` is called in batch order from the event loop's thread, so with Ray
    (``lambda batch, n: actor.receive.remote(batch)``) the calls are submitted in order, and Ray
    runs the tasks of one caller on one actor in submission order. ``send`` may return an
    awaitable (an ``ObjectRef`` is one): up to ``max_in_flight`` of them are outstanding at
    once, and :meth:`put` waits for the oldest beyond that, which bounds memory and propagates
    the receiver's errors back to the sender.

    Parameters
    ----------
    send : callable
        ``send(batch: bytes, count: int) -> awaitable or None``.
    encode : callable, default ``msgspec.msgpack.encode``
        Turns a message into msgpack bytes.
    max_bytes, max_count : int
        Bounds of one batch (see :class:`Coalescer`).
    flush_interval_ms : float, default :data:`DEFAULT_FLUSH_INTERVAL_MS`
        Longest a message waits in an open batch, in milliseconds.
    max_in_flight : int, default 4
        Batches sent and not yet acknowledged before :meth:`put` waits. Measured with 2 KB
        messages between two actors on the 2-core machine (messages/s, best of 3, 96 KiB
        batches): 1 in flight 48k, 2: 43k, 4: 56k, 8: 47k, 32: 28k; beyond a few, the awaited
        refs cost the sender more than the overlap gains. With 64 KiB batches 4 in flight gave
        40k and with 32 KiB 18k, hence batches as large as the inline limit allows.

    Use it as ``async with Batcher(...) as b: await b.put(msg)``: leaving the block flushes and
    waits for every batch.
    """

    def __init__(
        self,
        send: Callable[[bytes, int], Awaitable[Any] | None],
        *,
        encode: Callable[[Any], bytes] = msgspec.msgpack.encode,
        max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_count: int = DEFAULT_MAX_BATCH_COUNT,
        flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS,
        max_in_flight: int = 4,
    ) -> None:
        if flush_interval_ms <= 0:
            raise ValueError(f"flush_interval_ms must be positive, got {flush_interval_ms}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._send = send
        self._encode = encode
        self._coalescer = Coalescer(max_bytes=max_bytes, max_count=max_count)
        self.flush_interval_ms = flush_interval_ms
        self.max_in_flight = max_in_flight
        self._in_flight: deque[Awaitable[Any]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_error: BaseException | None = None
        self._blocked = False
        self.batches_sent = 0
        self.messages_sent = 0

    async def __aenter__(self) -> Batcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __len__(self) -> int:
        """Messages queued and not yet handed to ``send``."""
        return len(self._coalescer)

    async def put(self, message: Any) -> None:
        """Queue one message; send the batches it closes; wait if too many are in flight.

        Raises
        ------
        raygent.errors.TransportError
            If the encoded message alone exceeds the batch bound.
        Exception
            Whatever an earlier batch's ``send`` or its awaitable raised.
        """
        await self.put_encoded(self._encode(message))

    async def put_encoded(self, encoded: bytes) -> None:
        """:meth:`put` for a message already encoded to msgpack."""
        self._raise_timer_error()
        closed = self._coalescer.add(encoded)
        if closed:
            # The timer belonged to the oldest message of a batch now sent: rearm it for the
            # open batch (if any), or it would cut that batch short.
            self._cancel_timer()
            for batch in closed:
                self._dispatch(batch)
        if len(self._in_flight) > self.max_in_flight:
            # While the sender waits for the receiver, the timer holds off: a partial batch sent
            # now would only queue behind the ones in flight, and the sender is about to fill it.
            self._blocked = True
            try:
                while len(self._in_flight) > self.max_in_flight:
                    await self._in_flight.popleft()
            finally:
                self._blocked = False
        if self._timer is None and len(self._coalescer):
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.flush_interval_ms / 1000.0, self._on_timer)

    async def flush(self) -> None:
        """Send the open batch now and wait until every batch sent so far is acknowledged."""
        self._cancel_timer()
        batch = self._coalescer.flush()
        if batch is not None:
            self._dispatch(batch)
        while self._in_flight:
            await self._in_flight.popleft()
        self._raise_timer_error()

    async def aclose(self) -> None:
        """Flush and wait for every batch (same as :meth:`flush`)."""
        await self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        if self._blocked:
            return  # put() rearms the timer once the receiver has caught up
        batch = self._coalescer.flush()
        if batch is not None:
            try:
                self._dispatch(batch)
            except Exception as exc:  # noqa: BLE001 - kept and raised by the next put/flush
                self._timer_error = exc

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _raise_timer_error(self) -> None:
        if self._timer_error is not None:
            exc, self._timer_error = self._timer_error, None
            raise exc

    def _dispatch(self, batch: bytes) -> None:
        count = _batch_count(batch)
        pending = self._send(batch, count)
        self.batches_sent += 1
        self.messages_sent += count
        if pending is not None:
            self._in_flight.append(pending)


def _batch_count(batch: bytes) -> int:
    first = batch[0]
    if first & 0xF0 == 0x90:
        return first & 0x0F
    if first == 0xDC:
        return int(struct.unpack_from(">H", batch, 1)[0])
    return int(struct.unpack_from(">I", batch, 1)[0])


def encode_all(messages: Iterable[Any], *, max_bytes: int = DEFAULT_MAX_BATCH_BYTES, max_count: int = DEFAULT_MAX_BATCH_COUNT) -> list[bytes]:
    """All of ``messages`` as bounded batches (a :class:`Coalescer` run to the end)."""
    coalescer = Coalescer(max_bytes=max_bytes, max_count=max_count)
    out: list[bytes] = []
    for message in messages:
        out.extend(coalescer.add(msgspec.msgpack.encode(message)))
    last = coalescer.flush()
    if last is not None:
        out.append(last)
    return out
