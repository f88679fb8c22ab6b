"""Streaming and non-streaming runs of one scripted session: same history, same side effects."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import pytest

from raygent.messages import Done, TextDelta, ToolCallDelta, ToolCallEnd, ToolMessage, UserMessage
from raygent.pipeline import ToolPipeline
from raygent.providers import ScriptedModel
from raygent.session import Session
from raygent.tools import builtin_tools
from test_session import script_for

PROMPTS = ["Where is invoice rounding computed?", "and what does `helper` return?"]


def _make_workspace(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "billing.py").write_text(
        "def compute_invoice(total):\n    # invoice rounding happens here\n    return round(total, 2)\n"
    )
    (root / "src" / "util.py").write_text("def helper():\n    return 'invoice'\n")
    (root / "README.md").write_text("# shop\nBilling and invoices.\n")
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run(workspace: Path, stream: bool) -> tuple[list, list, list, dict[str, str]]:
    pipeline = ToolPipeline(builtin_tools(str(workspace)))
    executed: list[tuple[str, str, dict]] = []

    async def run_tools(calls):
        for c in calls:
            executed.append((c.id, c.name, c.arguments))
        async for r in pipeline.run_turn(calls):
            yield r

    session = Session(
        provider=ScriptedModel(),
        run_tools=run_tools,
        tool_schemas=[t.schema for t in pipeline.tools.values()],
        stream=stream,
    )

    async def go():
        out = []
        for p in PROMPTS:
            out.append([c async for c in session.run(p)])
        return out

    chunks = asyncio.run(go())
    return session.context.history, executed, chunks, _snapshot(workspace)


def test_streaming_and_whole_responses_give_the_same_history_and_effects(tmp_path):
    a = _make_workspace(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    hist_s, calls_s, chunks_s, files_s = _run(a, stream=True)
    hist_n, calls_n, chunks_n, files_n = _run(b, stream=False)

    assert sum(isinstance(m, ToolMessage) for m in hist_s) == sum(len(script_for(p)) for p in PROMPTS)
    assert [m.content for m in hist_s if isinstance(m, UserMessage)] == PROMPTS
    # Call ids come from the conversation position, so the histories match exactly.
    assert hist_n == hist_s
    assert calls_n == calls_s
    assert files_n == files_s
    # ... while the chunking differs: streamed runs send argument deltas and small text deltas.
    flat_s = [c for run in chunks_s for c in run]
    flat_n = [c for run in chunks_n for c in run]
    assert any(isinstance(c, ToolCallDelta) for c in flat_s)
    assert not any(isinstance(c, ToolCallDelta) for c in flat_n)
    assert sum(isinstance(c, TextDelta) for c in flat_n) < sum(isinstance(c, TextDelta) for c in flat_s)
    assert [c.call for c in flat_n if isinstance(c, ToolCallEnd)] == [
        c.call for c in flat_s if isinstance(c, ToolCallEnd)
    ]


def test_call_ids_are_deterministic_and_distinct(tmp_path):
    ws = _make_workspace(tmp_path / "w")
    hist1, calls1, _, _ = _run(ws, stream=True)
    hist2, calls2, _, _ = _run(ws, stream=True)
    assert [c[0] for c in calls1] == [c[0] for c in calls2]
    assert len({c[0] for c in calls1}) == len(calls1)


class StreamOnly:
    """A provider without ``complete``: the session gathers its stream first."""

    name = "stream-only"

    def __init__(self) -> None:
        self.pulled_before_first_yield = 0

    async def stream(self, messages, tools):
        for piece in ("a", "b", "c"):
            self.pulled_before_first_yield += 1
            yield TextDelta(piece)
        yield Done("stop")


@pytest.mark.parametrize("stream", [True, False])
def test_provider_without_complete_is_gathered(stream):
    provider = StreamOnly()

    async def no_tools(calls):
        raise AssertionError("no tool calls expected")
        yield  # pragma: no cover

    session = Session(provider=provider, run_tools=no_tools, tool_schemas=[], stream=stream)

    async def go():
        seen = []
        async for c in session.run("hi"):
            if isinstance(c, TextDelta):
                seen.append(provider.pulled_before_first_yield)
        return seen

    seen = asyncio.run(go())
    assert seen == ([3, 3, 3] if not stream else [1, 2, 3])
    assert session.context.history[-1].content == "abc"
