"""Agent.stream / Agent.astream over a real local Ray cluster: options reach the actor."""

from __future__ import annotations

import asyncio

import pytest

import raygent
from raygent.messages import StateChange, TextDelta, ToolCallDelta, ToolCallEnd
from test_session import script_for

pytestmark = pytest.mark.ray


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "scheduler.py").write_text(
        "class Scheduler:\n    '''Round-robin scheduler for worker queues.'''\n"
        "    def next_worker(self):\n        return self.queue.pop(0)\n"
    )
    return tmp_path


def test_stream_options_batching_filtering_and_reader(ray_cluster, workspace):
    with raygent.Agent(workspace=workspace, model="scripted") as agent:
        one = agent.stream("Where is the round-robin scheduler?", buffer_size=1)
        batches = list(one.batches())
        assert batches and all(len(b) == 1 for b in batches)
        everything = [c for b in batches for c in b]
        assert any(isinstance(c, ToolCallDelta) for c in everything)

        # Large buffer, long interval: deltas coalesce up to the next boundary chunk.
        big = list(agent.stream("Where is the round-robin scheduler?", buffer_size=10_000,
                                flush_interval_ms=10_000).batches())
        assert len(big) < len(batches)
        assert max(len(b) for b in big) > 1

        texts = list(agent.stream("Where is next_worker?", text_only=True))
        assert texts and all(isinstance(c, TextDelta) for c in texts)
        ends = agent.stream("Where is next_worker?", include=["tool_call_end", "state"]).collect()
        assert [c.name for c in ends.tool_calls] == script_for("Where is next_worker?")
        assert ends.text == ""

        text = agent.stream("Where is the round-robin scheduler?").as_reader().read()
        assert "pkg/scheduler.py" in text
        first = agent.stream("Where is the round-robin scheduler?").as_reader().readline()
        assert first.endswith("\n") and "Task:" in first


def test_astream_and_run_agree(ray_cluster, workspace):
    with raygent.Agent(workspace=workspace, model="scripted") as agent:
        async def go():
            return [c async for c in agent.astream("Where is the round-robin scheduler?")]

        chunks = asyncio.run(go())
        assert isinstance(chunks[-1], StateChange) and chunks[-1].target == "Idle"
        calls = [c.call.name for c in chunks if isinstance(c, ToolCallEnd)]
        result = agent.run("Where is the round-robin scheduler?")
        assert [c.name for c in result.tool_calls] == calls
        assert result.text.startswith("Answer from the scripted")


def test_agent_stream_false_gives_the_same_history(ray_cluster, workspace):
    histories = []
    for stream in (True, False):
        with raygent.Agent(workspace=workspace, model="scripted", stream=stream) as agent:
            chunks = list(agent.stream("Where is the round-robin scheduler?"))
            assert any(isinstance(c, ToolCallDelta) for c in chunks) == stream
            histories.append(agent.history())
    assert histories[0] == histories[1]
