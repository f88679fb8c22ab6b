"""Streaming tool output: run_command and user tools report deltas while they run, through the
streaming ANSI stripper, coalesced; the pipeline, the session and the Ray actors pass them on,
and the final result is the one a call without a listener gets."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

import raygent
from raygent.messages import (
    Chunk,
    Done,
    Message,
    StateChange,
    TextDelta,
    ToolCall,
    ToolCallEnd,
    ToolCallStart,
    ToolMessage,
    ToolOutputDelta,
    ToolResult,
    ToolResultChunk,
    UserMessage,
    decode,
    encode,
)
from raygent.pipeline import ToolPipeline
from raygent.session import Session
from raygent.streaming import CHUNK_KINDS, Stream
from raygent.tools import builtin_tools, emit, tool


class OneCallModel:
    """A real Provider: answers a user prompt with one tool call, and tool results with text.

    ``calls`` maps a prompt to the (tool name, arguments) it calls; a prompt not in it is
    answered with text at once.
    """

    name = "one-call (test)"

    def __init__(self, calls: dict[str, tuple[str, dict]]) -> None:
        self.calls = calls

    async def stream(self, messages, tools):
        last = messages[-1]
        if isinstance(last, UserMessage) and last.content in self.calls:
            name, arguments = self.calls[last.content]
            call = ToolCall(f"call_{len(messages)}", name, arguments)
            yield ToolCallStart(index=0, id=call.id, name=name)
            yield ToolCallEnd(index=0, call=call)
            yield Done("tool_calls")
            return
        text = f"answer after {type(last).__name__}"
        yield TextDelta(text)
        yield Done("stop")


def _run_all(pipe: ToolPipeline, calls: list[ToolCall]) -> list[ToolOutputDelta | ToolResult]:
    async def go():
        return [item async for item in pipe.stream_turn(calls)]

    return asyncio.run(go())


def _output_of(result: ToolResult) -> str:
    """run_command's output without its ``[exit code N]`` line."""
    body, _, _ = result.content.rpartition("[exit code ")
    return body


# --- run_command -------------------------------------------------------------------------------


async def test_run_command_streams_output_while_it_runs(tmp_path):
    pipe = ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path)
    # Prints, then waits (bounded: 400 x 25 ms) for the test to create `go`, then prints again.
    command = (
        "printf 'started\\n'; i=0; while [ ! -f go ] && [ $i -lt 400 ]; do sleep 0.025; "
        "i=$((i+1)); done; printf 'finished\\n'"
    )
    turn = pipe.stream_turn([ToolCall("c1", "run_command", {"command": command})])
    first = await asyncio.wait_for(turn.__anext__(), 30)
    # The first output arrives while the command is still blocked on `go`.
    assert first == ToolOutputDelta(call_id="c1", name="run_command", text="started\n")
    assert pipe.metrics()["running"] == 1
    (tmp_path / "go").touch()
    rest = [item async for item in turn]
    result = rest[-1]
    assert isinstance(result, ToolResult) and not result.is_error
    assert all(isinstance(d, ToolOutputDelta) for d in rest[:-1])
    streamed = first.text + "".join(d.text for d in rest[:-1])
    assert streamed == "started\nfinished\n" == _output_of(result)


# A colour escape cut across two writes (and two pipe reads), an OSC title, and more lines.
_COLOURED = (
    "printf '\\033[3'; sleep 0.2; printf '1mred\\033[0m\\n'; "
    "printf '\\033]0;title\\007plain\\n'; seq 1 3000"
)


def test_result_is_the_same_with_and_without_a_listener(tmp_path):
    call = ToolCall("c1", "run_command", {"command": _COLOURED})
    quiet = asyncio.run(ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path).run_call(call))
    items = _run_all(ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path), [call])
    streamed_result = items[-1]
    assert isinstance(streamed_result, ToolResult)
    assert streamed_result.content == quiet.content and not quiet.is_error
    deltas = [i for i in items[:-1] if isinstance(i, ToolOutputDelta)]
    assert len(deltas) == len(items) - 1 >= 1
    text = "".join(d.text for d in deltas)
    assert "\x1b" not in text and "1m" not in text.split("red")[0]
    expected = "red\nplain\n" + "".join(f"{n}\n" for n in range(1, 3001))
    assert text == expected == _output_of(quiet)


