"""Tool-call policies on a real local Ray cluster: through ``Agent`` and the ``raygent run`` CLI."""

import json
import subprocess
import sys
import time

import pytest

import raygent
from raygent.errors import ApprovalError, PolicyError
from raygent.messages import (
    ApprovalRequest,
    AssistantMessage,
    StateChange,
    ToolMessage,
    ToolResultChunk,
)
from raygent.policy import Rule

from test_session import script_for

pytestmark = pytest.mark.ray

TASK = "Where is the scheduler?"  # the scripted model: list_dir, one grep, read_file


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "scheduler.py").write_text(
        "class Scheduler:\n    '''Round-robin scheduler for worker queues.'''\n"
        "    def next_worker(self):\n        return self.queue.pop(0)\n"
    )
    return tmp_path


def _whole(history):
    for i, m in enumerate(history):
        if isinstance(m, AssistantMessage) and m.tool_calls:
            answered = {t.call_id for t in history[i + 1 : i + 1 + len(m.tool_calls)] if isinstance(t, ToolMessage)}
            assert answered == {c.id for c in m.tool_calls}
    return True


def test_deny_rule_on_ray(ray_cluster, workspace):
    policy = raygent.Policy(tools={"read_file": Rule("deny", "reading is off today")})
    with raygent.Agent(workspace=workspace, model="scripted", policy=policy) as agent:
        result = agent.run(TASK)
        assert [c.name for c in result.tool_calls] == script_for(TASK)
        by_name = {r.name: r for r in result.tool_results}
        read = by_name["read_file"]
        assert read.is_error and read.error_kind == "denied"
        assert read.content == "denied by policy rule tools.read_file: reading is off today"
        assert not by_name["grep"].is_error and not by_name["list_dir"].is_error
        assert result.text  # the model got its next turn and answered
        assert _whole(agent.history())
        status = agent.status()
        assert status["state"] == "Idle" and status["stats"]["tool_errors"] == 1


def test_prompt_approve_and_deny_through_agent_stream(ray_cluster, workspace):
    task = "Where are scheduler and worker queues?"  # several greps in one turn
    n_greps = script_for(task).count("grep")
    assert n_greps >= 2
    with raygent.Agent(workspace=workspace, model="scripted", policy=raygent.Policy(tools={"grep": "prompt"})) as agent:
        asked: list[ApprovalRequest] = []
        chunks = []
        for chunk in agent.stream(task):
            chunks.append(chunk)
            if isinstance(chunk, ApprovalRequest):
                asked.append(chunk)
                if len(asked) == n_greps:  # all announced: answer them while the run waits
                    assert agent.status()["state"] == "WaitingForUser"
                    assert agent.pending_approvals() == [r.call.id for r in asked]
                    agent.approve(asked[0].call.id)
                    for r in asked[1:]:
                        agent.deny(r.call.id, reason="one search is enough")
                    with pytest.raises(ApprovalError) as info:
                        agent.approve(asked[0].call.id)
                    assert info.value.call_id == asked[0].call.id
        assert [r.call.name for r in asked] == ["grep"] * n_greps
        assert all(r.rule == "tools.grep" for r in asked)
        results = {c.result.call_id: c.result for c in chunks if isinstance(c, ToolResultChunk)}
        assert not results[asked[0].call.id].is_error
        for r in asked[1:]:
            assert results[r.call.id].error_kind == "denied"
            assert results[r.call.id].content == "denied by the user: one search is enough"
        targets = [(c.source, c.target) for c in chunks if isinstance(c, StateChange)]
        i = targets.index(("ExecutingTools", "WaitingForUser"))
        assert targets[i + 1] == ("WaitingForUser", "ExecutingTools") and targets[-1][1] == "Idle"
        assert _whole(agent.history())
        assert agent.pending_approvals() == []


def test_agent_run_denies_without_an_approver_and_asks_with_one(ray_cluster, workspace):
    with raygent.Agent(workspace=workspace, model="scripted", policy=raygent.Policy(default="prompt")) as agent:
        denied = agent.run(TASK)
        # With every search refused the scripted model has no file to read, and answers.
        assert [r.name for r in denied.tool_results] == ["list_dir", "grep"]
        assert "No file mentions" in denied.text
        assert all(r.error_kind == "denied" and "no approver" in r.content for r in denied.tool_results)
        seen = []

        def approver(request):
            seen.append(request.call.name)
            return True if request.call.name != "read_file" else "not that file"

        approved = agent.run(TASK, on_approval=approver)
        assert seen == script_for(TASK)
        by_name = {r.name: r for r in approved.tool_results}
        assert not by_name["grep"].is_error and "scheduler.py" in by_name["grep"].content
        assert by_name["read_file"].content == "denied by the user: not that file"
        assert agent.status()["state"] == "Idle"
        assert _whole(agent.history())


def test_failing_approver_denies_the_call_and_leaves_the_session_usable(ray_cluster, workspace):
    with raygent.Agent(workspace=workspace, model="scripted", policy=raygent.Policy(tools={"grep": "prompt"})) as agent:

        def approver(request):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            agent.run(TASK, on_approval=approver)
        # The abandoned run was answered (denied) and finishes in the actor.
        for _ in range(200):
            if agent.status()["state"] == "Idle":
                break
            time.sleep(0.05)
        assert agent.status()["state"] == "Idle"
        assert _whole(agent.history())
        denied = [m for m in agent.history() if isinstance(m, ToolMessage) and m.name == "grep"]
        assert [m.content for m in denied] == ["denied by the user: the approver failed"]
        assert not any(r.is_error for r in agent.run(TASK, on_approval=lambda r: True).tool_results)


