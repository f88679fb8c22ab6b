"""The turn loop without Ray: scripted model, real tools on a temporary workspace."""

from collections.abc import AsyncIterator

import pytest

from raygent.errors import AgentError, ProviderError
from raygent.messages import (
    AssistantMessage,
    Done,
    StateChange,
    StreamError,
    SystemMessage,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolMessage,
    ToolResultChunk,
    UserMessage,
)
from raygent.pipeline import ToolPipeline
from raygent.providers import ScriptedModel
from raygent.providers._scripted import task_keywords
from raygent.session import Session
from raygent.state import AgentState
from raygent.tools import builtin_tools


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "billing.py").write_text(
        "def compute_invoice(total):\n    # invoice rounding happens here\n    return round(total, 2)\n"
    )
    (tmp_path / "src" / "util.py").write_text("def helper():\n    return 'invoice'\n")
    (tmp_path / "README.md").write_text("A tiny billing project.\n")
    return tmp_path


def _session(workspace, provider=None, **kw):
    pipeline = ToolPipeline(builtin_tools(workspace))
    tools = pipeline.tools
    return Session(
        provider=provider or ScriptedModel(),
        run_tools=pipeline.run_turn,
        tool_schemas=[t.schema for t in tools.values()],
        **kw,
    )


async def _collect(session, prompt):
    return [c async for c in session.run(prompt)]


def test_task_keywords_prefer_quoted_and_long_words():
    assert task_keywords("Where is `compute_invoice` defined and how does rounding work?") == [
        "compute_invoice",
        "rounding",
        "defined",
    ]


def script_for(prompt: str) -> list[str]:
    """The scripted model's tool calls for a prompt: list, one grep per task word, read."""
    return ["list_dir"] + ["grep"] * len(task_keywords(prompt, k=6)) + ["read_file"]


async def test_scripted_session_runs_real_tools_to_an_answer(workspace):
    session = _session(workspace)
    prompt = "Where does invoice rounding happen?"
    chunks = await _collect(session, prompt)
    ends = [c.call for c in chunks if isinstance(c, ToolCallEnd)]
    assert [c.name for c in ends] == script_for(prompt)
    assert {c.arguments["pattern"] for c in ends if c.name == "grep"} == {"invoice", "rounding", "happen"}
    assert ends[-1].arguments["path"] == "src/billing.py"
    results = [c.result for c in chunks if isinstance(c, ToolResultChunk)]
    assert all(not r.is_error for r in results), results
    assert "compute_invoice" in results[-1].content
    # Arguments streamed as fragments, parsed incrementally, ending in the final value.
    deltas = [c for c in chunks if isinstance(c, ToolCallDelta) and c.id == ends[1].id]
    assert len(deltas) > 3
    assert "".join(d.arguments_delta for d in deltas) and deltas[-1].partial_arguments == ends[1].arguments
    assert isinstance(chunks[-1], StateChange) and chunks[-1].target == "Idle"
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert "scripted (offline)" in text and "src/billing.py" in text
    assert session.state is AgentState.IDLE

    history = session.context.history
    assert isinstance(history[0], SystemMessage) and isinstance(history[1], UserMessage)
    greps = len(script_for(prompt)) - 2
    assert [type(m).__name__ for m in history[2:]] == (
        ["AssistantMessage", "ToolMessage"]
        + ["AssistantMessage"] + ["ToolMessage"] * greps
        + ["AssistantMessage", "ToolMessage", "AssistantMessage"]
    )
    assert session.stats.turns == 4 and session.stats.tool_calls == len(ends)


async def test_each_tool_call_streams_start_deltas_end_in_order(workspace):
    chunks = await _collect(_session(workspace), "find invoice")
    seen: dict[str, list[str]] = {}
    for c in chunks:
        if isinstance(c, (ToolCallStart, ToolCallDelta)):
            seen.setdefault(c.id, []).append(type(c).__name__)
        elif isinstance(c, ToolCallEnd):
            seen[c.call.id].append("ToolCallEnd")
    for kinds in seen.values():
        assert kinds[0] == "ToolCallStart" and kinds[-1] == "ToolCallEnd"
        assert set(kinds[1:-1]) == {"ToolCallDelta"}


class _FailingProvider:
    """Streams like a real provider for ``ok_turns`` responses, then breaks midway."""

    name = "failing"

    def __init__(self, ok_turns: int) -> None:
        self.inner = ScriptedModel()
        self.ok_turns = ok_turns
        self.calls = 0

    async def stream(self, messages, tools) -> AsyncIterator:
        self.calls += 1
        async for chunk in self.inner.stream(messages, tools):
            if self.calls > self.ok_turns and isinstance(chunk, (ToolCallEnd, Done)):
                raise ProviderError("connection reset by peer")
            yield chunk


async def test_provider_failure_is_typed_and_keeps_completed_turns(workspace):
    session = _session(workspace, provider=_FailingProvider(ok_turns=1))
    chunks = []
    with pytest.raises(AgentError) as info:
        async for c in session.run("find invoice"):
            chunks.append(c)
    assert info.value.kind == "provider_error"
    assert "connection reset" in str(info.value)
    assert isinstance(chunks[-1], StreamError)
    assert session.state is AgentState.ERROR and session.machine.error_kind == "provider_error"
    history = session.context.history
    # The first round (list_dir and its result) is complete and kept; the broken one is not.
    assert [type(m).__name__ for m in history] == [
        "SystemMessage", "UserMessage", "AssistantMessage", "ToolMessage"
    ]
    # The session goes on from the error state with the next prompt.
    session.provider = ScriptedModel()
    await _collect(session, "find invoice again")
    assert session.state is AgentState.IDLE
    assert isinstance(session.context.history[-1], AssistantMessage)


async def test_dead_tool_runner_answers_every_call_as_interrupted(workspace):
    async def dying_runner(calls):
        raise RuntimeError("actor died")
        yield  # pragma: no cover - makes this an async generator

    session = Session(provider=ScriptedModel(), run_tools=dying_runner, tool_schemas=[
        t.schema for t in builtin_tools(workspace).values()
    ])
    with pytest.raises(AgentError) as info:
        await _collect(session, "find invoice")
    assert info.value.kind == "tool_runner_failed"
    last = session.context.history[-1]
    assert isinstance(last, ToolMessage) and last.is_error and "interrupted" in last.content
    assert session.context.pending_tool_calls == frozenset()


async def test_max_turns_stops_a_looping_model(workspace):
    session = _session(workspace, max_turns=2)
    with pytest.raises(AgentError) as info:
        await _collect(session, "find invoice")
    assert info.value.kind == "max_turns"
    assert session.state is AgentState.ERROR


async def test_shutdown_refuses_new_prompts(workspace):
    session = _session(workspace)
    session.shutdown()
    with pytest.raises(AgentError, match="shut down"):
        await _collect(session, "anything")
