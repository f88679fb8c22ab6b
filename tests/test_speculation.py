"""Speculative execution and adaptive timeouts in the pure cores (pipeline, predictor, Session)."""

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from raygent.messages import (
    AssistantMessage,
    Chunk,
    Done,
    Message,
    TextDelta,
    ToolCall,
    ToolCallEnd,
    ToolCallStart,
    ToolMessage,
)
from raygent.pipeline import ToolPipeline
from raygent.predictor import Predictor, ToolEvent
from raygent.session import Session
from raygent.tools import builtin_tools, tool


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "scheduler.py").write_text("class Scheduler:\n    pass\n")
    (tmp_path / "pkg" / "other.py").write_text("VALUE = 1\n")
    return tmp_path


def _pipe(workspace, **kw):
    return ToolPipeline(builtin_tools(workspace), workspace=workspace, **kw)


def _read(path, cid="r"):
    return ToolCall(cid, "read_file", {"path": path})


async def test_prefetched_read_is_served_from_cache_and_counted_as_a_hit(workspace):
    pipe = _pipe(workspace)
    [spec] = await pipe.prefetch([_read("pkg/scheduler.py", "spec")], session_id="s")
    assert not spec.is_error and "Scheduler" in spec.content
    real = await pipe.run_call(_read("./pkg/scheduler.py", "real"))
    assert real.cached and real.call_id == "real" and real.content == spec.content
    m = pipe.metrics()
    assert m["speculative"] == {
        "executed": 1, "hits": 1, "wasted": 0, "pending": 0, "skipped": 0, "refused": 0,
    }
    assert m["executions"] == 1  # the tool ran once, for the speculation


async def test_real_call_joins_a_speculative_run_in_flight(workspace):
    gate = asyncio.Event()
    runs = []

    @tool(read_only=True)
    async def slow_lookup(key: str) -> str:
        """Look a key up slowly.

        Parameters
        ----------
        key : str
            The key.
        """
        runs.append(key)
        await gate.wait()
        return f"value of {key}"

    pipe = ToolPipeline({"slow_lookup": slow_lookup})
    spec = asyncio.ensure_future(pipe.prefetch([ToolCall("s", "slow_lookup", {"key": "k"})]))
    await asyncio.sleep(0)
    real = asyncio.ensure_future(pipe.run_call(ToolCall("r", "slow_lookup", {"key": "k"})))
    await asyncio.sleep(0)
    gate.set()
    result = await real
    await spec
    assert result.cached and result.content == "value of k" and runs == ["k"]
    assert pipe.metrics()["speculative"]["hits"] == 1


async def test_mutating_and_unknown_tools_are_never_run_speculatively(workspace):
    pipe = _pipe(workspace)
    calls = [
        ToolCall("w", "write_file", {"path": "pkg/new.py", "content": "x = 1\n"}),
        ToolCall("e", "edit_file", {"path": "pkg/other.py", "search": "1", "replace": "2"}),
        ToolCall("c", "run_command", {"command": "touch pkg/ran"}),
        ToolCall("u", "no_such_tool", {}),
    ]
    assert await pipe.prefetch(calls, session_id="s") == []
    assert not (workspace / "pkg" / "new.py").exists() and not (workspace / "pkg" / "ran").exists()
    assert (workspace / "pkg" / "other.py").read_text() == "VALUE = 1\n"
    m = pipe.metrics()
    assert m["executions"] == 0 and m["speculative"]["refused"] == 4


async def test_unused_speculation_is_wasted_at_the_next_round_or_when_invalidated(workspace):
    pipe = _pipe(workspace)
    await pipe.prefetch([_read("pkg/other.py"), _read("pkg/scheduler.py")], session_id="s")
    assert pipe.metrics()["speculative"]["pending"] == 2
    # A write to one of the files drops its entry: the real read then runs again.
    await pipe.run_call(ToolCall("w", "write_file", {"path": "pkg/other.py", "content": "VALUE = 2\n"}))
    again = await pipe.run_call(_read("pkg/other.py"))
    assert not again.cached and again.content == "VALUE = 2\n"
    # The next round of the same session: the unused read of scheduler.py was waste.
    await pipe.prefetch([], session_id="s")
    # Another session's round does not touch this one's; a read already cached is skipped.
    await pipe.prefetch([_read("pkg/other.py")], session_id="t")
    m = pipe.metrics()["speculative"]
    assert (m["executed"], m["hits"], m["wasted"], m["pending"], m["skipped"]) == (2, 0, 2, 0, 1)
    # The end of a session closes its last round; other sessions' rounds are untouched.
    (workspace / "pkg" / "third.py").write_text("C = 3\n")
    await pipe.prefetch([_read("pkg/third.py")], session_id="t")
    await pipe.prefetch([_read("pkg/third.py", "again")], session_id="u")  # cached: skipped
    assert pipe.end_speculation("u") == 0 and pipe.end_speculation("t") == 1
    m = pipe.metrics()["speculative"]
    assert (m["executed"], m["wasted"], m["pending"], m["skipped"]) == (3, 3, 0, 2)


