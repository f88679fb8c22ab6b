"""Pipeline control: priorities, per-tool limits, timeouts, cancellation, retries, breaker,
path-aware ordering and output spooling."""

import asyncio
import os
from pathlib import Path

import pytest

from raygent.errors import RetryableToolError, ToolError
from raygent.messages import ToolCall
from raygent.pipeline import ToolPipeline, call_paths
from raygent.tools import builtin_tools, tool


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


async def _gone(pid: int, tries: int = 1200) -> bool:
    # Bounded wait, 1200 x 25 ms: generous because on a loaded 2-core machine the kill and the
    # reaping of the process group can take seconds; a surviving process still fails.
    for _ in range(tries):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.025)
    return False


async def _pid_from(path: Path, tries: int = 1200) -> int:
    for _ in range(tries):
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        await asyncio.sleep(0.025)
    raise AssertionError(f"{path} never written")


# A shell that starts a shell that starts a sleeping grandchild and records its pid.
_GRANDCHILD = "sh -c 'sleep 300 & echo $! > gc.pid; wait'; echo never"


async def test_timeout_kills_grandchild_process(tmp_path):
    tools = builtin_tools(tmp_path)
    pipe = ToolPipeline(tools, workspace=tmp_path, default_timeout_s=1.0)
    task = asyncio.ensure_future(
        pipe.run_call(ToolCall("t", "run_command", {"command": _GRANDCHILD, "timeout_s": 600}))
    )
    pid = await _pid_from(tmp_path / "gc.pid")
    assert _alive(pid)
    result = await task
    assert result.is_error and result.error_kind == "timeout"
    assert await _gone(pid), f"grandchild {pid} survived the timeout"


async def test_cancelling_turn_kills_running_tools(tmp_path):
    pipe = ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path)
    calls = [ToolCall("c1", "run_command", {"command": _GRANDCHILD, "timeout_s": 600})]
    results = []

    async def consume():
        async for r in pipe.run_turn(calls, turn_id="turn-1"):
            results.append(r)

    consumer = asyncio.ensure_future(consume())
    pid = await _pid_from(tmp_path / "gc.pid")
    assert pipe.cancel("turn-1") == 1
    await asyncio.wait_for(consumer, 30)
    assert [r.error_kind for r in results] == ["cancelled"]
    assert await _gone(pid), f"grandchild {pid} survived cancel()"
    assert pipe.metrics()["cancelled"] == 1


async def test_cancelling_the_consumer_kills_running_tools(tmp_path):
    pipe = ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path)
    calls = [ToolCall("c1", "run_command", {"command": _GRANDCHILD, "timeout_s": 600})]

    async def consume():
        async for _ in pipe.run_turn(calls):
            pass

    consumer = asyncio.ensure_future(consume())
    pid = await _pid_from(tmp_path / "gc.pid")
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert await _gone(pid), f"grandchild {pid} survived the consumer's cancellation"


async def test_priority_queue_serves_critical_first_then_fifo():
    order: list[str] = []
    gate = asyncio.Event()

    @tool(read_only=True)
    async def work(tag: str) -> str:
        """Work."""
        order.append(tag)
        if tag == "blocker":
            await gate.wait()
        return tag

    pipe = ToolPipeline({"work": work}, max_concurrency=1, cache=False)
    blocker = asyncio.ensure_future(pipe.run_call(ToolCall("b", "work", {"tag": "blocker"})))
    while not order:
        await asyncio.sleep(0)
    queued = [
        asyncio.ensure_future(pipe.run_call(ToolCall(t, "work", {"tag": t}), priority=p))
        for t, p in [("low1", "low"), ("n1", "normal"), ("crit", "critical"), ("n2", "normal"), ("hi", "high")]
    ]
    for _ in range(5):
        await asyncio.sleep(0)
    assert pipe.metrics()["queued"] == 5
    gate.set()
    await asyncio.gather(blocker, *queued)
    assert order == ["blocker", "crit", "hi", "n1", "n2", "low1"]
    with pytest.raises(ValueError):
        await pipe.run_call(ToolCall("x", "work", {"tag": "x"}), priority="urgent")


