"""What the tool pipeline costs per call, what a cache hit costs, and what the cache saves.

- ``pipeline per-call overhead``: one trivial async tool called 200 times in sequence, through
  ``ToolPipeline.run_call`` (cache off: queue, breaker, timeout, result building) against a
  direct ``await tool.invoke(arguments)`` of the same tool.
- ``read_file 8 KiB``: the built-in ``read_file`` on a real 8 KiB file, through the pipeline with
  a warm cache (a hit every call), through the pipeline with the cache off, and by direct await.
- ``SWE-agent replay``: the tool calls of every SWE-agent trajectory in
  ``../shared/data/trajectories/swe-agent`` replayed, turn by turn, against synthetic tools
  that answer with the recorded observation. SWE-agent commands are mapped: ``open``, ``cat``,
  ``ls``, ``find_file``, ``search_*``, ``file``, ``strings``, ``decompile``, ``disassemble``,
  ``pwd`` are read-only with their first argument as path; ``create``, ``rm`` write their path;
  ``edit``/``insert`` write the file last opened; everything else (``python``, ``bash``,
  ``submit`` ...) is a shell command of unknown paths (it invalidates the whole cache). The
  counts of executions avoided (cache hits plus shared in-flight calls) go in ``extra_info``
  and are printed, with the time they saved estimated from the ``execution_time`` SWE-agent
  recorded (median over the steps that record it).

Run::

    .venv/bin/python -m pytest benches/test_bench_pipeline.py -s --benchmark-columns=mean,rounds
"""

from __future__ import annotations

import asyncio
import json
import shlex
import statistics
from pathlib import Path
from typing import Any

import pytest
from conftest import case

from raygent.messages import ToolCall
from raygent.pipeline import ToolPipeline
from raygent.replay import load_trajectory
from raygent.tools import builtin_tools, tool

CALLS = 200  # calls per round


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@tool(read_only=True)
async def echo(text: str) -> str:
    """Return the text."""
    return text


@pytest.mark.parametrize("impl", ["raygent", "direct await"])
def test_per_call_overhead(benchmark, loop, impl):
    case(benchmark, group="pipeline per-call overhead", impl=impl, items=CALLS)
    pipe = ToolPipeline({"echo": echo}, cache=False)
    calls = [ToolCall(f"c{i}", "echo", {"text": f"t{i}"}) for i in range(CALLS)]

    async def via_pipeline() -> list[str]:
        return [(await pipe.run_call(c)).content for c in calls]

    async def direct() -> list[str]:
        return [await echo.invoke(dict(c.arguments)) for c in calls]

    run = via_pipeline if impl == "raygent" else direct
    expected = [f"t{i}" for i in range(CALLS)]
    assert loop.run_until_complete(run()) == expected
    benchmark(lambda: loop.run_until_complete(run()))


