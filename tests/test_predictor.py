import pytest

from raygent.predictor import Predictor, ToolEvent


def test_next_tool_probabilities_from_transitions():
    p = Predictor()
    for tools in (["list_dir", "grep", "read_file"], ["grep", "read_file"], ["grep", "run_command"]):
        for i, t in enumerate(tools):
            p.observe(ToolEvent(f"s{len(tools)}{tools[-1]}", t, 10.0 * (i + 1)))
    top = dict(p.next_tools("grep"))
    assert top == pytest.approx({"read_file": 2 / 3, "run_command": 1 / 3})
    assert p.next_tools(None)[0] == ("grep", pytest.approx(2 / 3))
    assert p.next_tools("never_seen") == []


def test_running_mean_duration_and_success_rate():
    p = Predictor()
    for d, ok in [(10.0, True), (20.0, False), (30.0, True)]:
        p.observe(ToolEvent("s", "run_command", d, ok))
    assert p.mean_duration_ms("run_command") == pytest.approx(20.0)
    assert p.stats["run_command"].success_rate == pytest.approx(2 / 3)
    assert p.mean_duration_ms("grep") is None


def test_sessions_are_separate_sequences():
    p = Predictor()
    p.observe(ToolEvent("a", "grep", 1))
    p.observe(ToolEvent("b", "write_file", 1))
    p.observe(ToolEvent("a", "read_file", 1))
    assert p.next_tools("grep") == [("read_file", 1.0)]
    p.end_session("a")
    p.observe(ToolEvent("a", "list_dir", 1))
    assert dict(p.next_tools(None)) == pytest.approx(
        {"grep": 1 / 3, "write_file": 1 / 3, "list_dir": 1 / 3}
    )
