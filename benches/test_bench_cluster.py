"""What a message costs between actors on two nodes, beside the same message on one node.

Run: ``.venv/bin/python -m pytest benches/test_bench_cluster.py`` (add ``--benchmark-disable
-q`` for a quick check). The module starts its own two-node cluster (``ray.cluster_utils.Cluster``:
a head and a worker node, each with its own raylet and object store) and connects this process
to it, so it skips when Ray is already initialized here. Both nodes run on this machine: a
cross-node message travels over loopback TCP between the two raylets and object stores, so its
cost here is a lower bound of the cost over a real network.

In every case the sending actor is on the head node and the receiving one is on the head
("same node") or on the worker ("cross node"), both pinned with hard node affinity; one timed
round is one driver call that makes the sender do ``items`` round trips in series, so the report's
µs/item is the cost of one round trip. Groups:

- ``cluster: 2 KB message round trip``: a 2 KB message as msgpack bytes (what raygent's actors
  exchange) sent to the receiver, which decodes it and sends it back.
- ``cluster: 1 MB tool output round trip``: a tool output with a 1 MB binary field sent to the
  receiver, which checks its length and a sample of its bytes and answers with them. ``raygent``
  sends :func:`raygent.transport.pack` 's envelope (the payload out of band, written once to the
  sender's object store); the peer ``ray`` is Ray pickling the plain msgspec Struct.
- ``cluster: 2 KB messages streamed``: 20,000 messages sent one way in order (the actors of
  ``test_bench_transport.py``): ``raygent`` coalesces them with :class:`raygent.transport.Batcher`,
  the peer ``ray`` makes one actor call per message (2,000 messages, pipelined); ``items`` =
  messages, so µs/item is the cost of one message.

Each cross-node case also records ``extra_info["cross_over_same"]``: its median over the median
of the same impl's same-node case of this run (they run first), printed with ``-s``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from _transport_actors import N_SMALL, Receiver as StreamReceiver, Sender as StreamSender, Small, ToolOutput
from conftest import case
from raygent.transport import pack

pytestmark = pytest.mark.ray

MB = 1_000_000
BENCHES = str(Path(__file__).resolve().parent)
ROUND_TRIPS = {"2KB": 50, "1MB": 10}
PLACEMENTS = ["same node", "cross node"]
# Same-node medians of this run (seconds per round), by (group, impl): the cross-node cases'
# reference.
_SAME_NODE_MEDIANS: dict[tuple[str, str], float] = {}


def _payload(size: int) -> bytes:
    # Not all one byte value, so the receiver's first/last checks catch a misplaced buffer.
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class Receiver:
    """Answers each message: the 2 KB one sent back, the tool output's length and end bytes."""

    def node_id(self) -> str:
        return _node_id()

    def echo(self, data: bytes) -> bytes:
        msgspec.msgpack.decode(data, type=Small)
        return data

    def check_envelope(self, envelope: Any) -> tuple[int, int, int]:
        data = memoryview(envelope.unpack(ToolOutput).data)
        return data.nbytes, data[0], data[-1]

    def check_struct(self, message: ToolOutput) -> tuple[int, int, int]:
        data = memoryview(message.data)
        return data.nbytes, data[0], data[-1]