@pytest.mark.parametrize("variant", ["cache hit", "cache off", "direct await"])
def test_read_file_latency(benchmark, loop, tmp_path, variant):
    text = "".join(f"line {i:05d} of a source file\n" for i in range(8192 // 28))
    (tmp_path / "a.py").write_text(text)
    tools = builtin_tools(tmp_path)
    impl = "direct await" if variant == "direct await" else "raygent"
    case(benchmark, group="read_file 8 KiB", impl=impl, items=CALLS, nbytes=len(text) * CALLS)
    if impl == "raygent":
        benchmark.extra_info["variant"] = variant
    pipe = ToolPipeline(tools, workspace=tmp_path, cache=variant == "cache hit")
    call = ToolCall("r", "read_file", {"path": "a.py"})

    async def via_pipeline() -> str:
        out = ""
        for _ in range(CALLS):
            out = (await pipe.run_call(call)).content
        return out

    async def direct() -> str:
        out = ""
        for _ in range(CALLS):
            out = await tools["read_file"].invoke({"path": "a.py"})
        return out

    run = direct if impl == "direct await" else via_pipeline
    assert loop.run_until_complete(run()) == text
    benchmark(lambda: loop.run_until_complete(run()))
    if variant == "cache hit":
        assert pipe.metrics()["executions"] == 1


# --- SWE-agent replay ---------------------------------------------------------------------------

_READS = {"open", "cat", "ls", "find_file", "search_dir", "search_file", "file", "strings",
          "decompile", "disassemble", "pwd"}
_WRITES = {"create", "rm"}
_EDITS = {"edit", "insert"}


def _words(command: str) -> list[str]:
    first = command.splitlines()[0] if command else ""
    try:
        return shlex.split(first)
    except ValueError:
        return first.split()


def _map_calls(traj) -> list[tuple[list[ToolCall], dict[str, str]]]:
    """The trajectory's turns as lists of synthetic calls, and recorded output by call id."""
    results = {c.id: r.content for c, r in traj.steps}
    turns: list[tuple[list[ToolCall], dict[str, str]]] = []
    open_file = "."
    for msg in traj.messages:
        calls = getattr(msg, "tool_calls", None)
        if not calls:
            continue
        mapped = []
        for c in calls:
            command = str(c.arguments.get("command") or c.arguments.get("_raw") or "")
            words = _words(command)
            verb = c.name if c.name not in ("bash", "str_replace_editor") else (words[0] if words else c.name)
            arg = next((w for w in words[1:] if not w.startswith("-")), ".")
            if verb in _READS:
                if verb == "open":
                    open_file = arg
                mapped.append(ToolCall(c.id, "read", {"path": arg, "command": command}))
            elif verb in _WRITES:
                mapped.append(ToolCall(c.id, "write", {"path": arg, "command": command}))
            elif verb in _EDITS:
                mapped.append(ToolCall(c.id, "write", {"path": open_file, "command": command}))
            else:
                mapped.append(ToolCall(c.id, "shell", {"command": command}))
        turns.append((mapped, results))
    return turns


def _replay_tools(executed: list[str]):
    current: dict[str, str] = {}

    @tool(read_only=True)
    async def read(path: str, command: str) -> str:
        """Recorded read."""
        executed.append(path)
        await asyncio.sleep(0)
        return current["output"]

    @tool
    async def write(path: str, command: str) -> str:
        """Recorded write."""
        executed.append(path)
        return "ok"

    @tool
    async def shell(command: str) -> str:
        """Recorded shell command."""
        executed.append(command)
        return "ok"

    return {"read": read, "write": write, "shell": shell}, current


@pytest.fixture(scope="module")
def swe_trajectories(shared_data):
    paths = sorted((shared_data / "trajectories" / "swe-agent").rglob("*.traj"))
    if not paths:
        pytest.skip("no SWE-agent trajectories in ../shared/data/trajectories/swe-agent")
    trajs = [load_trajectory(p) for p in paths]
    times: list[float] = []
    for p in paths:
        for step in json.loads(Path(p).read_text()).get("trajectory") or []:
            if isinstance(step, dict) and isinstance(step.get("execution_time"), (int, float)):
                times.append(float(step["execution_time"]))
    return trajs, (statistics.median(times) if times else None)


async def _replay(trajs, cache: bool) -> dict[str, Any]:
    totals = {"calls": 0, "read_calls": 0, "executions": 0, "cache_hits": 0, "shared": 0}

    async def one(traj) -> None:
        executed: list[str] = []
        tools, current = _replay_tools(executed)
        pipe = ToolPipeline(tools, cache=cache)
        for calls, recorded in _map_calls(traj):
            # The synthetic read answers with the recorded observation of the first call that ran it.
            current["output"] = recorded.get(calls[0].id, "")
            await pipe.run_all(calls)
            totals["calls"] += len(calls)
            totals["read_calls"] += sum(c.name == "read" for c in calls)
        m = pipe.metrics()
        totals["executions"] += m["executions"]
        totals["cache_hits"] += m["cache"].get("hits", 0)
        totals["shared"] += m["singleflight_shared"]

    await asyncio.gather(*(one(t) for t in trajs))  # sessions run side by side, one pipeline each
    totals["avoided"] = totals["calls"] - totals["executions"]
    return totals


@pytest.mark.parametrize("variant", ["cache + single-flight", "cache off"])
def test_swe_agent_replay_savings(benchmark, loop, swe_trajectories, variant):
    trajs, median_exec_s = swe_trajectories
    case(benchmark, group="SWE-agent replay: tool calls of every trajectory", impl="raygent")
    benchmark.extra_info["variant"] = variant
    cache = variant != "cache off"
    totals = loop.run_until_complete(_replay(trajs, cache))
    assert totals["avoided"] == totals["cache_hits"] + totals["shared"]
    if not cache:
        assert totals["avoided"] == 0
    benchmark.extra_info.update(totals)
    benchmark.extra_info["items"] = totals["calls"]
    benchmark.extra_info["trajectories"] = len(trajs)
    if median_exec_s is not None:
        benchmark.extra_info["est_time_saved_s"] = round(totals["avoided"] * median_exec_s, 3)
        benchmark.extra_info["median_recorded_execution_s"] = round(median_exec_s, 4)
    print(
        f"\n[{variant}] {len(trajs)} SWE-agent trajectories, {totals['calls']} tool calls "
        f"({totals['read_calls']} read-only): {totals['executions']} executed, "
        f"{totals['avoided']} avoided ({totals['cache_hits']} cache hits, {totals['shared']} "
        f"shared in flight); est. time saved "
        f"{benchmark.extra_info.get('est_time_saved_s', 'n/a')} s at the median recorded "
        f"execution time {benchmark.extra_info.get('median_recorded_execution_s', 'n/a')} s"
    )
    benchmark(lambda: loop.run_until_complete(_replay(trajs, cache)))