def test_workspace_policy_file_is_picked_up(ray_cluster, workspace):
    (workspace / ".raygent").mkdir()
    f = workspace / ".raygent" / "policy.toml"
    f.write_text('[tools]\nlist_dir = "deny"\n')
    with raygent.Agent(workspace=workspace, model="scripted") as agent:
        assert agent.policy.source == str(f)
        result = agent.run(TASK)
        assert [r.error_kind for r in result.tool_results if r.name == "list_dir"] == ["denied"]
    # An explicit policy wins over the file.
    with raygent.Agent(workspace=workspace, model="scripted", policy=raygent.Policy()) as agent:
        assert not any(r.is_error for r in agent.run(TASK).tool_results)
    f.write_text('[tools]\nlist_dir = "nope"\n')
    with pytest.raises(PolicyError) as info:
        raygent.Agent(workspace=workspace, model="scripted")
    assert str(f) in str(info.value) and "tools.list_dir" in str(info.value)


# --- run_command on Ray: a recorded model turn calls it -----------------------------------------


def _recorded_command_model(tmp_path, command):
    """A trajectory (recorded OpenAI Chat loop) whose assistant calls run_command once, then
    answers: played on the AgentActor by the ``trajectory`` provider, a test double for a model."""
    call = {"id": "call_cmd", "type": "function", "function": {"name": "run_command", "arguments": json.dumps({"command": command})}}
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_cmd", "content": "(recorded)"},
    ]
    exchange = {
        "method": "POST", "uri": "https://api.openai.com/v1/chat/completions", "status": 200,
        "request": {"model": "recorded", "messages": messages},
        "response": {"choices": [{"message": {"role": "assistant", "content": "done"}}]},
    }
    path = tmp_path / "recorded.json"
    path.write_text(json.dumps({"exchanges": [exchange]}))
    return f"trajectory:{path}"


def test_command_patterns_and_passed_env_on_ray(ray_cluster, workspace, tmp_path_factory, monkeypatch):
    # Set on the driver only: the ToolActor's process never had it, so a value seen by the
    # command travelled with the session.
    monkeypatch.setenv("RAYGENT_TEST_TOKEN", "s3cret")
    model = _recorded_command_model(
        tmp_path_factory.mktemp("rec"), 'echo "token=[$RAYGENT_TEST_TOKEN]" && touch ran.txt'
    )
    policy = raygent.Policy(commands={"echo *": "allow", "touch *": "prompt", "*": "deny"})
    with raygent.Agent(workspace=workspace, model=model, policy=policy, pass_env=["RAYGENT_TEST_TOKEN", "UNSET_VAR_X"]) as agent:
        asked = []
        result = agent.run("go", on_approval=lambda r: asked.append(r) or True)
        assert [(r.call.id, r.rule) for r in asked] == [("call_cmd", 'commands."touch *"')]
        (r,) = result.tool_results
        assert not r.is_error and r.content.startswith("token=[s3cret]")
        assert (workspace / "ran.txt").exists()
    # Another session of the same workspace (same ToolActor) that passes nothing sees nothing.
    (workspace / "ran.txt").unlink()
    with raygent.Agent(workspace=workspace, model=model, policy=policy) as agent:
        result = agent.run("go", on_approval=lambda r: "not now")
        (r,) = result.tool_results
        assert r.error_kind == "denied" and r.content == "denied by the user: not now"
        assert not (workspace / "ran.txt").exists()
    with raygent.Agent(workspace=workspace, model=model) as agent:
        (r,) = agent.run("go").tool_results
        assert r.content.startswith("token=[]")


# --- the CLI, as a real subprocess reading its answers from stdin --------------------------------


def _cli(workspace, address, *args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "raygent.cli", "run", TASK, "--workspace", str(workspace), "--address", address, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_cli_asks_and_follows_the_answer(ray_cluster, workspace):
    (workspace / ".raygent").mkdir()
    (workspace / ".raygent" / "policy.toml").write_text('[tools]\ngrep = { decision = "prompt", reason = "searches are slow" }\n')
    address = ray_cluster.get_runtime_context().gcs_address
    n = len(script_for(TASK))

    yes = _cli(workspace, address, stdin="y\n")
    assert yes.returncode == 0, yes.stderr
    assert "? approve grep tools.grep (searches are slow)" in yes.stdout
    assert "run it?" in yes.stdout
    assert f"tool calls {n} (0 failed)" in yes.stdout and "state Idle" in yes.stdout

    no = _cli(workspace, address, stdin="n\nuse list_dir\n")
    assert no.returncode == 0, no.stderr
    assert "reason for the model" in no.stdout
    assert "✗ denied grep" in no.stdout and "denied by the user: use list_dir" in no.stdout
    # The refused search leaves the scripted model nothing to read: list_dir and grep only.
    assert "tool calls 2 (1 failed)" in no.stdout

    eof = _cli(workspace, address, stdin="")
    assert eof.returncode == 0, eof.stderr
    assert "denied (end of input)" in eof.stdout and "tool calls 2 (1 failed)" in eof.stdout

    flag = _cli(workspace, address, "--yes", stdin="")
    assert flag.returncode == 0 and "approved (--yes)" in flag.stdout and "(0 failed)" in flag.stdout


def test_cli_bad_policy_file_exits_2(ray_cluster, workspace, tmp_path_factory):
    bad = tmp_path_factory.mktemp("p") / "policy.toml"
    bad.write_text("[tools\n")
    address = ray_cluster.get_runtime_context().gcs_address
    proc = _cli(workspace, address, "--policy", str(bad))
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "invalid TOML" in proc.stderr
