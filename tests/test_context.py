import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygent.context import Context, estimate_tokens
from raygent.messages import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage


def _round(i: int, n_calls: int = 1, size: int = 40) -> list:
    calls = [ToolCall(f"c{i}_{j}", "read_file", {"path": f"f{j}.py"}) for j in range(n_calls)]
    return [AssistantMessage("", calls)] + [
        ToolMessage(c.id, c.name, "x" * size) for c in calls
    ]


def test_estimate_counts_characters_and_tool_arguments():
    assert estimate_tokens(UserMessage("a" * 400)) == 100 + 4
    call = ToolCall("c", "grep", {"pattern": "x" * 100})
    assert estimate_tokens(AssistantMessage("", [call])) > estimate_tokens(AssistantMessage(""))


def test_window_keeps_everything_under_budget():
    ctx = Context(system_prompt="sys", budget_tokens=10_000)
    ctx.append(UserMessage("hi"))
    ctx.extend(_round(0))
    ctx.append(AssistantMessage("done"))
    assert ctx.window() == ctx.history


def test_trims_oldest_units_but_keeps_system_prompt_and_history():
    ctx = Context(system_prompt="system prompt", budget_tokens=120)
    appended = [SystemMessage("system prompt")]
    for i in range(20):
        msgs = [UserMessage(f"question {i} " + "q" * 80), AssistantMessage(f"answer {i} " + "a" * 80)]
        ctx.extend(msgs)
        appended += msgs
    window = ctx.window()
    assert window[0] == SystemMessage("system prompt")
    assert window[-1] == appended[-1]
    assert len(window) < len(appended)
    assert sum(estimate_tokens(m) for m in window) <= 120
    # The window is a suffix of the history after the system prompt: nothing reordered.
    assert window[1:] == appended[len(appended) - len(window) + 1 :]
    assert ctx.history == appended


def test_open_tool_round_is_kept_even_over_budget():
    ctx = Context(system_prompt="s", budget_tokens=50)
    ctx.append(UserMessage("u" * 400))
    ctx.extend(_round(0, n_calls=3, size=2000))
    window = ctx.window()
    assert isinstance(window[1], AssistantMessage) and len(window[1].tool_calls) == 3
    assert [m.call_id for m in window[2:]] == ["c0_0", "c0_1", "c0_2"]


def test_tool_result_for_unknown_call_is_refused_and_history_unchanged():
    ctx = Context(system_prompt="s")
    ctx.append(UserMessage("u"))
    before = ctx.history
    with pytest.raises(ValueError, match="unknown or already answered"):
        ctx.append(ToolMessage("nope", "grep", "x"))
    assert ctx.history == before


def test_next_prompt_refused_while_calls_are_unanswered():
    ctx = Context()
    ctx.append(UserMessage("u"))
    ctx.append(AssistantMessage("", [ToolCall("c1", "grep", {})]))
    assert ctx.pending_tool_calls == {"c1"}
    with pytest.raises(ValueError, match="no result yet"):
        ctx.append(UserMessage("next"))


@settings(max_examples=150, deadline=None)
@given(
    units=st.lists(
        st.one_of(
            st.tuples(st.just("user"), st.integers(0, 600)),
            st.tuples(st.just("answer"), st.integers(0, 600)),
            st.tuples(st.just("round"), st.integers(1, 4)),
        ),
        min_size=1,
        max_size=30,
    ),
    budget=st.integers(30, 2000),
)
def test_window_properties(units, budget):
    ctx = Context(system_prompt="sys", budget_tokens=budget)
    appended = [SystemMessage("sys")]
    for i, (kind, n) in enumerate(units):
        msgs = (
            [UserMessage("u" * n)]
            if kind == "user"
            else [AssistantMessage("a" * n)]
            if kind == "answer"
            else _round(i, n_calls=n, size=30 * n)
        )
        ctx.extend(msgs)
        appended += msgs
    window = ctx.window()
    # The full history is exactly what was appended.
    assert ctx.history == appended
    # System prompt first, and the newest message always present.
    assert window[0] == appended[0] and window[-1] == appended[-1]
    # Never a tool result without its call, never a call without its results.
    ids_called = {c.id for m in window if isinstance(m, AssistantMessage) for c in m.tool_calls}
    ids_answered = {m.call_id for m in window if isinstance(m, ToolMessage)}
    assert ids_called == ids_answered
    # Within budget unless the system prompt plus the newest unit alone exceed it.
    newest_start = max(
        i for i, m in enumerate(appended) if not isinstance(m, (ToolMessage, SystemMessage))
    )
    floor = sum(estimate_tokens(m) for m in [appended[0]] + appended[newest_start:])
    assert sum(estimate_tokens(m) for m in window) <= max(budget, floor)


# --- issue 6: pins, elision, compaction, exact counts, persistence ------------------------------

import asyncio  # noqa: E402

from raygent.context import SUMMARY_PREFIX, elide_middle, token_counter  # noqa: E402
from raygent.messages import Done, TextDelta  # noqa: E402


