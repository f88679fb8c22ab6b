"""Cancellation: a turn cancelled in the pipeline, the session, the ToolActor and from the Agent
on real Ray kills its running subprocesses with their children, answers the calls with
``cancelled`` error results, keeps the history valid and takes the next prompt."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

import raygent
from raygent.messages import (
    AssistantMessage,
    Done,
    StateChange,
    TextDelta,
    ToolCall,
    ToolCallEnd,
    ToolMessage,
    ToolOutputDelta,
    ToolResult,
    ToolResultChunk,
    ToolStreamItem,
    UserMessage,
    decode,
    encode,
)
from raygent.pipeline import ToolPipeline
from raygent.session import Session
from raygent.state import AgentState
from raygent.tools import builtin_tools, tool

from test_tool_streaming import OneCallModel, write_trajectory

# A shell that starts a shell that starts a sleeping grandchild and records its pid.
GRANDCHILD = "sh -c 'sleep 300 & echo $! > gc.pid; wait'; echo never"


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def wait_gone(pid: int, tries: int = 400) -> bool:
    for _ in range(tries):  # bounded: 400 x 25 ms
        if not alive(pid):
            return True
        time.sleep(0.025)
    return False


def wait_pid(path: Path, tries: int = 1200) -> int:
    for _ in range(tries):  # bounded: 1200 x 25 ms
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        time.sleep(0.025)
    raise AssertionError(f"{path} was never written")


async def await_pid(path: Path) -> int:
    return await asyncio.to_thread(wait_pid, path)


# --- pipeline ------------------------------------------------------------------------------------


async def test_cancel_before_the_turn_starts_is_remembered():
    runs = []

    @tool
    async def work() -> str:
        """Do some work."""
        runs.append(1)
        return "done"

    pipe = ToolPipeline({"work": work})
    assert pipe.cancel("early") == 0  # the turn is not running yet: remembered
    calls = [ToolCall("a", "work"), ToolCall("b", "work")]
    results = [r async for r in pipe.run_turn(calls, turn_id="early")]
    assert sorted(r.call_id for r in results) == ["a", "b"]
    assert all(r.error_kind == "cancelled" and r.attempts == 0 for r in results)
    assert runs == [] and pipe.metrics()["cancelled"] == 2
    # Remembered once: the same id runs normally afterwards.
    again = [r async for r in pipe.run_turn([ToolCall("c", "work")], turn_id="early")]
    assert [r.content for r in again] == ["done"]


async def test_cancel_streamed_turn_kills_grandchild_and_keeps_output_so_far(tmp_path):
    pipe = ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path)
    command = "printf 'working\\n'; " + GRANDCHILD
    calls = [ToolCall("c1", "run_command", {"command": command, "timeout_s": 600})]
    items: list[ToolOutputDelta | ToolResult] = []

    async def consume():
        async for item in pipe.stream_turn(calls, turn_id="t1"):
            items.append(item)

    consumer = asyncio.ensure_future(consume())
    pid = await await_pid(tmp_path / "gc.pid")
    assert alive(pid)
    assert pipe.cancel("t1") == 1
    await asyncio.wait_for(consumer, 30)
    assert [type(i) for i in items] == [ToolOutputDelta, ToolResult]
    assert items[0].text == "working\n"
    assert items[1].error_kind == "cancelled" and items[1].is_error
    assert await asyncio.to_thread(wait_gone, pid), f"grandchild {pid} survived the cancel"


# --- session (no Ray) ------------------------------------------------------------------------------


class SlowTalker:
    """A real Provider streaming a long answer slowly to the prompt "talk" (bounded: 400 deltas
    of 25 ms), and a short one to anything else."""

    name = "slow-talker (test)"

    def __init__(self) -> None:
        self.closed = 0

    async def stream(self, messages, tools):
        last = messages[-1]
        try:
            if isinstance(last, UserMessage) and last.content == "talk":
                for i in range(400):
                    yield TextDelta(f"word{i} ")
                    await asyncio.sleep(0.025)
            else:
                yield TextDelta("short answer")
            yield Done("stop")
        finally:
            self.closed += 1


async def test_cancel_while_the_model_streams_ends_the_run_and_keeps_history():
    provider = SlowTalker()

    async def no_tools(calls):
        raise AssertionError("no tool runs")
        yield  # pragma: no cover

    session = Session(provider=provider, run_tools=no_tools, tool_schemas=[])
    assert await session.cancel() is False  # nothing to cancel
    chunks = []
    async for chunk in session.run("talk"):
        chunks.append(chunk)
        if isinstance(chunk, TextDelta) and chunk.text == "word2 ":
            assert await session.cancel() is True
    texts = [c.text for c in chunks if isinstance(c, TextDelta)]
    assert texts == ["word0 ", "word1 ", "word2 "]
    assert provider.closed == 1  # the provider's stream was closed, not left running
    last = chunks[-1]
    assert isinstance(last, StateChange) and (last.target, last.trigger) == ("Idle", "cancelled")
    history = session.context.history
    assert isinstance(history[-1], AssistantMessage) and history[-1].content == "word0 word1 word2 "
    # The next prompt goes on from there.
    after = [c async for c in session.run("hello")]
    assert [c.text for c in after if isinstance(c, TextDelta)] == ["short answer"]
    assert session.state is AgentState.IDLE


async def test_cancel_while_tools_run_uses_the_hook_and_answers_every_call(tmp_path):
    pipe = ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path)
    turn_ids = iter(range(1, 100))
    current: list[str] = []

    async def run_tools(calls):
        current.append(f"turn-{next(turn_ids)}")
        async for item in pipe.stream_turn(calls, turn_id=current[-1]):
            yield item

    async def cancel_tools():
        pipe.cancel(current[-1])

    provider = OneCallModel({"go": ("run_command", {"command": GRANDCHILD, "timeout_s": 600})})
    session = Session(
        provider=provider, run_tools=run_tools, tool_schemas=[], cancel_tools=cancel_tools
    )
    chunks = []

    async def consume():
        async for c in session.run("go"):
            chunks.append(c)

    consumer = asyncio.ensure_future(consume())
    pid = await await_pid(tmp_path / "gc.pid")
    assert session.state is AgentState.EXECUTING_TOOLS
    assert await session.cancel() is True
    await asyncio.wait_for(consumer, 30)
    results = [c.result for c in chunks if isinstance(c, ToolResultChunk)]
    assert [r.error_kind for r in results] == ["cancelled"]
    assert (chunks[-1].target, chunks[-1].trigger) == ("Idle", "cancelled")
    assert await asyncio.to_thread(wait_gone, pid), f"grandchild {pid} survived"
    history = session.context.history
    assert isinstance(history[-1], ToolMessage) and history[-1].is_error
    assert history[-1].call_id == history[-2].tool_calls[0].id  # type: ignore[union-attr]
    after = [c async for c in session.run("thanks")]
    assert [c.text for c in after if isinstance(c, TextDelta)] == ["answer after UserMessage"]


async def test_cancel_while_waiting_for_approval_answers_calls_as_cancelled(tmp_path):
    from raygent.messages import ApprovalRequest
    from raygent.policy import Policy

    pipe = ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path)
    provider = OneCallModel({"go": ("run_command", {"command": "touch ran"})})
    session = Session(
        provider=provider, run_tools=pipe.stream_turn, tool_schemas=[],
        policy=Policy(tools={"run_command": "prompt"}),
    )
    chunks = []
    async for c in session.run("go"):
        chunks.append(c)
        if isinstance(c, ApprovalRequest):
            assert session.state is AgentState.WAITING_FOR_USER
            assert await session.cancel() is True
    results = [c.result for c in chunks if isinstance(c, ToolResultChunk)]
    assert [r.error_kind for r in results] == ["cancelled"]
    assert not (tmp_path / "ran").exists()  # the call never ran
    assert (chunks[-1].target, chunks[-1].trigger) == ("Idle", "cancelled")
    assert session.pending_approvals == []
    assert isinstance(session.context.history[-1], ToolMessage)


# --- on real Ray ---------------------------------------------------------------------------------


@pytest.mark.ray
def test_tool_actor_cancel_kills_the_turn(ray_cluster, tmp_path):
    from raygent.actors import ToolActor

    actor = ray_cluster.remote(num_cpus=0)(ToolActor).remote(str(tmp_path))
    try:
        calls = [ToolCall("c1", "run_command", {"command": GRANDCHILD, "timeout_s": 600})]
        refs = actor.run_turn.options(num_returns="streaming").remote(encode(calls), "turn-x")
        pid = wait_pid(tmp_path / "gc.pid")
        assert ray_cluster.get(actor.cancel.remote("turn-x")) == 1
        items = [decode(ray_cluster.get(ref), ToolStreamItem) for ref in refs]
        assert len(items) == 1 and isinstance(items[0], ToolResultChunk)
        assert items[0].result.error_kind == "cancelled"
        assert wait_gone(pid), f"grandchild {pid} survived ToolActor.cancel"
        assert ray_cluster.get(actor.metrics.remote())["cancelled"] == 1
    finally:
        ray_cluster.kill(actor)


@pytest.mark.ray
def test_agent_cancel_kills_grandchild_and_takes_the_next_prompt(ray_cluster, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    model = write_trajectory(
        tmp_path / "run.json",
        [
            ("start the server", [{"command": GRANDCHILD}, {"content": "it stopped"}]),
            ("what now?", [{"content": "ready for the next task"}]),
        ],
    )
    agent = raygent.Agent(workspace=workspace, model=model)
    try:
        assert agent.cancel() is False  # nothing running yet
        stream = iter(agent.stream("start the server"))
        seen = []
        for chunk in stream:
            seen.append(chunk)
            if isinstance(chunk, ToolCallEnd):
                break
        pid = wait_pid(workspace / "gc.pid")
        assert alive(pid)
        assert agent.cancel() is True
        seen.extend(stream)  # the run ends on its own after the cancel
        results = [c.result for c in seen if isinstance(c, ToolResultChunk)]
        assert len(results) == 1 and results[0].is_error
        assert results[0].error_kind == "cancelled"
        last = seen[-1]
        assert isinstance(last, StateChange) and (last.target, last.trigger) == ("Idle", "cancelled")
        assert wait_gone(pid), f"grandchild {pid} survived Agent.cancel"
        assert agent.status()["state"] == "Idle"

        history = agent.history()
        assert [type(m).__name__ for m in history[1:]] == ["UserMessage", "AssistantMessage", "ToolMessage"]
        assert history[-1].is_error and "cancelled" in history[-1].content  # type: ignore[union-attr]

        nxt = agent.run("what now?")
        assert nxt.text == "ready for the next task"
        assert [m.content for m in agent.history() if isinstance(m, UserMessage)] == [
            "start the server",
            "what now?",
        ]
        assert agent.cancel() is False
    finally:
        agent.close()


@pytest.mark.ray
def test_cli_shows_tool_output_live_and_first_ctrl_c_cancels(ray_cluster, tmp_path):
    import signal
    import subprocess
    import sys

    workspace = tmp_path / "ws"
    workspace.mkdir()
    model = write_trajectory(
        tmp_path / "run.json",
        [("start the server", [{"command": "printf 'booting\\n'; " + GRANDCHILD}, {"content": "it stopped"}])],
    )
    address = ray_cluster.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, "-m", "raygent.cli", "run", "start the server", "--workspace", str(workspace),
         "--model", model, "--address", address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        pid = wait_pid(workspace / "gc.pid")
        assert alive(pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    assert "cancelling the run" in err
    assert "│ booting" in out  # the tool's output, shown while it ran
    assert "✗ cancelled run_command" in out
    assert "tool calls 1 (1 failed)" in out and "state Idle" in out
    assert wait_gone(pid), f"grandchild {pid} survived the CLI's Ctrl-C"
