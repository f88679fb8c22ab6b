"""Checkpointing to the session store and recovery from a killed actor.

The unit tests drive :class:`~raygent.session.Session` without Ray against a real SQLite
store; the integration tests kill the process of an ``AgentActor`` or of a ``ToolActor`` by
PID in the middle of a turn (a real local Ray cluster, real subprocesses) and check that the
run completes with nothing lost, nothing doubled and no mutating tool run twice, once with the
workspace's SQLite store and once with a real PostgreSQL server (the ``postgres`` fixture).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

import raygent
from raygent.messages import (
    AssistantMessage,
    Done,
    StateChange,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallEnd,
    ToolMessage,
    ToolResultChunk,
    UserMessage,
    decode,
    encode,
)
from raygent.pipeline import ToolPipeline
from raygent.session import Session
from raygent.store import PostgresStore, SQLiteStore, default_path
from raygent.tools import builtin_tools

from test_mcp import stdio_server
from test_tool_streaming import OneCallModel, write_trajectory


class _Recorder:
    """A real provider (OneCallModel) that notes what the store held each time it was asked."""

    name = "recorder (test)"

    def __init__(self, store: SQLiteStore, session_id: str, calls: dict[str, tuple[str, dict]]) -> None:
        self.store, self.session_id = store, session_id
        self.inner = OneCallModel(calls)
        self.seen: list[tuple[list, list]] = []

    async def stream(self, messages, tools):
        self.seen.append((list(messages), self.store.load(self.session_id)))
        async for chunk in self.inner.stream(messages, tools):
            yield chunk


def _checkpointed_session(workspace: Path, store: SQLiteStore, provider, session_id: str = "s1"):
    pipeline = ToolPipeline(builtin_tools(workspace))
    stored_at_tool_time: list[list] = []

    async def run_tools(calls):
        stored_at_tool_time.append(store.load(session_id))
        async for item in pipeline.run_turn(calls):
            yield item

    session = Session(
        provider=provider,
        run_tools=run_tools,
        tool_schemas=[t.schema for t in pipeline.tools.values()],
        on_append=lambda seq, m: store.append(session_id, [m], start_seq=seq),
    )
    store.append(session_id, session.context.history[:1], start_seq=0)
    return session, stored_at_tool_time


async def test_every_message_is_stored_before_the_session_acts_on_it(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    store = SQLiteStore(tmp_path / "db" / "sessions.db")
    provider = _Recorder(store, "s1", {"read it": ("read_file", {"path": "notes.txt"})})
    session, at_tools = _checkpointed_session(tmp_path, store, provider)
    chunks = [c async for c in session.run("read it")]
    assert isinstance(chunks[-1], StateChange) and chunks[-1].target == "Idle"

    history = session.context.history
    assert [type(m) for m in history] == [SystemMessage, UserMessage, AssistantMessage, ToolMessage, AssistantMessage]
    assert store.load("s1") == history
    assert store.last_seq("s1") == len(history) - 1
    # The model was asked twice: each time the store already held every message it was sent.
    assert [stored for _, stored in provider.seen] == [history[:2], history[:4]]
    assert all(sent == stored for sent, stored in provider.seen)
    # The assistant message naming the call was stored before the tool ran.
    assert at_tools == [history[:3]]


async def test_a_restored_session_reruns_read_only_calls_and_reports_the_others_interrupted(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    store = SQLiteStore(tmp_path / "sessions.db")
    first, _ = _checkpointed_session(tmp_path, store, OneCallModel({}))
    calls = [
        ToolCall("call_r", "read_file", {"path": "notes.txt"}),
        ToolCall("call_w", "run_command", {"command": "echo ran >> marks.txt"}),
    ]
    # What a process that died while both calls ran leaves in the store.
    first._append(UserMessage("look and write"))
    first._append(AssistantMessage(content="", tool_calls=calls))

    provider = OneCallModel({})
    second, _ = _checkpointed_session(tmp_path, store, provider, session_id="other")
    second.on_append = lambda seq, m: store.append("s1", [m], start_seq=seq)
    second.restore(store.load("s1"))
    assert second.context.history == first.context.history
    chunks = [c async for c in second.resume(lambda call: call.name == "read_file")]

    history = second.context.history
    results = {m.call_id: m for m in history if isinstance(m, ToolMessage)}
    assert results["call_w"].is_error and results["call_w"].content.startswith("interrupted:")
    assert any(c.result.error_kind == "interrupted" for c in chunks if isinstance(c, ToolResultChunk))
    assert "not run again" in results["call_w"].content
    assert not results["call_r"].is_error and "hello" in results["call_r"].content
    assert not (tmp_path / "marks.txt").exists()  # the mutating call was not repeated
    assert history[-1] == AssistantMessage(content="answer after ToolMessage")
    assert store.load("s1") == history  # nothing lost, nothing doubled
    assert [c.target for c in chunks if isinstance(c, StateChange)][-1] == "Idle"


async def test_resume_after_a_final_answer_has_nothing_to_do(tmp_path):
    store = SQLiteStore(tmp_path / "sessions.db")
    first, _ = _checkpointed_session(tmp_path, store, OneCallModel({}))
    [c async for c in first.run("hi")]
    second, _ = _checkpointed_session(tmp_path, store, OneCallModel({}), session_id="other")
    second.restore(store.load("s1"))
    assert [c async for c in second.resume(lambda call: True)] == []
    assert second.context.history == first.context.history


async def test_resume_after_a_stored_prompt_asks_the_model(tmp_path):
    store = SQLiteStore(tmp_path / "sessions.db")
    first, _ = _checkpointed_session(tmp_path, store, OneCallModel({}))
    first._append(UserMessage("hi"))
    second, _ = _checkpointed_session(tmp_path, store, OneCallModel({}), session_id="other")
    second.on_append = lambda seq, m: store.append("s1", [m], start_seq=seq)
    second.restore(store.load("s1"))
    chunks = [c async for c in second.resume(lambda call: True)]
    assert TextDelta("answer after UserMessage") in chunks and Done("stop") in chunks
    assert store.load("s1") == second.context.history
    assert len(second.context.history) == 3


def test_restore_refuses_a_session_that_already_has_messages(tmp_path):
    store = SQLiteStore(tmp_path / "sessions.db")
    session, _ = _checkpointed_session(tmp_path, store, OneCallModel({}))
    session._append(UserMessage("hi"))
    with pytest.raises(ValueError, match="fresh session"):
        session.restore(store.load("s1"))


def test_agent_store_spec_refuses_an_in_memory_store(ray_cluster, tmp_path):
    with pytest.raises(ValueError, match="in-memory"):
        raygent.Agent(workspace=tmp_path, model="scripted", store=SQLiteStore(":memory:"))


# --- on Ray ----------------------------------------------------------------------------------

MUTATE = "echo ran >> marks.txt; sleep 4; echo slept"


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _wait_for_line(path: Path, tries: int = 600) -> None:
    for _ in range(tries):
        if _lines(path) >= 1:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never got its line")


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def _pid(ray, handle, tries: int = 600) -> int:
    """The actor's process id, once it answers: a call that reaches an actor Ray is still
    restarting fails with ActorUnavailableError instead of waiting for it."""
    for _ in range(tries):  # bounded: about 60 s
        try:
            return int(ray.get(handle.pid.remote()))
        except ray.exceptions.ActorUnavailableError:
            time.sleep(0.1)
    raise AssertionError(f"actor {handle} did not come back")


def _run_and_kill(agent, ray, workspace: Path, which: str):
    """Start the run, kill the named actor's process once the mutating command has started,
    and read the rest of the stream; returns every chunk."""
    stream = iter(agent.stream("change the file"))
    seen = []
    for chunk in stream:
        seen.append(chunk)
        if isinstance(chunk, ToolCallEnd):
            break
    _wait_for_line(workspace / "marks.txt")
    handle = agent._actor if which == "agent" else agent._tools
    _kill(_pid(ray, handle))
    seen.extend(stream)
    return seen


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request, tmp_path):
    """``(kind, Agent's store argument, opens a new connection to that store)``."""
    if request.param == "sqlite":
        workspace = tmp_path / "ws"
        yield "sqlite", "workspace", lambda: SQLiteStore(default_path(workspace))
        return
    conninfo = request.getfixturevalue("postgres").new_database()
    with PostgresStore(conninfo) as store:
        yield "postgres", store, lambda: PostgresStore(conninfo)


@pytest.mark.ray
@pytest.mark.parametrize("which", ["agent", "tools"])
def test_a_killed_actor_mid_turn_loses_and_repeats_nothing(ray_cluster, tmp_path, which, store_kind):
    kind, store_arg, open_store = store_kind
    workspace = tmp_path / "ws"
    workspace.mkdir()
    model = write_trajectory(
        tmp_path / "run.json",
        [
            ("change the file", [{"command": MUTATE}, {"content": "finished"}]),
            ("and again", [{"command": "echo again >> marks.txt"}, {"content": "done again"}]),
        ],
    )
    agent = raygent.Agent(workspace=workspace, model=model, store=store_arg)
    try:
        before = _pid(ray_cluster, agent._actor if which == "agent" else agent._tools)
        seen = _run_and_kill(agent, ray_cluster, workspace, which)
        last = seen[-1]
        assert isinstance(last, StateChange) and last.target == "Idle"
        after = _pid(ray_cluster, agent._actor if which == "agent" else agent._tools)
        assert after != before  # Ray restarted the process that was killed

        history = agent.history()
        assert [type(m) for m in history] == [
            SystemMessage, UserMessage, AssistantMessage, ToolMessage, AssistantMessage,
        ]
        result = history[3]
        assert isinstance(result, ToolMessage) and result.is_error
        assert result.content.startswith("interrupted:") and "not run again" in result.content
        results = [c.result for c in seen if isinstance(c, ToolResultChunk)]
        assert [(r.call_id, r.error_kind) for r in results] == [("call_1", "interrupted")]
        assert history[-1].content == "finished"  # type: ignore[union-attr]
        assert _lines(workspace / "marks.txt") == 1  # the mutating command ran once

        with open_store() as store:
            assert store.load(agent.session_id) == history
            assert store.last_seq(agent.session_id) == len(history) - 1

        # The session and the restarted actors take the next prompt.
        assert agent.run("and again").text == "done again"
        assert (workspace / "marks.txt").read_text().splitlines() == ["ran", "again"]
        with open_store() as store:
            assert store.load(agent.session_id) == agent.history()
        # The session lives where it was asked to: no workspace file besides a PostgreSQL store.
        assert default_path(workspace).exists() == (kind == "sqlite")
    finally:
        agent.close()


@pytest.mark.ray
def test_without_a_store_a_killed_agent_actor_fails_the_run(ray_cluster, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    model = write_trajectory(tmp_path / "run.json", [("change the file", [{"command": MUTATE}, {"content": "x"}])])
    agent = raygent.Agent(workspace=workspace, model=model, store=None)
    try:
        with pytest.raises(raygent.AgentError) as info:
            _run_and_kill(agent, ray_cluster, workspace, "agent")
        assert info.value.kind == "actor_died"
        assert not default_path(workspace).exists()
    finally:
        agent.close()  # the shard restarted without the session: nothing to free, it stays


@pytest.mark.ray
def test_a_restarted_tool_actor_still_runs_user_and_mcp_tools(ray_cluster, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()

    @raygent.tool(read_only=True)
    def word_count(text: str) -> int:
        """Count the words of a text.

        Parameters
        ----------
        text : str
            The text.
        """
        return len(text.split())

    calls = [("call_1", "word_count", {"text": "one two three"}), ("call_2", "kv_lookup", {"key": "alpha"}),
             ("call_3", "kv_stats", {})]  # fmt: skip
    recording = [
        {"role": "user", "content": "count and look up"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": i, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for i, name, args in calls
        ]},  # fmt: skip
        *({"role": "tool", "tool_call_id": i, "content": "(recorded)"} for i, _, _ in calls),
        {"role": "assistant", "content": "counted"},
    ]
    (tmp_path / "run.json").write_text(json.dumps(recording))
    agent = raygent.Agent(workspace=workspace, model=f"trajectory:{tmp_path / 'run.json'}", tools=[word_count],
                          mcp_servers=[stdio_server(prefix="kv_")], store=None)  # fmt: skip
    try:
        stats = ray_cluster.get(agent._tools.run_turn.options(num_returns="streaming").remote(
            encode([ToolCall("s", "kv_stats", {})])).__next__())  # fmt: skip
        old_server = json.loads(decode(stats, ToolResultChunk).result.content)["pid"]
        before = _pid(ray_cluster, agent._tools)
        _kill(before)
        assert _pid(ray_cluster, agent._tools) != before  # Ray restarted it

        result = agent.run("count and look up")
        by_name = {r.name: r for r in result.tool_results}
        assert not any(r.is_error for r in result.tool_results), result.tool_results
        assert by_name["word_count"].content == "3" and by_name["kv_lookup"].content == "alpha=1"
        assert json.loads(by_name["kv_stats"].content)["pid"] != old_server  # reconnected: a new server
        assert result.text == "counted"
        # The old server saw its stdin close with the killed actor and exited.
        for _ in range(300):  # bounded: 30 s
            if not Path(f"/proc/{old_server}").exists():
                break
            time.sleep(0.1)
        assert not Path(f"/proc/{old_server}").exists()
    finally:
        agent.close()
        ray_cluster.get(agent._tools.close.remote())


@pytest.mark.ray
def test_a_killed_predictor_comes_back_and_sessions_keep_their_hints(ray_cluster, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a.txt").write_text("alpha\n")
    agent = raygent.Agent(workspace=workspace, model="scripted", store=None)
    try:
        before = _pid(ray_cluster, agent._predictor)
        _kill(before)
        assert _pid(ray_cluster, agent._predictor) != before  # Ray restarted it, empty
        assert agent.next_tools(None) == []  # answers instead of failing with actor_died
        agent.run("read a.txt")
        # The restarted predictor learned the new session's calls, and hints were answered.
        assert agent.next_tools(None)
        assert agent.status()["hint_failures"] == 0
    finally:
        agent.close()