async def test_failed_speculation_is_wasted_not_cached(workspace):
    pipe = _pipe(workspace)
    [r] = await pipe.prefetch([_read("pkg/missing.py")], session_id="s")
    assert r.is_error
    assert pipe.metrics()["speculative"]["wasted"] == 1 and pipe.metrics()["cache"]["entries"] == 0


# --- the turn loop with the predictor's hints, no Ray ------------------------------------------


class GrepThenReadModel:
    """Turn 1: grep; turn 2: read the file grep found first; turn 3: answer.

    Before answering turn 2 it waits for the speculation started at that turn (``pending``),
    so the test is deterministic: a real model takes far longer than one local read.
    """

    name = "test:grep-then-read"

    def __init__(self) -> None:
        self.pending: list[asyncio.Task] = []

    async def stream(self, messages: Sequence[Message], tools: Sequence[dict]) -> AsyncIterator[Chunk]:
        done = [m for m in messages if isinstance(m, ToolMessage)]
        if self.pending:
            await asyncio.gather(*self.pending)
        if not done:
            call = ToolCall("c1", "grep", {"pattern": "class Scheduler"})
        elif len(done) == 1:
            path = done[0].content.split(":", 1)[0]
            call = ToolCall("c2", "read_file", {"path": path})
        else:
            yield TextDelta("found it")
            yield Done("stop")
            return
        yield ToolCallStart(index=0, id=call.id, name=call.name)
        yield ToolCallEnd(index=0, call=call)
        yield Done("tool_calls")


def _train(predictor: Predictor, sessions: int = 4) -> None:
    # Earlier sessions: grep, then read_file of the first file grep named.
    for i in range(sessions):
        sid = f"past{i}"
        hit = f"lib/mod{i}.py"
        predictor.observe(ToolEvent(sid, "grep", 3.0, arguments={"pattern": f"p{i}"},
                                    result_excerpt=f"{hit}:1: p{i}\n"))
        predictor.observe(ToolEvent(sid, "read_file", 1.0, arguments={"path": hit},
                                    result_excerpt="..."))
        predictor.end_session(sid)


async def test_session_speculates_the_predicted_read_and_the_model_gets_it_from_cache(workspace):
    pipe = _pipe(workspace)
    predictor = Predictor()
    _train(predictor)
    model = GrepThenReadModel()

    async def run_tools(calls):
        by_id = {c.id: c for c in calls}
        async for r in pipe.run_turn(calls):
            predictor.observe(ToolEvent.of("now", by_id[r.call_id], r))
            yield r

    def on_generate():
        # What AgentActor does over Ray: hints for the session, speculative calls to the
        # pipeline at low priority, in the background.
        hints = predictor.hints("now", threshold=0.5)
        calls = [ToolCall(f"spec{i}", c.tool, c.arguments) for i, c in enumerate(hints.speculative)]
        model.pending.append(asyncio.ensure_future(pipe.prefetch(calls, session_id="now")))

    session = Session(provider=model, run_tools=run_tools, tool_schemas=[],
                      on_generate=on_generate)
    results = [c.result async for c in session.run("where is Scheduler?") if hasattr(c, "result")]
    assert [r.name for r in results] == ["grep", "read_file"]
    assert not results[0].cached and results[1].cached
    assert "class Scheduler" in results[1].content
    m = pipe.metrics()["speculative"]
    assert m["executed"] == 1 and m["hits"] == 1 and m["wasted"] == 0
    # Speculative calls never enter the history: only the model's two calls and their results.
    history = session.context.history
    calls = [c for m_ in history if isinstance(m_, AssistantMessage) for c in m_.tool_calls]
    assert [c.id for c in calls] == ["c1", "c2"]
    assert [m_.call_id for m_ in history if isinstance(m_, ToolMessage)] == ["c1", "c2"]


# --- adaptive timeouts ---------------------------------------------------------------------


