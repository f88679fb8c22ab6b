"""Many sessions per agent actor: mailboxes (no Ray), then shards on a real local Ray cluster:
concurrency across sessions, order within one, 200 sessions, close, reopen, shard restart."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

import raygent
from raygent.errors import AgentError, SessionNotOpen
from raygent.mailbox import Mailbox
from raygent.messages import (
    AssistantMessage,
    Chunk,
    StateChange,
    SystemMessage,
    ToolCallEnd,
    ToolMessage,
    ToolResultChunk,
    UserMessage,
    decode,
    encode,
)
from raygent.runtime import _SETTINGS, agent_shards, shard_of
from raygent.store import SQLiteStore, default_path

from test_tool_streaming import write_trajectory

# --- the mailbox, without Ray ------------------------------------------------------------------


async def _run_all(box: Mailbox, numbers, log: list, *, hold: int = 3) -> None:
    inside = 0

    async def run(n):
        nonlocal inside
        async with box.turn(n):
            inside += 1
            log.append(("in", n, inside))
            for _ in range(hold):  # give any other run the chance to interleave
                await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(run(n) for n in numbers))


async def test_mailbox_admits_prompts_by_number_whatever_their_arrival_order():
    box, log = Mailbox(), []
    await _run_all(box, [3, 1, 4, 2], log)
    assert [n for _, n, _ in log] == [1, 2, 3, 4]
    assert all(inside == 1 for _, _, inside in log)  # never two runs at once
    assert box.admitted == 4 and not box.busy


async def test_mailbox_unnumbered_runs_follow_in_arrival_order():
    box, log = Mailbox(), []
    # 1 finds the mailbox free; the others queue while it runs.
    await _run_all(box, [1, None, 3, None, 2], log)
    assert [n for _, n, _ in log] == [1, 2, 3, None, None]


async def test_mailbox_a_resumed_prompt_goes_before_the_next_one():
    # A session restored in the middle of prompt 5 counts 4 admitted: its resume (5) runs
    # before prompt 6 even when 6 arrives first.
    box, log = Mailbox(admitted=4), []
    await _run_all(box, [6, 5], log)
    assert [n for _, n, _ in log] == [5, 6]


async def test_mailbox_waits_for_a_missing_number_then_goes_on():
    box = Mailbox(gap_wait_s=0.05)
    log: list = []
    late = asyncio.create_task(_run_all(box, [2], log))
    for _ in range(3):
        await asyncio.sleep(0)
    assert log == [] and box.waiting == 1  # 2 waits for 1
    await _run_all(box, [1], log)
    await late
    assert [n for _, n, _ in log] == [1, 2]
    # A number that never comes is waited for at most gap_wait_s.
    await asyncio.wait_for(_run_all(box, [5], log), timeout=30)
    assert [n for _, n, _ in log] == [1, 2, 5] and box.admitted == 5


async def test_mailbox_a_cancelled_waiter_passes_the_turn_on():
    box = Mailbox()
    log: list = []
    release = asyncio.Event()

    async def first():
        async with box.turn(1):
            log.append(1)
            await release.wait()

    t1 = asyncio.create_task(first())
    await asyncio.sleep(0)
    t2 = asyncio.create_task(_run_all(box, [2], log))
    t3 = asyncio.create_task(_run_all(box, [3], log))
    await asyncio.sleep(0)
    t2.cancel()
    release.set()
    await t1
    await t3
    with pytest.raises(asyncio.CancelledError):
        await t2
    assert [x if isinstance(x, int) else x[1] for x in log] == [1, 3]
    assert not box.busy and box.waiting == 0


def test_sessions_of_one_shard_share_one_copy_of_equal_tool_schemas(tmp_path):
    from raygent.actors import AgentActor, AgentSpec
    from raygent.providers._spec import ProviderSpec
    from raygent.tools import builtin_tools

    def schemas() -> list[dict]:  # equal each time, never the same objects
        return decode(encode([t.schema for t in builtin_tools(tmp_path).values()]), list[dict])

    actor = AgentActor()
    a, b = (
        actor.host(AgentSpec(session_id=sid, provider=ProviderSpec(kind="scripted")), None, None, schemas())
        for sid in ("a", "b")
    )
    assert a.session.tool_schemas == b.session.tool_schemas and a.session.tool_schemas
    assert all(x is y for x, y in zip(a.session.tool_schemas, b.session.tool_schemas))
    other = actor.host(AgentSpec(session_id="c", provider=ProviderSpec(kind="scripted")), None, None, schemas()[:1])
    assert other.session.tool_schemas == a.session.tool_schemas[:1]
    assert sorted(actor.sessions) == ["a", "b", "c"]


# --- shards on Ray -----------------------------------------------------------------------------


def _ids_on_one_shard(n: int) -> list[str]:
    """``n`` fresh session ids that hash to the same agent shard."""
    shards = agent_shards()
    first = uuid.uuid4().hex
    out = [first]
    while len(out) < n:
        sid = uuid.uuid4().hex
        if shard_of(sid, shards) == shard_of(first, shards):
            out.append(sid)
    return out


def _types(history):
    return [type(m) for m in history]


WAIT_FOR_B = (
    "for i in $(seq 1 600); do [ -f b.flag ] && echo saw-b && exit 0; sleep 0.05; done; echo no-b"
)


@pytest.mark.ray
def test_two_sessions_on_one_shard_run_at_the_same_time(ray_cluster, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    # A's command finishes only once B's command has run: with the two sessions served one
    # after the other by their shard, A would end with "no-b".
    model_a = write_trajectory(tmp_path / "a.json", [("wait for b", [{"command": WAIT_FOR_B}, {"content": "a done"}])])
    model_b = write_trajectory(tmp_path / "b.json", [("make b", [{"command": "touch b.flag"}, {"content": "b done"}])])
    sid_a, sid_b = _ids_on_one_shard(2)
    a = raygent.Agent(workspace=ws, model=model_a, session_id=sid_a)
    b = raygent.Agent(workspace=ws, model=model_b, session_id=sid_b)
    try:
        assert ray_cluster.get(a._actor.pid.remote()) == ray_cluster.get(b._actor.pid.remote())
        assert {sid_a, sid_b} <= set(ray_cluster.get(a._actor.session_ids.remote()))
        stream_a = a.stream("wait for b")
        # A's command is running (its call ended) before B's prompt is sent.
        it = iter(stream_a)
        seen_a = []
        for chunk in it:
            seen_a.append(chunk)
            if isinstance(chunk, ToolCallEnd):
                break
        assert b.run("make b").text == "b done"
        seen_a.extend(it)
        results = [c.result for c in seen_a if isinstance(c, ToolResultChunk)]
        assert len(results) == 1 and "saw-b" in results[0].content
        assert a.history()[-1] == AssistantMessage(content="a done")
    finally:
        a.close()
        b.close()


@pytest.mark.ray
def test_prompts_sent_without_waiting_run_in_order(ray_cluster, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    model = write_trajectory(
        tmp_path / "run.json",
        [
            ("first", [{"command": "sleep 0.3; echo one >> order.txt"}, {"content": "one"}]),
            ("second", [{"command": "echo two >> order.txt"}, {"content": "two"}]),
            ("third", [{"content": "three"}]),
        ],
    )
    agent = raygent.Agent(workspace=ws, model=model)
    try:
        first = agent.stream("first")
        second = agent.stream("second")
        # Straight to the shard, numbered 3 but sent before anything is read: it waits its turn.
        third = agent._actor.run.options(num_returns="streaming").remote(agent.session_id, "third", 3)
        # Read in reverse: the second and third runs waited for the first, not for their reader.
        third_chunks = [c for ref in third for c in decode(ray_cluster.get(ref), list[Chunk])]
        second_chunks = list(second)
        first_chunks = list(first)
        for chunks in (first_chunks, second_chunks, third_chunks):
            assert isinstance(chunks[-1], StateChange) and chunks[-1].target == "Idle"
        history = agent.history()
        assert _types(history) == [
            SystemMessage,
            UserMessage, AssistantMessage, ToolMessage, AssistantMessage,
            UserMessage, AssistantMessage, ToolMessage, AssistantMessage,
            UserMessage, AssistantMessage,
        ]
        assert [m.content for m in history if isinstance(m, UserMessage)] == ["first", "second", "third"]
        assert [m.content for m in history if isinstance(m, AssistantMessage) and m.content] == ["one", "two", "three"]
        assert (ws / "order.txt").read_text().splitlines() == ["one", "two"]
    finally:
        agent.close()


@pytest.mark.ray
def test_two_hundred_sessions_run_with_the_scripted_model(ray_cluster, tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "scheduler.py").write_text("class Scheduler:\n    '''Round-robin scheduler.'''\n")
    agents = [raygent.Agent(workspace=tmp_path, model="scripted") for _ in range(200)]
    try:
        assert len({a.session_id for a in agents}) == 200
        hosted = set()
        for shard in {id(a._actor): a._actor for a in agents}.values():
            hosted |= set(ray_cluster.get(shard.session_ids.remote()))
        assert {a.session_id for a in agents} <= hosted
        # Every run starts at once; they are read afterwards.
        streams = [a.stream("Where is the round-robin scheduler?") for a in agents]
        for agent, stream in zip(agents, streams):
            chunks = list(stream)
            assert isinstance(chunks[-1], StateChange) and chunks[-1].target == "Idle"
            results = [c.result for c in chunks if isinstance(c, ToolResultChunk)]
            assert results and not any(r.is_error for r in results)
            assert results[-1].name == "read_file" and "Round-robin scheduler" in results[-1].content
        with SQLiteStore(default_path(tmp_path)) as store:
            for agent in agents[::20]:
                assert store.load(agent.session_id) == agent.history()
    finally:
        for agent in agents:
            agent.close()


@pytest.mark.ray
def test_close_frees_the_session_and_keeps_the_shard(ray_cluster, tmp_path):
    agent = raygent.Agent(workspace=tmp_path, model="scripted", store=None)
    shard = agent._actor
    pid = ray_cluster.get(shard.pid.remote())
    assert agent.session_id in ray_cluster.get(shard.session_ids.remote())
    agent.run("where is anything?")
    agent.close()
    assert agent.session_id not in ray_cluster.get(shard.session_ids.remote())
    assert ray_cluster.get(shard.pid.remote()) == pid  # the shard lives on
    with pytest.raises(AgentError) as err:
        agent.history()
    assert err.value.kind == "closed"
    with pytest.raises(AgentError):
        agent.stream("more")
    agent.close()  # closing twice does nothing
    # The shard itself answers a typed error for a session it does not hold.
    with pytest.raises(SessionNotOpen) as lost:
        ray_cluster.get(shard.status.remote(agent.session_id))
    assert lost.value.session_id == agent.session_id and lost.value.kind == "not_open"


@pytest.mark.ray
def test_reopen_a_conversation_by_session_id(ray_cluster, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    model = write_trajectory(
        tmp_path / "run.json",
        [("first", [{"command": "echo one"}, {"content": "one"}]), ("second", [{"content": "two"}])],
    )
    first = raygent.Agent(workspace=ws, model=model)
    first.run("first")
    before = first.history()
    sid = first.session_id
    first.close()

    again = raygent.Agent(workspace=ws, model=model, session_id=sid)
    try:
        assert again.session_id == sid
        assert again.history() == before
        assert again.status()["restored_messages"] == len(before)
        assert again.run("second").text == "two"
        history = again.history()
        assert history[: len(before)] == before
        assert [m.content for m in history if isinstance(m, UserMessage)] == ["first", "second"]
        with SQLiteStore(default_path(ws)) as store:
            assert store.load(sid) == history
    finally:
        again.close()


FRESH_SHARDS = 64
FRESH_INDEX = 62  # test_placement uses 63


@pytest.fixture
def fresh_ids(ray_cluster):
    """Session ids that land on a shard of their own, new for this test (so it has every
    restart left) and removed afterwards: the tests that kill a shard use it."""
    saved = _SETTINGS.agent_shards
    raygent.init(agent_shards=FRESH_SHARDS)

    def ids(n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            sid = uuid.uuid4().hex
            if shard_of(sid, FRESH_SHARDS) == FRESH_INDEX:
                out.append(sid)
        return out

    yield ids
    _SETTINGS.agent_shards = saved
    try:
        ray_cluster.kill(ray_cluster.get_actor(f"raygent-agents-{FRESH_INDEX}"))
    except ValueError:
        pass  # never made, or gone


def _kill_and_wait_for_restart(ray, shard) -> None:
    pid = ray.get(shard.pid.remote())
    os.kill(pid, signal.SIGKILL)
    for _ in range(600):  # bounded: about 60 s
        try:
            if ray.get(shard.pid.remote()) != pid:
                return
        except ray.exceptions.ActorUnavailableError:  # restarting
            pass
        time.sleep(0.1)
    raise AssertionError("the shard did not restart")


@pytest.mark.ray
def test_a_restarted_shard_reopens_its_sessions_from_the_store(ray_cluster, tmp_path, fresh_ids):
    ws = tmp_path / "ws"
    ws.mkdir()
    model = write_trajectory(
        tmp_path / "run.json",
        [("first", [{"command": "echo one"}, {"content": "one"}]), ("second", [{"content": "two"}])],
    )
    agent = raygent.Agent(workspace=ws, model=model, session_id=fresh_ids(1)[0])
    try:
        agent.run("first")
        before = agent.history()
        _kill_and_wait_for_restart(ray_cluster, agent._actor)
        assert agent.session_id not in ray_cluster.get(agent._actor.session_ids.remote())
        assert agent.history() == before  # SessionNotOpen -> opened from the store -> retried
        assert agent.status()["restored_messages"] == len(before)
        assert agent.run("second").text == "two"
        assert [m.content for m in agent.history() if isinstance(m, UserMessage)] == ["first", "second"]
    finally:
        agent.close()


@pytest.mark.ray
def test_a_restarted_shard_without_a_store_has_lost_the_session(ray_cluster, tmp_path, fresh_ids):
    agent = raygent.Agent(workspace=tmp_path, model="scripted", store=None, session_id=fresh_ids(1)[0])
    try:
        _kill_and_wait_for_restart(ray_cluster, agent._actor)
        with pytest.raises(SessionNotOpen):
            agent.history()
        with pytest.raises(SessionNotOpen):
            list(agent.stream("anything?"))
    finally:
        agent.close()


MUTATE = "echo ran >> {name}.txt; sleep 4; echo slept"


@pytest.mark.ray
def test_two_sessions_of_a_killed_shard_both_complete_with_nothing_lost(ray_cluster, tmp_path, fresh_ids):
    ws = tmp_path / "ws"
    ws.mkdir()
    agents, streams, seen = [], [], []
    for name, sid in zip(("a", "b"), fresh_ids(2)):
        model = write_trajectory(
            tmp_path / f"{name}.json",
            [(f"change {name}", [{"command": MUTATE.format(name=name)}, {"content": f"finished {name}"}])],
        )
        agents.append(raygent.Agent(workspace=ws, model=model, session_id=sid))
    try:
        for agent, name in zip(agents, ("a", "b")):
            it = iter(agent.stream(f"change {name}"))
            got = []
            for chunk in it:
                got.append(chunk)
                if isinstance(chunk, ToolCallEnd):
                    break
            streams.append(it)
            seen.append(got)
        for name in ("a", "b"):
            for _ in range(600):
                if (ws / f"{name}.txt").exists():
                    break
                time.sleep(0.02)
            assert (ws / f"{name}.txt").exists()
        shard = agents[0]._actor
        before = ray_cluster.get(shard.pid.remote())
        os.kill(before, signal.SIGKILL)  # both sessions are in the middle of their command
        for it, got in zip(streams, seen):
            got.extend(it)
        assert ray_cluster.get(shard.pid.remote()) != before
        with SQLiteStore(default_path(ws)) as store:
            for agent, got, name in zip(agents, seen, ("a", "b")):
                assert isinstance(got[-1], StateChange) and got[-1].target == "Idle"
                history = agent.history()
                assert _types(history) == [SystemMessage, UserMessage, AssistantMessage, ToolMessage, AssistantMessage]
                assert history[3].is_error and history[3].content.startswith("interrupted:")
                assert history[-1] == AssistantMessage(content=f"finished {name}")
                assert (ws / f"{name}.txt").read_text().splitlines() == ["ran"]  # ran once
                assert store.load(agent.session_id) == history  # nothing lost, nothing doubled
                results = [c.result for c in got if isinstance(c, ToolResultChunk)]
                assert [r.error_kind for r in results] == ["interrupted"]
    finally:
        for agent in agents:
            agent.close()
