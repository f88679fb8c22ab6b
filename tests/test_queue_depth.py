"""Queue depth: what the tool pipeline's queue holds, by priority, and what each call met there.

The pure parts without Ray (the pipeline's counts, each result's ``queued_ms`` and
``queue_depth``, the session collector's figures), then once through Ray: a turn with more
parallel calls than the ToolActor has slots, read back from the session's metrics, the actor's
counters and its ``raygent_queue_depth`` Gauge.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

import raygent
from raygent.messages import ToolCall, ToolResult, ToolResultChunk
from raygent.observability import MetricsCollector, MetricsSink
from raygent.pipeline import PRIORITIES, ToolPipeline
from raygent.tools import tool

EMPTY = dict.fromkeys(PRIORITIES, 0)


def _held_pipeline(changes: list[dict[str, int]] | None = None):
    """A one-slot pipeline and the gate that holds its slot while ``hold`` runs."""
    gate = asyncio.Event()
    started: list[str] = []

    @tool(read_only=True)
    async def hold(tag: str) -> str:
        """Wait for the gate.

        Parameters
        ----------
        tag : str
            Names the call.
        """
        started.append(tag)
        await gate.wait()
        return tag

    pipe = ToolPipeline(
        {"hold": hold}, max_concurrency=1, cache=False,
        on_queue_change=None if changes is None else changes.append,
    )  # fmt: skip
    return pipe, gate, started


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_queued_calls_by_priority_and_what_each_result_met():
    changes: list[dict[str, int]] = []
    pipe, gate, started = _held_pipeline(changes)
    first = asyncio.ensure_future(pipe.run_call(ToolCall("a", "hold", {"tag": "a"})))
    await _settle()
    assert started == ["a"] and pipe.metrics()["queued_by_priority"] == EMPTY and changes == []
    waiting = [
        asyncio.ensure_future(pipe.run_call(ToolCall(t, "hold", {"tag": t}), priority=p))
        for t, p in [("b", "normal"), ("c", "low"), ("d", "normal"), ("e", "critical")]
    ]
    await _settle()
    m = pipe.metrics()
    assert m["queued"] == 4 and m["max_queued"] == 4
    assert m["queued_by_priority"] == {"critical": 1, "high": 0, "normal": 2, "low": 1}
    # The listener heard each arrival.
    assert [sum(c.values()) for c in changes] == [1, 2, 3, 4] and changes[-1] == m["queued_by_priority"]

    gate.set()
    results: dict[str, ToolResult] = {r.call_id: r for r in await asyncio.gather(first, *waiting)}
    assert started == ["a", "e", "b", "d", "c"]  # by priority, FIFO within one
    assert (results["a"].queued_ms, results["a"].queue_depth) == (0.0, 0)  # a slot was free
    # Each waiting call met the calls queued before it, itself included.
    assert {k: r.queue_depth for k, r in results.items() if k != "a"} == {"b": 1, "c": 2, "d": 3, "e": 4}
    assert all(results[k].queued_ms > 0 for k in "bcde")
    assert pipe.metrics()["queued_by_priority"] == EMPTY and pipe.metrics()["max_queued"] == 4
    assert [sum(c.values()) for c in changes][4:] == [3, 2, 1, 0]  # and each departure


async def test_a_cancelled_queued_call_leaves_the_count():
    pipe, gate, _ = _held_pipeline()
    first = asyncio.ensure_future(pipe.run_call(ToolCall("a", "hold", {"tag": "a"})))
    await _settle()
    turn = pipe.run_turn([ToolCall("b", "hold", {"tag": "b"}), ToolCall("c", "hold", {"tag": "c"})],
                         priority="high", turn_id="t1")  # fmt: skip
    consumer = asyncio.ensure_future(_collect(turn))
    await _settle()
    assert pipe.metrics()["queued_by_priority"]["high"] == 2
    assert pipe.cancel("t1") == 2
    cancelled = await consumer
    assert {r.error_kind for r in cancelled} == {"cancelled"}
    assert pipe.metrics()["queued"] == 0
    gate.set()
    assert (await first).content == "a"
    assert pipe.metrics()["queued_by_priority"] == EMPTY


async def _collect(turn) -> list[ToolResult]:
    return [r async for r in turn]


async def test_a_lifted_speculative_call_moves_between_priorities():
    pipe, gate, started = _held_pipeline()
    pipe.cache = ToolPipeline({}).cache  # speculation needs the cache (a fresh, empty one)
    first = asyncio.ensure_future(pipe.run_call(ToolCall("a", "hold", {"tag": "a"})))
    await _settle()
    spec = asyncio.ensure_future(pipe.prefetch([ToolCall("s", "hold", {"tag": "p"})]))
    await _settle()
    assert pipe.metrics()["queued_by_priority"]["low"] == 1
    real = asyncio.ensure_future(pipe.run_call(ToolCall("r", "hold", {"tag": "p"}), priority="high"))
    await _settle()
    assert pipe.metrics()["queued_by_priority"] == {**EMPTY, "high": 1}
    gate.set()
    _, _, joined = await asyncio.gather(first, spec, real)
    # The real call joined the speculative run: it did not wait in the queue itself.
    assert joined.cached and (joined.queued_ms, joined.queue_depth) == (0.0, 0)
    assert pipe.metrics()["queued"] == 0 and started == ["a", "p"]


async def test_cache_hits_carry_no_queue_figures():
    pipe, gate, _ = _held_pipeline()
    pipe.cache = ToolPipeline({}).cache
    first = asyncio.ensure_future(pipe.run_call(ToolCall("a", "hold", {"tag": "a"})))
    await _settle()
    second = asyncio.ensure_future(pipe.run_call(ToolCall("b", "hold", {"tag": "b"})))
    await _settle()
    gate.set()
    await first
    queued = await second
    assert queued.queue_depth == 1 and not queued.cached
    hit = await pipe.run_call(ToolCall("c", "hold", {"tag": "b"}))
    assert hit.cached and (hit.queued_ms, hit.queue_depth) == (0.0, 0)


def test_session_collector_reports_queue_wait_and_the_largest_depth_met():
    heard: list[tuple[str, float, int]] = []

    class Recorder(MetricsSink):
        def tool_queued(self, name: str, queued_ms: float, queue_depth: int) -> None:
            heard.append((name, queued_ms, queue_depth))

    c = MetricsCollector(sinks=[Recorder()])
    assert (c.snapshot().queue_wait_p50_ms, c.snapshot().max_queue_depth) == (None, 0)
    results = [
        ToolResult("1", "grep", "x"),  # a free slot
        ToolResult("2", "grep", "x", queued_ms=10.0, queue_depth=3),
        ToolResult("3", "grep", "x", queued_ms=30.0, queue_depth=5),
        ToolResult("4", "grep", "x", cached=True),  # from the cache: left out
        ToolResult("5", "read_file", "x", queued_ms=20.0, queue_depth=1),
    ]
    for r in results:
        c.observe(ToolResultChunk(r))
    m = c.snapshot()
    assert m.tool_calls == 5
    assert (m.queue_depth, m.max_queue_depth) == (1, 5)  # the latest call's, the largest
    assert m.queue_wait_p50_ms == pytest.approx(15.0)  # of 0, 10, 20, 30
    assert m.queue_wait_p99_ms == pytest.approx(29.7)
    assert heard == [("grep", 0.0, 0), ("grep", 10.0, 3), ("grep", 30.0, 5), ("read_file", 20.0, 1)]


# --- through Ray ---------------------------------------------------------------------------------

SLOTS = 8  # a ToolActor's default max_concurrency


@pytest.mark.ray
def test_a_turn_wider_than_the_tool_actor_queues_and_the_figures_say_so(ray_cluster, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    gate = str(workspace / "gate")

    @raygent.tool(read_only=True)
    async def pause(i: int) -> int:
        """Hold a slot until the test opens the gate (a file).

        Parameters
        ----------
        i : int
            Which call.
        """
        for _ in range(6000):  # bounded: 60 s
            if os.path.exists(gate):
                break
            await asyncio.sleep(0.01)
        return i

    n = SLOTS + 3
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": "pause", "arguments": json.dumps({"i": i})}}
             for i in range(n)]  # fmt: skip
    recording = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        *({"role": "tool", "tool_call_id": c["id"], "content": "(recorded)"} for c in calls),
        {"role": "assistant", "content": "done"},
    ]
    (tmp_path / "run.json").write_text(json.dumps(recording))
    agent = raygent.Agent(workspace=workspace, model=f"trajectory:{tmp_path / 'run.json'}", tools=[pause],
                          store=None, speculation_threshold=None)  # fmt: skip
    try:
        stream = agent.stream("go")
        for _ in range(600):  # bounded: 60 s for the turn to reach the actor
            if ray_cluster.get(agent._tools.metrics.remote())["queued"] == 3:
                break
            time.sleep(0.1)
        # While they wait, the actor's Gauge holds them, by priority.
        gauge = ray_cluster.get(agent._tools.__ray_call__.remote(lambda self: (dict(self.queue_gauge.last), self.queue_gauge.tags)))
        assert gauge == ({**EMPTY, "normal": 3}, {"workspace": str(workspace)})
        open(gate, "w").close()
        results = [c.result for c in stream if isinstance(c, ToolResultChunk)]

        assert sorted(int(r.content) for r in results) == list(range(n))
        assert sorted(r.queue_depth for r in results) == [0] * SLOTS + [1, 2, 3]
        assert all((r.queued_ms > 0) == (r.queue_depth > 0) for r in results)
        m = agent.metrics()
        assert m.max_queue_depth == 3 and m.tool_calls == n
        assert m.queue_wait_p50_ms == 0.0 and m.queue_wait_p99_ms is not None and m.queue_wait_p99_ms > 0

        actor = ray_cluster.get(agent._tools.metrics.remote())
        assert actor["max_queued"] == 3 and actor["queued_by_priority"] == EMPTY
        assert ray_cluster.get(agent._tools.__ray_call__.remote(lambda self: dict(self.queue_gauge.last))) == EMPTY
    finally:
        open(gate, "w").close()
        agent.close()