def test_flood_of_output_is_coalesced_and_bounded(tmp_path):
    # ~2 MB as fast as the pipe takes it: far more than one call may stream.
    pipe = ToolPipeline(
        builtin_tools(tmp_path), workspace=tmp_path, output_delta_max_bytes=4096,
        output_delta_interval_ms=50.0,
    )
    call = ToolCall("c1", "run_command", {"command": "yes 0123456789abcdef | head -c 2000000"})
    items = _run_all(pipe, [call])
    deltas = [i for i in items if isinstance(i, ToolOutputDelta)]
    result = items[-1]
    assert isinstance(result, ToolResult) and not result.is_error
    assert "[exit code 0]" in result.content
    streamed = skipped = 0
    for d in deltas:
        head, sep, body = d.text.partition(" bytes of output not streamed ...]\n")
        if sep:
            assert head.startswith("[... ")
            skipped += int(head.removeprefix("[... "))
        else:
            body = d.text
        assert len(body.encode()) <= 4096
        streamed += len(body.encode())
    # Every byte is either streamed or counted in a marker, and most were not streamed.
    assert skipped > 0 and streamed + skipped == 2_000_000


# --- user tools ------------------------------------------------------------------------------


@tool
def count_sync(n: int) -> str:
    """Count to n, reporting each number.

    Parameters
    ----------
    n : int
        Last number.
    """
    for i in range(1, n + 1):
        emit(f"{i} ")
    return f"counted to {n}"


@tool(read_only=True)
async def count_async(n: int) -> str:
    """Count to n, reporting each number with colours.

    Parameters
    ----------
    n : int
        Last number.
    """
    for i in range(1, n + 1):
        emit(f"\x1b[1m{i}\x1b[")  # an escape sequence cut across two emits
        emit("0m ")
        if i % 100 == 0:
            await asyncio.sleep(0)
    return f"counted to {n}"


@pytest.mark.parametrize("fn", [count_sync, count_async], ids=["sync-thread", "async"])
def test_user_tool_streams_through_emit(fn):
    pipe = ToolPipeline({fn.name: fn})
    items = _run_all(pipe, [ToolCall("c1", fn.name, {"n": 1000})])
    result = items[-1]
    assert isinstance(result, ToolResult) and result.content == "counted to 1000"
    deltas = items[:-1]
    assert all(isinstance(d, ToolOutputDelta) and d.call_id == "c1" for d in deltas)
    assert "".join(d.text for d in deltas) == "".join(f"{i} " for i in range(1, 1001))
    # 1000 (or 2000) emits made in a burst come out as a few coalesced deltas.
    assert 1 <= len(deltas) <= 20


def test_over_the_byte_bound_the_newest_output_is_kept_with_a_marker():
    @tool
    async def burst() -> str:
        """Write a little, then a lot at once."""
        emit("x" * 10)
        for _ in range(1000):
            emit("y")
        return "ok"

    pipe = ToolPipeline({"burst": burst}, output_delta_max_bytes=100)
    items = _run_all(pipe, [ToolCall("c1", "burst")])
    assert [type(i) for i in items] == [ToolOutputDelta, ToolOutputDelta, ToolResult]
    assert items[0].text == "x" * 10  # the first output goes out at once
    assert items[1].text == "[... 900 bytes of output not streamed ...]\n" + "y" * 100


def test_no_listener_no_deltas_and_emit_outside_a_call_does_nothing(tmp_path):
    emit("nobody listens")  # outside any call
    with pytest.raises(TypeError):
        emit(b"bytes")  # type: ignore[arg-type]
    pipe = ToolPipeline({"count_sync": count_sync})

    async def go():
        return [r async for r in pipe.run_turn([ToolCall("c1", "count_sync", {"n": 50})])]

    assert [r.content for r in asyncio.run(go())] == ["counted to 50"]


def test_cached_and_shared_calls_stream_nothing_but_answer():
    runs = []

    @tool(read_only=True)
    async def slow_read(path: str) -> str:
        """Read slowly, reporting progress.

        Parameters
        ----------
        path : str
            What to read.
        """
        runs.append(path)
        emit(f"reading {path}\n")
        await asyncio.sleep(0.05)
        return f"content of {path}"

    pipe = ToolPipeline({"slow_read": slow_read})
    calls = [ToolCall("a", "slow_read", {"path": "f"}), ToolCall("b", "slow_read", {"path": "f"})]
    items = _run_all(pipe, calls)
    assert runs == ["f"]  # one execution, shared
    deltas = [i for i in items if isinstance(i, ToolOutputDelta)]
    assert [(d.call_id, d.text) for d in deltas] == [("a", "reading f\n")]
    results = {i.call_id: i for i in items if isinstance(i, ToolResult)}
    assert results["a"].content == results["b"].content == "content of f" and results["b"].cached
    again = _run_all(pipe, [ToolCall("c", "slow_read", {"path": "f"})])
    assert len(again) == 1 and again[0].cached  # a cache hit streams nothing