async def test_per_tool_limit_does_not_block_other_tools():
    running = {"a": 0, "a_peak": 0, "b_done": 0}
    release = asyncio.Event()

    @tool(read_only=True)
    async def a(i: int) -> str:
        """A."""
        running["a"] += 1
        running["a_peak"] = max(running["a_peak"], running["a"])
        await release.wait()
        running["a"] -= 1
        return "a"

    @tool(read_only=True)
    async def b(i: int) -> str:
        """B."""
        running["b_done"] += 1
        return "b"

    pipe = ToolPipeline({"a": a, "b": b}, max_concurrency=4, per_tool_concurrency={"a": 1}, cache=False)
    calls = [ToolCall(f"a{i}", "a", {"i": i}) for i in range(3)] + [
        ToolCall(f"b{i}", "b", {"i": i}) for i in range(3)
    ]
    task = asyncio.ensure_future(pipe.run_all(calls))
    for _ in range(200):
        if running["b_done"] == 3:
            break
        await asyncio.sleep(0.005)
    assert running["b_done"] == 3  # b ran while a waited on its own limit
    release.set()
    results = await task
    assert not any(r.is_error for r in results)
    assert running["a_peak"] == 1


def _flaky(fail_times: int, counter: dict, retryable: bool = True):
    @tool(read_only=True)
    async def flaky() -> str:
        """Fails the first calls."""
        counter["n"] += 1
        if counter["n"] <= fail_times:
            cls = RetryableToolError if retryable else ToolError
            raise cls(f"busy {counter['n']}")
        return "ok"

    return flaky


async def test_retry_with_backoff_until_success():
    counter = {"n": 0}
    pipe = ToolPipeline({"flaky": _flaky(2, counter)}, retry_base_s=0.001, cache=False, seed=1)
    r = await pipe.run_call(ToolCall("a", "flaky", {}))
    assert (r.is_error, r.content, r.attempts) == (False, "ok", 3)
    assert pipe.metrics()["retries"] == 2 and pipe.metrics()["executions"] == 3


async def test_retries_stop_at_max_and_non_retryable_is_not_retried():
    counter = {"n": 0}
    pipe = ToolPipeline({"flaky": _flaky(10, counter)}, retry_base_s=0.001, cache=False)
    r = await pipe.run_call(ToolCall("a", "flaky", {}))
    assert r.is_error and r.attempts == 3 and "failed after 3 attempts" in r.content
    counter2 = {"n": 0}
    pipe2 = ToolPipeline({"flaky": _flaky(10, counter2, retryable=False)}, retry_base_s=0.001, cache=False)
    r2 = await pipe2.run_call(ToolCall("a", "flaky", {}))
    assert r2.is_error and r2.attempts == 1 and counter2["n"] == 1


async def test_circuit_breaker_opens_half_opens_and_closes():
    now = [0.0]
    counter = {"n": 0}
    pipe = ToolPipeline(
        {"flaky": _flaky(3, counter, retryable=False)},
        cache=False,
        breaker_failures=2,
        breaker_window_s=10,
        breaker_cooldown_s=5,
        clock=lambda: now[0],
    )
    call = ToolCall("a", "flaky", {})
    assert (await pipe.run_call(call)).error_kind == "error"
    assert pipe.metrics()["breakers"]["flaky"]["state"] == "closed"
    r = await pipe.run_call(call)
    assert r.error_kind == "error" and "breaker of flaky is now open" in r.content
    # Open: fails fast without running the tool.
    r = await pipe.run_call(call)
    assert (r.error_kind, r.attempts, counter["n"]) == ("circuit_open", 0, 2)
    assert "circuit open" in r.content
    now[0] = 6.0
    assert pipe.metrics()["breakers"]["flaky"]["state"] == "half_open"
    # The probe fails (3rd failure): open again.
    assert (await pipe.run_call(call)).error_kind == "error"
    assert pipe.metrics()["breakers"]["flaky"] == {"state": "open", "opened": 2}
    now[0] = 12.0
    r = await pipe.run_call(call)  # probe succeeds: closed
    assert (r.is_error, r.content) == (False, "ok")
    assert pipe.metrics()["breakers"]["flaky"]["state"] == "closed"