class _Summarizer:
    """Provider stand-in: answers every request with a fixed summary, recording the requests."""

    name = "test:summarizer"

    def __init__(self, text: str = "they talked about files", fail: bool = False) -> None:
        self.text, self.fail, self.requests = text, fail, []

    async def stream(self, messages, tools):
        self.requests.append(list(messages))
        if self.fail:
            raise RuntimeError("provider down")
        for i in range(0, len(self.text), 7):
            yield TextDelta(self.text[i : i + 7])
        yield Done()


def test_elide_middle_keeps_head_and_tail_and_counts_bytes():
    text = "h" * 10 + "é" * 30 + "t" * 10
    short, n = elide_middle(text, keep_chars=10)
    assert short.startswith("h" * 10) and short.endswith("t" * 10)
    assert n == 60 and "[... 60 bytes elided ...]" in short
    assert elide_middle("short", keep_chars=10) == ("short", 0)


def test_long_tool_output_is_elided_in_window_only_once_the_history_overflows():
    ctx = Context(system_prompt="s", budget_tokens=1_000, elide_over_chars=1000, elide_keep_chars=100)
    ctx.append(UserMessage("go"))
    big = "A" * 100 + "M" * 5000 + "Z" * 100
    ctx.append(AssistantMessage("", [ToolCall("c", "read_file", {"path": "x"})]))
    ctx.append(ToolMessage("c", "read_file", big))
    assert ctx.total_tokens() > 1_000
    shown = ctx.window()[-1]
    assert shown.content == "A" * 100 + "\n[... 5000 bytes elided ...]\n" + "Z" * 100
    assert ctx.history[-1].content == big
    assert ctx.window_tokens() < ctx.total_tokens()


def test_long_tool_output_is_shown_whole_while_the_history_fits():
    ctx = Context(system_prompt="s", budget_tokens=100_000, elide_over_chars=1000, elide_keep_chars=100)
    ctx.append(UserMessage("go"))
    big = "A" * 100 + "M" * 5000 + "Z" * 100
    ctx.append(AssistantMessage("", [ToolCall("c", "grep", {"pattern": "x"})]))
    ctx.append(ToolMessage("c", "grep", big))
    assert ctx.window()[-1].content == big
    assert ctx.window() == ctx.history


def test_pinned_unit_survives_trimming():
    ctx = Context(system_prompt="s", budget_tokens=200)
    ctx.append(UserMessage("the task: fix the parser " + "t" * 100), pinned=True)
    for i in range(30):
        ctx.append(AssistantMessage(f"step {i} " + "a" * 100))
    window = ctx.window()
    assert window[1] == UserMessage("the task: fix the parser " + "t" * 100)
    assert window[-1] == ctx.history[-1]
    assert len(window) < len(ctx.history)
    assert ctx.window_tokens() <= 200
    assert ctx.pinned == [1]


def test_pin_by_index_and_errors():
    ctx = Context(system_prompt="s", budget_tokens=60)
    ctx.append(UserMessage("keep me"))
    ctx.append(AssistantMessage("", [ToolCall("c", "grep", {})]))
    ctx.append(ToolMessage("c", "grep", "r" * 40))
    ctx.pin(3)  # a tool result pins its whole round
    assert ctx.pinned == [2]
    with pytest.raises(ValueError):
        ctx.pin(0)
    with pytest.raises(IndexError):
        ctx.pin(9)


def test_compaction_summarizes_oldest_units_and_keeps_history():
    ctx = Context(system_prompt="sys", budget_tokens=400)
    appended = [SystemMessage("sys")]
    for i in range(20):
        msgs = [UserMessage(f"q{i} " + "q" * 120), AssistantMessage(f"a{i} " + "a" * 120)]
        ctx.extend(msgs)
        appended += msgs
    assert ctx.needs_compaction()
    prov = _Summarizer()
    assert asyncio.run(ctx.compact(prov)) is True
    # The provider saw the oldest turns, not the newest.
    transcript = prov.requests[0][-1].content
    assert "q0 " in transcript and "a19 " not in transcript
    window = ctx.window()
    assert window[0] == SystemMessage("sys")
    assert window[1] == UserMessage(SUMMARY_PREFIX + "they talked about files")
    assert window[-1] == appended[-1]
    assert ctx.window_tokens() <= 400
    assert ctx.history == appended
    assert not ctx.needs_compaction()
    assert ctx.summary == "they talked about files"


def test_compaction_falls_back_to_trimming_when_provider_fails():
    ctx = Context(system_prompt="sys", budget_tokens=300)
    for i in range(20):
        ctx.extend([UserMessage("q" * 120), AssistantMessage("a" * 120)])
    before = ctx.window()
    assert asyncio.run(ctx.compact(_Summarizer(fail=True))) is False
    assert asyncio.run(ctx.compact(_Summarizer(text="  "))) is False
    assert ctx.compaction_failures == 2 and ctx.summary is None
    assert ctx.window() == before and ctx.window_tokens() <= 300


