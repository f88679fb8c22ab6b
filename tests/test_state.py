import pytest

from raygent.errors import InvalidTransition
from raygent.state import TRANSITIONS, AgentState, StateMachine

S = AgentState


def test_a_full_turn_follows_the_table():
    m = StateMachine()
    path = [
        S.PROCESSING_PROMPT,
        S.GENERATING_RESPONSE,
        S.EXECUTING_TOOLS,
        S.GENERATING_RESPONSE,
        S.EXECUTING_TOOLS,
        S.WAITING_FOR_USER,
        S.EXECUTING_TOOLS,
        S.GENERATING_RESPONSE,
        S.IDLE,
    ]
    for target in path:
        m.to(target, f"to {target.value}")
    assert m.state is S.IDLE
    assert [t.target for t in m.history] == path
    assert m.history[0].source is S.IDLE and m.history[0].trigger == "to ProcessingPrompt"


def test_illegal_transition_raises_and_keeps_the_state():
    m = StateMachine()
    with pytest.raises(InvalidTransition) as info:
        m.to(S.EXECUTING_TOOLS, "tool call before any prompt")
    assert m.state is S.IDLE
    assert (info.value.source, info.value.target) == ("Idle", "ExecutingTools")
    assert "tool call before any prompt" in str(info.value)
    assert not m.history


def test_error_records_its_kind_and_recovers_to_a_new_prompt():
    m = StateMachine()
    m.to(S.PROCESSING_PROMPT, "prompt")
    m.to(S.GENERATING_RESPONSE, "ready")
    m.to(S.ERROR, "provider failed", error_kind="provider_error")
    assert m.error_kind == "provider_error"
    m.to(S.PROCESSING_PROMPT, "next prompt")
    assert m.error_kind is None


def test_shutdown_is_terminal_and_reachable_from_every_live_state():
    assert TRANSITIONS[S.SHUTDOWN] == frozenset()
    for state, targets in TRANSITIONS.items():
        if state is not S.SHUTDOWN:
            assert S.SHUTDOWN in targets, state


def test_history_is_bounded():
    m = StateMachine(history_size=4)
    for _ in range(10):
        m.to(S.PROCESSING_PROMPT, "p")
        m.to(S.GENERATING_RESPONSE, "g")
        m.to(S.IDLE, "i")
    assert len(m.history) == 4
    assert m.history[-1].target is S.IDLE