def test_adaptive_timeouts_need_samples_and_follow_p99():
    p = Predictor()
    for i in range(19):
        p.observe(ToolEvent("s", "grep", 1000.0 + i))
    assert p.adaptive_timeouts_s(min_samples=20) == {}
    p.observe(ToolEvent("s", "grep", 4000.0))
    t = p.adaptive_timeouts_s(floor_s=1.0, margin=3.0, min_samples=20)
    p99 = p.stats["grep"].p99.value()
    assert t == {"grep": pytest.approx(3.0 * p99 / 1000.0)} and 3.0 <= t["grep"] <= 12.0
    # The floor holds for fast actions; shell programs are timed apart.
    for _ in range(20):
        p.observe(ToolEvent("s", "run_command", 10.0, arguments={"command": "ls -la"}))
        p.observe(ToolEvent("s", "run_command", 90_000.0, arguments={"command": "pytest -q"}))
    t = p.adaptive_timeouts_s(floor_s=5.0, margin=3.0, min_samples=20)
    assert t["ls"] == 5.0 and t["pytest"] == pytest.approx(270.0)
    assert "run_command" not in t


async def test_adaptive_timeout_lowers_but_never_raises_the_configured_one(workspace):
    @tool(read_only=True, timeout_s=30.0)
    async def nap(seconds: float) -> str:
        """Sleep.

        Parameters
        ----------
        seconds : float
            How long.
        """
        await asyncio.sleep(seconds)
        return "rested"

    pipe = ToolPipeline({"nap": nap, **builtin_tools(workspace)}, default_timeout_s=120.0)
    call = ToolCall("n", "nap", {"seconds": 5.0})
    assert pipe.timeout_for(call) == 30.0
    pipe.set_adaptive_timeouts({"nap": 0.05, "ls": 500.0})
    assert pipe.timeout_for(call) == 0.05
    ls = ToolCall("l", "run_command", {"command": "ls"})
    assert pipe.timeout_for(ls) == 120.0  # 500 s would raise it: the configured limit holds
    explicit = ToolCall("x", "run_command", {"command": "ls", "timeout_s": 9})
    pipe.set_adaptive_timeouts({"ls": 1.0})
    assert pipe.timeout_for(explicit) == 120.0 and pipe.timeout_for(ls) == 1.0
    pipe.set_adaptive_timeouts({"nap": 0.05})
    r = await pipe.run_call(call)
    assert r.is_error and r.error_kind == "timeout" and "0.05 s" in r.content
    with pytest.raises(ValueError):
        pipe.set_adaptive_timeouts({"nap": 0.0})
    assert pipe.timeout_for(call) == 0.05  # unchanged by the refused update


def test_speculation_asks_the_policy_and_only_runs_what_it_allows(workspace):
    from raygent.policy import Policy

    policy = Policy(tools={"read_file": "prompt", "grep": "deny"}, commands={"*": "allow"})
    s = Session(provider=GrepThenReadModel(), run_tools=_pipe(workspace).run_turn,
                tool_schemas=[], policy=policy)
    assert not s.may_speculate("read_file", {"path": "pkg/scheduler.py"})  # needs approval
    assert not s.may_speculate("grep", {"pattern": "x"})
    assert s.may_speculate("list_dir", {})
    free = Session(provider=GrepThenReadModel(), run_tools=_pipe(workspace).run_turn, tool_schemas=[])
    assert free.may_speculate("read_file", {"path": "pkg/scheduler.py"})


async def test_real_call_joining_a_queued_speculative_run_lifts_its_priority(workspace):
    gate = asyncio.Event()
    order: list[str] = []

    @tool(read_only=True)
    async def hold() -> str:
        """Hold the only slot until released."""
        await gate.wait()
        return "held"

    @tool(read_only=True)
    def note(what: str) -> str:
        """Record a call.

        Parameters
        ----------
        what : str
            Its name.
        """
        order.append(what)
        return what

    pipe = ToolPipeline({"hold": hold, "note": note}, max_concurrency=1)
    held = asyncio.ensure_future(pipe.run_call(ToolCall("h", "hold", {})))
    await asyncio.sleep(0)
    spec = asyncio.ensure_future(pipe.prefetch([ToolCall("s", "note", {"what": "predicted"})]))
    await asyncio.sleep(0)
    other = asyncio.ensure_future(pipe.run_call(ToolCall("o", "note", {"what": "other"})))
    await asyncio.sleep(0)
    # The model asks for the predicted call while the speculative run still waits (low).
    real = asyncio.ensure_future(pipe.run_call(ToolCall("r", "note", {"what": "predicted"})))
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(held, spec, other, real)
    assert results[3].cached and results[3].content == "predicted"
    # Lifted to the real call's priority, the speculative run went first (it was queued
    # before "other"); left at low it would have waited for "other".
    assert order == ["predicted", "other"]
    assert pipe.metrics()["speculative"]["hits"] == 1
