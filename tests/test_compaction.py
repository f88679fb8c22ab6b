"""Compaction wired into the turn loop: a small budget, a real provider class, no Ray."""

import re
from collections.abc import AsyncIterator, Sequence

from raygent.context import SUMMARY_PREFIX
from raygent.messages import (
    AssistantMessage,
    Chunk,
    Done,
    Message,
    SystemMessage,
    TextDelta,
    UserMessage,
)
from raygent.pipeline import ToolPipeline
from raygent.session import Session


class LongWindedModel:
    """Answers every prompt with a long text (no tools); summarizes when asked to compact.

    Records every conversation it was sent, so the test sees the windows the session built.
    """

    name = "test:long-winded"

    def __init__(self, *, summary_fails: bool = False) -> None:
        self.summary_fails = summary_fails
        self.windows: list[list[Message]] = []
        self.summary_requests = 0

    async def stream(self, messages: Sequence[Message], tools: Sequence[dict]) -> AsyncIterator[Chunk]:
        self.windows.append(list(messages))
        first = messages[0]
        if isinstance(first, SystemMessage) and first.content.startswith("You compact"):
            self.summary_requests += 1
            if self.summary_fails:
                raise RuntimeError("summarizer unavailable")
            # The transcript carries the previous summary first, so questions are never lost.
            asked = re.findall(r"question number \d+", messages[-1].content)
            yield TextDelta("the user asked: " + "; ".join(dict.fromkeys(asked)))
            yield Done("stop")
            return
        prompt = messages[-1].content
        yield TextDelta(f"About {prompt}: " + "details " * 120)
        yield Done("stop")


def _session(model: LongWindedModel, **kw) -> Session:
    return Session(
        provider=model,
        run_tools=ToolPipeline({}).run_turn,
        tool_schemas=[],
        system_prompt="be brief",
        budget_tokens=800,
        **kw,
    )


async def _ask(session: Session, prompts: list[str]) -> None:
    for p in prompts:
        async for _ in session.run(p):
            pass


PROMPTS = [f"question number {i}" for i in range(8)]


async def test_compacts_past_threshold_and_keeps_the_full_history():
    model = LongWindedModel()
    s = _session(model)
    await _ask(s, PROMPTS)
    ctx = s.context
    assert ctx.compactions >= 1 and model.summary_requests == ctx.compactions
    assert ctx.compaction_failures == 0
    # The last window the model answered from holds the summary in place of older turns,
    # naming prompts that are no longer there verbatim.
    last = model.windows[-1]
    summaries = [m for m in last if isinstance(m, UserMessage) and m.content.startswith(SUMMARY_PREFIX)]
    assert len(summaries) == 1
    assert "question number 0" in summaries[0].content
    assert not any(m.content == "question number 0" for m in last)
    assert ctx.window_tokens() <= ctx.budget_tokens
    # The history is all there, in order: the window is only a view.
    history = ctx.history
    assert [m.content for m in history if isinstance(m, UserMessage)] == PROMPTS
    assert sum(isinstance(m, AssistantMessage) for m in history) == len(PROMPTS)


async def test_failed_summary_falls_back_to_trimming():
    model = LongWindedModel(summary_fails=True)
    s = _session(model)
    await _ask(s, PROMPTS)  # the run goes on although every summary fails
    ctx = s.context
    assert ctx.compactions == 0 and ctx.compaction_failures >= 1
    last = model.windows[-1]
    assert not any(m.content.startswith(SUMMARY_PREFIX) for m in last)
    assert last[-1].content == PROMPTS[-1]
    assert not any(m.content == PROMPTS[0] for m in last)  # trimmed
    assert ctx.window_tokens() <= ctx.budget_tokens
    assert [m.content for m in ctx.history if isinstance(m, UserMessage)] == PROMPTS


async def test_no_compaction_when_disabled_or_below_threshold():
    off = LongWindedModel()
    s = _session(off, compact_threshold=None)
    await _ask(s, PROMPTS)
    assert off.summary_requests == 0 and s.context.compactions == 0
    roomy = LongWindedModel()
    s = Session(provider=roomy, run_tools=ToolPipeline({}).run_turn, tool_schemas=[], budget_tokens=100_000)
    await _ask(s, PROMPTS)
    assert roomy.summary_requests == 0


async def test_on_generate_runs_before_each_model_response():
    model = LongWindedModel()
    calls: list[int] = []
    s = _session(model, compact_threshold=None, on_generate=lambda: calls.append(len(model.windows)))
    await _ask(s, PROMPTS[:3])
    assert calls == [0, 1, 2]