def test_second_compaction_folds_in_the_first_summary():
    ctx = Context(system_prompt="sys", budget_tokens=300)
    for i in range(12):
        ctx.extend([UserMessage(f"q{i} " + "q" * 120), AssistantMessage("a" * 120)])
    assert asyncio.run(ctx.compact(_Summarizer("first")))
    for i in range(12):
        ctx.extend([UserMessage(f"r{i} " + "r" * 120), AssistantMessage("b" * 120)])
    prov = _Summarizer("second")
    assert asyncio.run(ctx.compact(prov))
    assert (SUMMARY_PREFIX + "first") in prov.requests[0][-1].content
    assert ctx.summary == "second"


def test_history_log_is_append_only_and_reads_back(tmp_path):
    path = tmp_path / "h.jsonl"
    ctx = Context(system_prompt="sys", budget_tokens=50, log_path=path)
    ctx.append(UserMessage("hi " * 100))
    ctx.extend(_round(0, n_calls=2, size=5000))
    ctx.close()
    assert Context.load_history(path) == ctx.history


def test_token_counter_falls_back_offline(monkeypatch, tmp_path):
    # With no cached encoding file, never the network: the documented estimate.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    counter, exact = token_counter("gpt-4o")
    assert exact is False and counter is estimate_tokens
    assert Context(model="gpt-4o").exact_tokens is False


def test_custom_counter_is_used_and_cached():
    seen = []

    def count(m):
        seen.append(m)
        return 10

    ctx = Context(system_prompt="s", budget_tokens=35, count_tokens=count)
    for i in range(5):
        ctx.append(UserMessage(f"u{i}"))
    assert ctx.window() == [SystemMessage("s"), UserMessage("u3"), UserMessage("u4")]  # 30 <= 35 < 40
    ctx.window()
    assert len(seen) == 6  # once per message, not per window


def _build(units, pins, big):
    msgs_of = []
    for i, (kind, n) in enumerate(units):
        if kind == "user":
            msgs_of.append([UserMessage("u" * n)])
        elif kind == "answer":
            msgs_of.append([AssistantMessage("a" * n)])
        else:
            size = 3000 if i in big else 30 * n
            msgs_of.append(_round(i, n_calls=n, size=size))
    return msgs_of


@settings(max_examples=150, deadline=None)
@given(
    units=st.lists(
        st.one_of(
            st.tuples(st.just("user"), st.integers(0, 600)),
            st.tuples(st.just("answer"), st.integers(0, 600)),
            st.tuples(st.just("round"), st.integers(1, 4)),
        ),
        min_size=1,
        max_size=30,
    ),
    budget=st.integers(30, 3000),
    pins=st.sets(st.integers(0, 29), max_size=3),
    big=st.sets(st.integers(0, 29), max_size=5),
    compact_at=st.sets(st.integers(0, 29), max_size=3),
    provider_fails=st.booleans(),
)
def test_window_properties_with_pins_elision_and_compaction(
    units, budget, pins, big, compact_at, provider_fails
):
    ctx = Context(system_prompt="sys", budget_tokens=budget, elide_over_chars=1000, elide_keep_chars=200)
    appended = [SystemMessage("sys")]
    for i, msgs in enumerate(_build(units, pins, big)):
        ctx.append(msgs[0], pinned=i in pins)
        ctx.extend(msgs[1:])
        appended += msgs
        if i in compact_at:
            asyncio.run(ctx.compact(_Summarizer("s" * 40, fail=provider_fails), force=True))
    window = ctx.window()
    # The full history is exactly what was appended, whatever the window shows.
    assert ctx.history == appended
    assert window[0] == appended[0]
    # The newest unit is present (its messages possibly elided, same ids and order).
    last = window[-1]
    assert type(last) is type(appended[-1])
    # Never a tool result without its call, never a call without its results.
    ids_called = [c.id for m in window if isinstance(m, AssistantMessage) for c in m.tool_calls]
    ids_answered = [m.call_id for m in window if isinstance(m, ToolMessage)]
    assert sorted(ids_called) == sorted(ids_answered)
    # Pinned units are all there, verbatim apart from elision.
    for i in pins:
        if i < len(units):
            start = next(m for m in _build(units, pins, big)[i])
            if not isinstance(start, ToolMessage):
                assert start in window or isinstance(start, AssistantMessage) and any(
                    isinstance(m, AssistantMessage) and m.tool_calls == start.tool_calls for m in window
                )
    # Every message is the history's message or its elided form, or the one summary.
    summaries = [m for m in window if isinstance(m, UserMessage) and m.content.startswith(SUMMARY_PREFIX)]
    assert len(summaries) <= 1
    if provider_fails:
        assert not summaries
    # Within budget whenever what must be kept fits; and window_tokens is what the window costs.
    assert ctx.window_tokens() <= max(budget, ctx.floor_tokens())
    assert ctx.window_tokens() == sum(ctx._count(m) for m in window)
    # Window order follows history order (summary aside): match each message after the last.
    pos = -1
    for m in window:
        if m in summaries:
            continue
        pos = next(
            j
            for j in range(pos + 1, len(appended))
            if appended[j] == m
            or isinstance(m, ToolMessage)
            and isinstance(appended[j], ToolMessage)
            and appended[j].call_id == m.call_id
        )
