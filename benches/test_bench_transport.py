"""Transport between two Ray actors: large tool outputs out of band, small messages coalesced.

Run: ``.venv/bin/python -m pytest benches/test_bench_transport.py`` (add ``--benchmark-disable
-q`` for a quick check). Both groups run on the real local Ray cluster (``num_cpus=2``); the
timed round is one driver call that makes one actor send to the other and wait for the answer.

- ``transport: tool output <size> actor to actor``: a message with a binary field of 1 MB or
  100 MB sent by a producer actor to a consumer actor that checks it (length and a sample of
  bytes). ``raygent`` sends :func:`raygent.transport.pack` 's envelope (payload out of band);
  the peer is Ray pickling the plain msgspec Struct, what a user would write without raygent.
  Copies of the payload are counted before timing (``extra_info["copies"]``): Python-heap
  copies on each side by ``tracemalloc`` peak over the payload size, plus the one write into
  Ray's object store that every argument over 100 KiB takes (a ``memcpy`` into shared memory
  that ``tracemalloc`` does not see).
- ``transport: 2 KB messages actor to actor``: 20,000 messages through
  :class:`raygent.transport.Batcher` against one actor call per message (pipelined, the calls'
  refs awaited at the end); ``items`` = messages, so the report gives µs per message.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from _transport_actors import N_SMALL, Consumer, Producer, Receiver, Sender, Small
from conftest import case

pytestmark = pytest.mark.ray

MB = 1_000_000
BENCHES = str(Path(__file__).resolve().parent)


def _actor(ray, cls):
    # The workers import the actor classes from benches/ like installed code (see _transport_actors).
    path = os.pathsep.join(p for p in (BENCHES, os.environ.get("PYTHONPATH", "")) if p)
    return ray.remote(num_cpus=0, runtime_env={"env_vars": {"PYTHONPATH": path}})(cls)


@pytest.fixture(scope="module")
def ray_mod():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.parametrize("size", [1 * MB, 100 * MB], ids=["1MB", "100MB"])
@pytest.mark.parametrize("impl", ["raygent", "ray"])
def test_tool_output_actor_to_actor(benchmark, ray_mod, impl, size):
    ray = ray_mod
    producer = _actor(ray, Producer).remote(size)
    consumer = _actor(ray, Consumer).remote()
    label = f"{size // MB}MB"
    case(benchmark, group=f"transport: tool output {label} actor to actor", impl=impl, nbytes=size)
    benchmark.extra_info["how"] = "pack() envelope, payload out of band" if impl == "raygent" else "Ray pickles the msgspec Struct"
    try:
        answer = ray.get(producer.send.remote(consumer, impl))
        assert answer["nbytes"] == size
        assert answer["first"] == 0 and answer["last"] == (size - 1) % 256
        # Copies, before timing. Each side's heap peak has a fixed part (about 1 MB of Ray's own
        # buffers here) besides the payload's copies, so copies are the peak's growth from a
        # half-size payload to the full one, over that half size.
        peaks = {}
        for n in (size // 2, size):
            ray.get(consumer.trace.remote(True))
            peaks[n] = ray.get(producer.send.remote(consumer, impl, n, True))
            ray.get(consumer.trace.remote(False))
        half, full = peaks[size // 2], peaks[size]
        sender_copies = round((full["sender_heap_peak"] - half["sender_heap_peak"]) / (size // 2))
        receiver_copies = round((full["heap_peak"] - half["heap_peak"]) / (size // 2))
        copies = sender_copies + 1 + receiver_copies  # 1: the write into the object store
        detail = f"sender heap {sender_copies}, object store 1, receiver heap {receiver_copies}; receiver reads over {answer['over']}"
        benchmark.extra_info["copies"] = copies
        benchmark.extra_info["copies_detail"] = detail
        print(f"\n{impl} {label}: {copies} copies ({detail})")
        if impl == "raygent":
            assert answer["is_view"] and answer["readonly"], answer
            assert copies <= 1, detail
        rounds = 3 if size >= 100 * MB else 10
        benchmark.pedantic(lambda: ray.get(producer.send.remote(consumer, impl)), rounds=rounds, iterations=1, warmup_rounds=1)
    finally:
        ray.kill(producer)
        ray.kill(consumer)


# --- many small messages --------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["raygent", "ray"])
def test_small_messages_actor_to_actor(benchmark, ray_mod, impl):
    ray = ray_mod
    # The peer's calls are about 100 times slower: fewer messages keep its round bounded.
    n = N_SMALL if impl == "raygent" else 2_000
    sender = _actor(ray, Sender).remote()
    receiver = _actor(ray, Receiver).remote()
    assert len(msgspec.msgpack.encode(Small(seq=0, session_id="s-0001", text="x" * 1990))) >= 2000
    case(benchmark, group="transport: 2 KB messages actor to actor", impl=impl, items=n, nbytes=n * 2000)
    benchmark.extra_info["how"] = "Batcher, one call per batch" if impl == "raygent" else "one actor call per message"
    try:
        ray.get(sender.run.remote(receiver, impl, n))
        assert ray.get(receiver.summary.remote()) == (n, n - 1, True)

        def one_round() -> None:
            ray.get(receiver.reset.remote())
            ray.get(sender.run.remote(receiver, impl, n))

        benchmark.pedantic(one_round, rounds=5, iterations=1, warmup_rounds=1)
        assert ray.get(receiver.summary.remote()) == (n, n - 1, True)
    finally:
        ray.kill(sender)
        ray.kill(receiver)
