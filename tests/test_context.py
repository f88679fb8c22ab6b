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