async def test_failures_outside_the_window_do_not_open():
    now = [0.0]
    counter = {"n": 0}
    pipe = ToolPipeline(
        {"flaky": _flaky(99, counter, retryable=False)},
        cache=False,
        breaker_failures=2,
        breaker_window_s=10,
        clock=lambda: now[0],
    )
    await pipe.run_call(ToolCall("a", "flaky", {}))
    now[0] = 20.0
    await pipe.run_call(ToolCall("a", "flaky", {}))
    assert pipe.metrics()["breakers"]["flaky"]["state"] == "closed"


def test_call_paths():
    assert call_paths({"path": "./a/../b.py"}, read_only=True) == frozenset({"b.py"})
    assert call_paths({"pattern": "x"}, read_only=True) == frozenset({"."})
    assert call_paths({"command": "ls"}, read_only=False) is None
    assert call_paths({"paths": ["a", "b/"]}, read_only=False) == frozenset({"a", "b"})


async def test_write_waits_only_for_reads_of_its_paths():
    log: list[tuple[str, str]] = []
    release = asyncio.Event()

    @tool(read_only=True)
    async def look(path: str) -> str:
        """Read."""
        log.append(("start", path))
        if path == "slow.txt":
            await release.wait()
        log.append(("end", path))
        return path

    @tool
    async def change(path: str) -> str:
        """Write."""
        log.append(("start-w", path))
        return path

    pipe = ToolPipeline({"look": look, "change": change}, cache=False)
    calls = [
        ToolCall("1", "look", {"path": "slow.txt"}),
        ToolCall("2", "look", {"path": "a.txt"}),
        ToolCall("3", "change", {"path": "a.txt"}),
        ToolCall("4", "look", {"path": "a.txt"}),
    ]
    task = asyncio.ensure_future(pipe.run_all(calls))
    for _ in range(200):
        if ("start-w", "a.txt") in log:
            break
        await asyncio.sleep(0.005)
    # The write ran while the read of another path was still running, after the read of its path.
    assert ("start-w", "a.txt") in log and ("end", "slow.txt") not in log
    assert log.index(("end", "a.txt")) < log.index(("start-w", "a.txt"))
    release.set()
    await task
    # The read after the write waited for it.
    assert log.index(("start-w", "a.txt")) < len(log) - 1 - log[::-1].index(("start", "a.txt"))


async def test_large_output_is_spooled_with_head_tail_and_marker(tmp_path):
    big = "".join(f"line {i}\n" for i in range(20000))

    @tool(read_only=True)
    def dump() -> str:
        """Big output."""
        return big

    pipe = ToolPipeline({"dump": dump}, workspace=tmp_path, spool_threshold_bytes=4096)
    r = await pipe.run_call(ToolCall("x/1", "dump", {}))
    assert r.spooled_path is not None and r.spooled_path.startswith(".raygent/spool/")
    assert (tmp_path / r.spooled_path).read_text() == big
    assert r.content.startswith("line 0\n") and r.content.endswith("line 19999\n")
    left_out = len(big) - 2 * 1024
    assert f"[... {left_out} bytes left out of {len(big)}; the whole output is in {r.spooled_path}" in r.content
    assert pipe.metrics()["spooled"] == 1
    small = await ToolPipeline({"dump": dump}, workspace=tmp_path).run_call(ToolCall("y", "dump", {}))
    assert small.spooled_path is not None  # 148 KB > 64 KiB default
    assert os.path.getsize(tmp_path / small.spooled_path) == len(big)