class Sender:
    """Makes ``n`` round trips in series to a :class:`Receiver` and returns every answer."""

    def __init__(self) -> None:
        self.small = msgspec.msgpack.encode(Small(seq=7, session_id="s-0001", text="x" * 1990))
        self.output = ToolOutput(call_id="call_1", name="run_command", data=_payload(MB))

    def node_id(self) -> str:
        return _node_id()

    def round_trips(self, receiver: Any, what: str, impl: str, n: int) -> list[Any]:
        import ray

        answers = []
        for _ in range(n):
            if what == "2KB":
                ref = receiver.echo.remote(self.small)
            elif impl == "raygent":
                ref = receiver.check_envelope.remote(pack(self.output))
            else:
                ref = receiver.check_struct.remote(self.output)
            answers.append(ray.get(ref))
        return answers


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[tuple[Any, str, str]]:
    """(ray, head node id, worker node id) of a two-node cluster this process is connected to."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("a two-node cluster needs this process's own Ray runtime, and one is up: run this file alone")
    # A Cluster records its address in <ray temp dir>/ray_current_cluster, where a plain
    # ray.init() of another process on this machine would find it and join: keep it private.
    # Short, since unix socket paths under it must stay within 107 bytes.
    tmpdir = tempfile.mkdtemp(prefix="rgb-", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmpdir
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
        yield ray, cluster.head_node.node_id, worker.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous is None:
            del os.environ["RAY_TMPDIR"]
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(tmpdir, ignore_errors=True)


def _pinned(ray: Any, cls: type, node_id: str, *args: Any) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # Workers import the message classes from benches/ like installed code (see _transport_actors).
    path = os.pathsep.join(p for p in (BENCHES, os.environ.get("PYTHONPATH", "")) if p)
    return ray.remote(num_cpus=0)(cls).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    ).remote(*args)


CASES = [
    ("2KB", "raygent", "same node"), ("2KB", "raygent", "cross node"),
    ("1MB", "raygent", "same node"), ("1MB", "raygent", "cross node"),
    ("1MB", "ray", "same node"), ("1MB", "ray", "cross node"),
]


@pytest.mark.parametrize(("what", "impl", "placement"), CASES, ids=["-".join(c).replace(" ", "-") for c in CASES])
def test_round_trip(benchmark, two_nodes, what, impl, placement):
    ray, head, worker = two_nodes
    group = "cluster: 2 KB message round trip" if what == "2KB" else "cluster: 1 MB tool output round trip"
    n = ROUND_TRIPS[what]
    sender = _pinned(ray, Sender, head)
    receiver = _pinned(ray, Receiver, head if placement == "same node" else worker)
    case(benchmark, group=group, impl=impl, items=n, nbytes=n * (2000 if what == "2KB" else MB))
    benchmark.extra_info["how"] = placement
    try:
        assert ray.get(sender.node_id.remote()) == head
        assert ray.get(receiver.node_id.remote()) == (head if placement == "same node" else worker)
        answers = ray.get(sender.round_trips.remote(receiver, what, impl, n))
        if what == "2KB":
            assert [msgspec.msgpack.decode(a, type=Small).seq for a in answers] == [7] * n
            assert all(len(a) >= 2000 for a in answers)
        else:
            assert answers == [(MB, 0, (MB - 1) % 256)] * n
        benchmark.pedantic(
            lambda: ray.get(sender.round_trips.remote(receiver, what, impl, n)),
            rounds=10, iterations=1, warmup_rounds=1,
        )
        _record_ratio(benchmark, group, impl, placement, n)
    finally:
        ray.kill(sender)
        ray.kill(receiver)


def _record_ratio(benchmark: Any, group: str, impl: str, placement: str, n: int) -> None:
    if benchmark.stats is None:  # --benchmark-disable: nothing timed
        return
    median = benchmark.stats.stats.median
    if placement == "same node":
        _SAME_NODE_MEDIANS[(group, impl)] = median
    elif (group, impl) in _SAME_NODE_MEDIANS:
        ratio = median / _SAME_NODE_MEDIANS[(group, impl)]
        benchmark.extra_info["cross_over_same"] = ratio
        print(f"\n{group} ({impl}): cross node / same node = {ratio:.2f}x ({median / n * 1e6:.0f} µs per item)")


STREAM_CASES = [("raygent", "same node"), ("raygent", "cross node"), ("ray", "same node"), ("ray", "cross node")]


@pytest.mark.parametrize(("impl", "placement"), STREAM_CASES, ids=["-".join(c).replace(" ", "-") for c in STREAM_CASES])
def test_streamed_messages(benchmark, two_nodes, impl, placement):
    ray, head, worker = two_nodes
    group = "cluster: 2 KB messages streamed"
    # One call per message is about 50 times slower: fewer messages keep its round bounded.
    n = N_SMALL if impl == "raygent" else 2_000
    sender = _pinned(ray, StreamSender, head)
    receiver = _pinned(ray, StreamReceiver, head if placement == "same node" else worker)
    case(benchmark, group=group, impl=impl, items=n, nbytes=n * 2000)
    benchmark.extra_info["how"] = placement
    try:
        ray.get(sender.run.remote(receiver, impl, n))
        assert ray.get(receiver.summary.remote()) == (n, n - 1, True)

        def one_round() -> None:
            ray.get(receiver.reset.remote())
            ray.get(sender.run.remote(receiver, impl, n))

        benchmark.pedantic(one_round, rounds=5, iterations=1, warmup_rounds=1)
        assert ray.get(receiver.summary.remote()) == (n, n - 1, True)
        _record_ratio(benchmark, group, impl, placement, n)
    finally:
        ray.kill(sender)
        ray.kill(receiver)