def test_delta_bounds_are_validated():
    with pytest.raises(ValueError, match="output_delta"):
        ToolPipeline({}, output_delta_max_bytes=0)
    with pytest.raises(ValueError, match="output_delta"):
        ToolPipeline({}, output_delta_interval_ms=0)


# --- session and stream ------------------------------------------------------------------------


async def test_session_forwards_deltas_to_the_caller_not_the_history(tmp_path):
    pipe = ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path)
    command = "printf 'one\\n'; sleep 0.2; printf 'two\\n'"
    session = Session(
        provider=OneCallModel({"go": ("run_command", {"command": command})}),
        run_tools=pipe.stream_turn,
        tool_schemas=[t.schema for t in builtin_tools(tmp_path).values()],
    )
    chunks: list[Chunk] = [c async for c in session.run("go")]
    deltas = [c for c in chunks if isinstance(c, ToolOutputDelta)]
    assert "".join(d.text for d in deltas) == "one\ntwo\n"
    result_at = next(i for i, c in enumerate(chunks) if isinstance(c, ToolResultChunk))
    assert all(chunks.index(d) < result_at for d in deltas)
    history: list[Message] = session.context.history
    tool_messages = [m for m in history if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 1 and tool_messages[0].content == "one\ntwo\n[exit code 0]"
    assert not any(isinstance(m, ToolOutputDelta) for m in history)
    assert isinstance(chunks[-1], StateChange) and chunks[-1].target == "Idle"


def test_stream_knows_the_kind_and_collects_output_per_call():
    assert CHUNK_KINDS["tool_output_delta"] is ToolOutputDelta
    batches = [
        [ToolOutputDelta("a", "run_command", "1\n"), TextDelta("hi")],
        [ToolOutputDelta("b", "run_command", "x"), ToolOutputDelta("a", "run_command", "2\n")],
    ]
    got = Stream(batches).collect()
    assert got.tool_output == {"a": "1\n2\n", "b": "x"} and got.text == "hi"
    only = list(Stream(batches, include=["tool_output_delta"]))
    assert [c.text for c in only] == ["1\n", "x", "2\n"]
    # And it round-trips through the codec as a Chunk.
    assert decode(encode(batches[1]), list[Chunk]) == batches[1]


# --- on real Ray ---------------------------------------------------------------------------------


def write_trajectory(path: Path, prompts: list[tuple[str, list[dict]]]) -> str:
    """A recorded conversation (OpenAI-style message list) for ``model="trajectory:PATH"``:
    each prompt with its assistant turns; a turn is ``{"content": ..., "command": ...}`` where
    ``command`` makes it a ``run_command`` call."""
    messages: list[dict] = []
    n = 0
    for prompt, turns in prompts:
        messages.append({"role": "user", "content": prompt})
        for turn in turns:
            if "command" not in turn:
                messages.append({"role": "assistant", "content": turn["content"]})
                continue
            n += 1
            arguments = {"command": turn["command"], "timeout_s": 600}
            messages.append({
                "role": "assistant",
                "content": "",
                "tool_calls": [{
                    "id": f"call_{n}", "type": "function",
                    "function": {"name": "run_command", "arguments": json.dumps(arguments)},
                }],
            })
            messages.append({"role": "tool", "tool_call_id": f"call_{n}", "content": "(recorded)"})
    path.write_text(json.dumps(messages))
    return f"trajectory:{path}"


@pytest.mark.ray
def test_agent_stream_carries_tool_output_before_the_result(ray_cluster, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    command = "printf '\\033[32mbuilding\\033[0m\\n'; sleep 0.3; printf 'done\\n'"
    model = write_trajectory(
        tmp_path / "run.json", [("build it", [{"command": command}, {"content": "built"}])]
    )
    agent = raygent.Agent(workspace=workspace, model=model)
    try:
        chunks = list(agent.stream("build it"))
        deltas = [c for c in chunks if isinstance(c, ToolOutputDelta)]
        results = [c.result for c in chunks if isinstance(c, ToolResultChunk)]
        assert len(results) == 1 and not results[0].is_error
        assert "".join(d.text for d in deltas) == "building\ndone\n"
        assert all(d.call_id == results[0].call_id for d in deltas)
        assert chunks.index(deltas[-1]) < next(
            i for i, c in enumerate(chunks) if isinstance(c, ToolResultChunk)
        )
        history = agent.history()
        tool_messages = [m for m in history if isinstance(m, ToolMessage)]
        assert [m.content for m in tool_messages] == ["building\ndone\n[exit code 0]"]
        assert results[0].content == tool_messages[0].content
    finally:
        agent.close()
