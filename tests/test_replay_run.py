"""``raygent replay``: recorded trajectories through the whole runtime on a real local Ray.

Pure parts (the trajectory model, the prompt plan, call mapping, history comparison) are tested
without Ray; the runs use the ``ray_cluster`` fixture in-process, and the command runs as a real
subprocess. No wall-time assertions: only counts, histories and files.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from raygent.messages import (
    AssistantMessage,
    Done,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolMessage,
    UserMessage,
)
from raygent.providers._spec import ProviderSpec, make_provider, resolve_provider
from raygent.providers._trajectory import TrajectoryModel, replay_plan
from raygent.replay import load_trajectory
from raygent.replay_run import history_diff, map_call, percentile, replay_trajectory

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]
SWE_AGENT = (
    DATA / "trajectories/swe-agent/trajectories/demonstrations"
    / "replay__marshmallow-code__marshmallow-1867__function_calling__install-1"
    / "marshmallow-code__marshmallow-1867.traj"
)
# Two user prompts, Anthropic API, one tool call per prompt.
API_CONVERSATION = (
    DATA / "http/pydantic-ai/conversations"
    / "tests__cassettes__test_tool_search__test_anthropic_promotes_local_search_history_round_trip.json"
)


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real data not found at {path} (../shared/data beside the project)")
    return path


CONVERSATION = [
    SystemMessage("recorded system prompt"),
    UserMessage("first"),
    AssistantMessage("looking", [ToolCall("c1", "grep", {"pattern": "x"}), ToolCall("c2", "bash", {"command": "ls"})]),
    ToolMessage("c1", "grep", "a.py:1:x"),
    ToolMessage("c2", "bash", "a.py"),
    AssistantMessage("found it"),
    AssistantMessage("and one more answer"),  # aider records answers in a row
    UserMessage("second"),
    AssistantMessage("", [ToolCall("c3", "read_file", {"path": "a.py"})]),
    ToolMessage("c3", "read_file", "x = 1", is_error=True),
]


# --- pure parts ---------------------------------------------------------------------------------


def test_plan_cuts_prompts_and_answers_in_a_row_get_an_empty_prompt():
    plan = replay_plan(CONVERSATION)
    assert [p.prompt for p in plan] == ["first", "", "second"]
    assert [len(p.turns) for p in plan] == [2, 1, 1]
    assert [p.needs_closing_turn for p in plan] == [False, False, True]


def test_model_streams_the_recorded_turn_for_the_conversation_position():
    model = TrajectoryModel(CONVERSATION, text_delta_chars=3, argument_delta_chars=5)

    def chunks(messages):
        async def collect():
            return [c async for c in model.stream(messages, [])]

        return asyncio.run(collect())

    first = chunks(CONVERSATION[:2])
    assert "".join(c.text for c in first if isinstance(c, TextDelta)) == "looking"
    starts = [c for c in first if isinstance(c, ToolCallStart)]
    assert [(s.index, s.id, s.name) for s in starts] == [(0, "c1", "grep"), (1, "c2", "bash")]
    deltas = [c for c in first if isinstance(c, ToolCallDelta) and c.id == "c1"]
    assert json.loads("".join(d.arguments_delta for d in deltas)) == {"pattern": "x"}
    assert deltas[-1].partial_arguments == {"pattern": "x"}
    assert [c.call for c in first if isinstance(c, ToolCallEnd)] == CONVERSATION[2].tool_calls
    assert first[-1] == Done("tool_calls")
    second = chunks(CONVERSATION[:5])
    assert "".join(c.text for c in second if isinstance(c, TextDelta)) == "found it"
    assert second[-1] == Done("stop")
    # The third prompt ("second") is the third user message, here after the empty prompt.
    replayed = [*CONVERSATION[:6], UserMessage(""), AssistantMessage("and one more answer"), UserMessage("second")]
    third = chunks(replayed)
    assert [c.call.id for c in third if isinstance(c, ToolCallEnd)] == ["c3"]
    # After the last recorded turn of a prompt: an empty closing turn.
    closing = chunks([*replayed, *CONVERSATION[8:]])
    assert [type(c).__name__ for c in closing] == ["Usage", "Done"]


def test_provider_spec_kind_trajectory(tmp_path):
    spec = resolve_provider(f"trajectory:{_need(SWE_AGENT)}")
    assert spec == ProviderSpec(kind="trajectory", model=str(SWE_AGENT))
    model = make_provider(spec)
    assert isinstance(model, TrajectoryModel)
    assert sum(len(p.turns) for p in model.plan) == sum(
        isinstance(m, AssistantMessage) for m in load_trajectory(SWE_AGENT).messages
    )
    with pytest.raises(ValueError):
        resolve_provider("trajectory:")


def test_map_call_sends_shell_commands_to_run_command_and_leaves_the_rest():
    builtin = {"read_file", "write_file", "run_command", "grep"}
    same = ToolCall("a", "write_file", {"path": "p", "content": ""})
    assert map_call(same, builtin, timeout_s=5) is same
    bash = map_call(ToolCall("b", "bash", {"command": "ls -a"}), builtin, timeout_s=5)
    assert bash == ToolCall("b", "run_command", {"command": "ls -a", "timeout_s": 5})
    # SWE-agent without function calling: the name is the command's first word.
    python = map_call(ToolCall("c", "python", {"command": "python reproduce.py"}), builtin, timeout_s=5)
    assert python.name == "run_command" and python.arguments["command"] == "python reproduce.py"
    for own in (ToolCall("d", "open", {"command": "open setup.py"}), ToolCall("e", "create", {"filename": "x.py"})):
        assert map_call(own, builtin, timeout_s=5) is own


def test_history_diff_ignores_system_prompt_closing_turns_and_result_order():
    replayed = [
        SystemMessage("another system prompt"),
        *CONVERSATION[1:3],
        CONVERSATION[4],
        CONVERSATION[3],  # results in another order
        *CONVERSATION[5:7],
        UserMessage(""),
        *CONVERSATION[7:],
        AssistantMessage(""),
    ]
    assert history_diff(CONVERSATION, replayed) is None
    changed = [*replayed[:3], ToolMessage("c2", "bash", "other output"), *replayed[4:]]
    assert "message 3" in history_diff(CONVERSATION, changed)
    assert history_diff(CONVERSATION, changed, contents=False) is None
    assert history_diff(CONVERSATION, replayed[:-3]) is not None


def test_percentile():
    assert percentile([], 50) == 0.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)


# --- in-process on Ray --------------------------------------------------------------------------


def _assert_same_conversation(recorded, replayed):
    """Names, arguments and results of every call, text of every turn, in order."""
    def calls(ms):
        return [(c.id, c.name, c.arguments) for m in ms if isinstance(m, AssistantMessage) for c in m.tool_calls]

    def results(ms):
        return {m.call_id: (m.name, m.content, m.is_error) for m in ms if isinstance(m, ToolMessage)}

    def texts(ms):
        return [m.content for m in ms if isinstance(m, AssistantMessage) and (m.content or m.tool_calls)]

    def prompts(ms):
        return [m.content for m in ms if isinstance(m, UserMessage) and m.content]

    assert calls(replayed) == calls(recorded)
    assert results(replayed) == results(recorded)
    assert texts(replayed) == texts(recorded)
    assert prompts(replayed) == prompts(recorded)


@pytest.mark.ray
@pytest.mark.parametrize("path", [SWE_AGENT, API_CONVERSATION], ids=["swe-agent", "anthropic-api"])
def test_replay_history_equals_the_recording(ray_cluster, path):
    trajectory = load_trajectory(_need(path))
    history: list = []
    report = replay_trajectory(path, history=history)
    assert report.history_matches, report.history_difference
    _assert_same_conversation(trajectory.messages, history)
    system = [m for m in history if isinstance(m, SystemMessage)]
    recorded_system = [m for m in trajectory.messages if isinstance(m, SystemMessage)]
    if recorded_system:
        assert system == recorded_system
    totals = report.totals()
    assert totals["turns"] == sum(isinstance(m, AssistantMessage) for m in trajectory.messages)
    assert totals["tool_calls"] == len(trajectory.steps) == sum(t.tool_calls for t in report.turns)
    assert totals["tool_errors"] == sum(r.is_error for _, r in trajectory.steps)
    assert all(t.overhead_ms > 0 for t in report.turns)
    assert sum(len(t.round_trips_ms) for t in report.turns) == len(trajectory.steps)


def _handmade_trajectory(path: Path) -> Path:
    """A recorded OpenAI chat loop: write_file, then a bash call and a SWE-agent ``open``."""
    def call(id_, name, args):
        return {"id": id_, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}

    messages = [
        {"role": "system", "content": "recorded"},
        {"role": "user", "content": "write out.txt"},
        {"role": "assistant", "content": "writing", "tool_calls": [
            call("c1", "write_file", {"path": "out.txt", "content": "replayed\n"})]},
        {"role": "tool", "tool_call_id": "c1", "content": "wrote out.txt (9 bytes)"},
        {"role": "assistant", "content": None, "tool_calls": [
            call("c2", "bash", {"command": "cat out.txt a.txt"}), call("c3", "open", {"path": "a.txt"})]},
        {"role": "tool", "tool_call_id": "c2", "content": "replayed\nhello"},
        {"role": "tool", "tool_call_id": "c3", "content": "[File: a.txt]"},
    ]
    exchange = {
        "method": "POST", "uri": "https://api.openai.com/v1/chat/completions", "status": 200,
        "request": {"model": "gpt-4o", "messages": messages}, "response_format": "json",
        "response": {"choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "done"}}]},
    }
    path.write_text(json.dumps({"exchanges": [exchange]}))
    return path


@pytest.mark.ray
def test_execute_runs_the_calls_in_a_scratch_copy(ray_cluster, tmp_path):
    traj = _handmade_trajectory(tmp_path / "run.json")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a.txt").write_text("hello\n")
    history: list = []
    report = replay_trajectory(traj, execute=True, workspace=workspace, keep_scratch=True, history=history)
    try:
        assert report.mode == "execute" and report.workspace and report.workspace != str(workspace)
        scratch = Path(report.workspace)
        assert (scratch / "out.txt").read_text() == "replayed\n"
        assert (scratch / "a.txt").read_text() == "hello\n"
        assert sorted(p.name for p in workspace.iterdir()) == ["a.txt"]  # the original untouched
        results = {m.call_id: m for m in history if isinstance(m, ToolMessage)}
        assert not results["c1"].is_error
        assert not results["c2"].is_error and "replayed" in results["c2"].content and "hello" in results["c2"].content
        assert results["c3"].is_error and results["c3"].name == "open"  # no such tool in raygent
        assert report.history_matches, report.history_difference  # calls compared, not contents
        totals = report.totals()
        assert (totals["turns"], totals["tool_calls"], totals["tool_errors"]) == (3, 3, 1)
        assert totals["tools_ms"] > 0
    finally:
        import shutil

        shutil.rmtree(Path(report.workspace).parent, ignore_errors=True)


# --- the command, as a subprocess ---------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "raygent.cli", "replay", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env=env,
    )


@pytest.mark.ray
def test_cli_replay_swe_agent_json():
    trajectory = load_trajectory(_need(SWE_AGENT))
    proc = _cli(str(SWE_AGENT), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["format"] == "swe-agent" and report["mode"] == "recorded"
    assert report["history_matches"] is True
    assert report["totals"]["turns"] == sum(isinstance(m, AssistantMessage) for m in trajectory.messages)
    assert report["totals"]["tool_calls"] == len(trajectory.steps)
    assert len(report["turns"]) == report["totals"]["turns"] + report["totals"]["closing_turns"]


@pytest.mark.ray
def test_cli_replay_api_conversation_table():
    trajectory = load_trajectory(_need(API_CONVERSATION))
    proc = _cli(str(API_CONVERSATION))
    assert proc.returncode == 0, proc.stderr[-2000:]
    totals = re.search(r"^turns (\d+) .*· tool calls (\d+) ", proc.stdout, re.M)
    assert totals, proc.stdout
    assert int(totals.group(1)) == sum(isinstance(m, AssistantMessage) for m in trajectory.messages)
    assert int(totals.group(2)) == len(trajectory.steps)
    rows = re.findall(r"^\s+\d+\s+\d+\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+", proc.stdout, re.M)
    assert len(rows) >= int(totals.group(1))
    assert "history matches the recording" in proc.stdout
    assert "overhead total" in proc.stdout and "p99" in proc.stdout


def test_cli_replay_refuses_a_missing_file(tmp_path):
    proc = _cli(str(tmp_path / "nope.traj"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
