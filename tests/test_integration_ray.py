"""Whole sessions on a real local Ray cluster: AgentActor, ToolActor and PredictorActor."""

import subprocess
import sys
import time

import pytest

import raygent
from raygent.errors import AgentError
from raygent.messages import (
    AssistantMessage,
    StateChange,
    TextDelta,
    ToolCallEnd,
    ToolMessage,
    ToolResultChunk,
    UserMessage,
)

from test_session import script_for

pytestmark = pytest.mark.ray


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "scheduler.py").write_text(
        "class Scheduler:\n    '''Round-robin scheduler for worker queues.'''\n"
        "    def next_worker(self):\n        return self.queue.pop(0)\n"
    )
    (tmp_path / "pkg" / "other.py").write_text("# unrelated\nVALUE = 1\n")
    return tmp_path


def test_multi_turn_session_with_tool_calls(ray_cluster, workspace):
    agent = raygent.Agent(workspace=workspace, model="scripted")
    try:
        first = "Where is the round-robin scheduler?"
        result = agent.run(first)
        assert result.model == "scripted (offline)"
        assert [c.name for c in result.tool_calls] == script_for(first)
        assert not any(r.is_error for r in result.tool_results)
        assert len(result.tool_results) == len(result.tool_calls)
        assert result.tool_calls[-1].arguments["path"] == "pkg/scheduler.py"
        assert "pkg/scheduler.py" in result.text and result.turns == 4
        assert result.input_tokens > 0 and result.output_tokens > 0

        # Second prompt in the same session: streamed, and the history holds both.
        second = "and what does next_worker return?"
        chunks = list(agent.stream(second))
        assert any(isinstance(c, TextDelta) for c in chunks)
        assert sum(isinstance(c, ToolCallEnd) for c in chunks) == len(script_for(second))
        assert sum(isinstance(c, ToolResultChunk) for c in chunks) == len(script_for(second))
        assert isinstance(chunks[-1], StateChange) and chunks[-1].target == "Idle"
        history = agent.history()
        assert [m.content for m in history if isinstance(m, UserMessage)] == [
            "Where is the round-robin scheduler?",
            "and what does next_worker return?",
        ]
        n_calls = len(script_for(first)) + len(script_for(second))
        assert sum(isinstance(m, ToolMessage) for m in history) == n_calls
        status = agent.status()
        assert status["state"] == "Idle" and status["stats"]["tool_calls"] == n_calls

        # The predictor heard the tool events (fire-and-forget, so allow it to catch up).
        for _ in range(50):
            if agent.next_tools("list_dir"):
                break
            time.sleep(0.05)
        assert agent.next_tools("list_dir")[0][0] == "grep"
    finally:
        agent.close()


def test_two_agents_share_the_workspace_tool_actor(ray_cluster, workspace):
    a = raygent.Agent(workspace=workspace, model="scripted")
    b = raygent.Agent(workspace=workspace, model="scripted")
    try:
        assert a._tools._actor_id == b._tools._actor_id
        ra, rb = a.run("scheduler"), b.run("scheduler")
        assert ra.tool_calls[-1].arguments == rb.tool_calls[-1].arguments
    finally:
        a.close()
        b.close()


def test_killed_tool_actor_gives_typed_error_and_keeps_history(ray_cluster, tmp_path):
    (tmp_path / "notes.txt").write_text("kill switch here\n")
    agent = raygent.Agent(workspace=tmp_path, model="scripted")
    try:
        agent.run("kill switch")
        ray_cluster.kill(agent._tools)
        with pytest.raises(AgentError) as info:
            agent.run("kill switch again")
        assert info.value.kind == "tool_runner_failed"
        history = agent.history()
        assert [m.content for m in history if isinstance(m, UserMessage)] == [
            "kill switch",
            "kill switch again",
        ]
        last = history[-1]
        assert isinstance(last, ToolMessage) and last.is_error and "interrupted" in last.content
        assert isinstance(history[-2], AssistantMessage)
        assert agent.status()["state"] == "Error"
    finally:
        agent.close()


def _cli(*args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "raygent.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_cli_run_streams_tool_calls_and_a_summary(ray_cluster, workspace):
    address = ray_cluster.get_runtime_context().gcs_address
    proc = _cli("run", "Where is the scheduler?", "--workspace", str(workspace), "--address", address)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "scripted (offline)" in out
    for name in ("list_dir", "grep", "read_file"):
        assert f"▶ {name}" in out
    assert "pkg/scheduler.py" in out
    n_calls = len(script_for("Where is the scheduler?"))
    assert f"tool calls {n_calls} (0 failed)" in out and "state Idle" in out


def test_cli_fails_with_one_line_reason(ray_cluster, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    proc = _cli("run", "x", "--workspace", str(tmp_path / "missing"), "--address", address)
    assert proc.returncode == 2
    assert "is not a directory" in proc.stderr
    # An endpoint that refuses connections: a provider error after the retries, exit code 1.
    proc = _cli(
        "run", "x", "--workspace", str(tmp_path), "--address", address,
        "--model", "some-model", "--base-url", "http://127.0.0.1:9/v1",
    )
    assert proc.returncode == 1
    assert "error (provider_error)" in proc.stderr


def test_user_tools_run_in_the_workspace_tool_actor(ray_cluster, tmp_path):
    import orjson

    from raygent.messages import ToolCall, ToolResultChunk, ToolStreamItem, decode, encode

    @raygent.tool(read_only=True)
    def shout(text: str, times: int = 1) -> str:
        """Upper-case a text.

        Parameters
        ----------
        text : str
            What to shout.
        times : int
            Repetitions.
        """
        return " ".join([text.upper()] * times)

    def plain_function(n: int) -> int:
        """Double a number."""
        return 2 * n

    agent = raygent.Agent(workspace=tmp_path, model="scripted", tools=[shout, plain_function])
    try:
        refs = agent._tools.run_turn.options(num_returns="streaming").remote(
            encode([ToolCall("a", "shout", {"text": "hi", "times": 2}),
                    ToolCall("b", "plain_function", {"n": 21}),
                    ToolCall("c", "shout", {"text": 3})])
        )
        items = [decode(ray_cluster.get(ref), ToolStreamItem) for ref in refs]
        assert all(isinstance(i, ToolResultChunk) for i in items)  # these tools stream nothing
        results = {i.result.call_id: i.result for i in items}
        assert results["a"].content == "HI HI" and not results["a"].is_error
        assert orjson.loads(results["b"].content) == 42
        assert results["c"].is_error and results["c"].error_kind == "bad_arguments"
        # A name clash with a built-in is refused before anything is registered.
        def read_file(path: str) -> str:
            """Shadow a built-in."""
            return path

        with pytest.raises(ValueError, match="taken by a built-in"):
            raygent.Agent(workspace=tmp_path, model="scripted", tools=[read_file])
    finally:
        agent.close()


def test_closing_an_agent_ends_its_predictor_session(ray_cluster, workspace):
    agent = raygent.Agent(workspace=workspace, model="scripted")
    agent.run("Where is the scheduler?")
    predictor = agent._predictor
    session_id = agent.session_id
    for _ in range(100):  # observe() is fire-and-forget: wait until it has landed
        if session_id in ray_cluster.get(predictor.snapshot.remote())["active_sessions"]:
            break
        time.sleep(0.05)
    before = ray_cluster.get(predictor.snapshot.remote())
    assert session_id in before["active_sessions"]
    agent.close()
    # The session's last tool is forgotten once the close reaches the predictor (bounded wait).
    for _ in range(100):
        if session_id not in ray_cluster.get(predictor.snapshot.remote())["active_sessions"]:
            break
        time.sleep(0.05)
    snap = ray_cluster.get(predictor.snapshot.remote())
    assert session_id not in snap["active_sessions"]
    assert snap["finished_sessions"] > before["finished_sessions"]


def test_agent_compacts_a_long_session_and_keeps_the_full_history(ray_cluster, workspace):
    prompts = ["Where is the round-robin scheduler?", "and what does next_worker return?", "where is VALUE set?"]
    with pytest.raises(ValueError, match="compact_threshold"):
        raygent.Agent(workspace=workspace, model="scripted", compact_threshold=1.5)
    with pytest.raises(ValueError, match="speculation_threshold"):
        raygent.Agent(workspace=workspace, model="scripted", speculation_threshold=0)
    agents = {
        t: raygent.Agent(workspace=workspace, model="scripted", budget_tokens=1_500, compact_threshold=t)
        for t in (0.5, None)
    }
    try:
        for agent in agents.values():
            for p in prompts:
                agent.run(p)
        compacting, never = agents[0.5].status(), agents[None].status()
        assert compacting["compactions"] >= 1 and never["compactions"] == 0
        # The window is a view: both keep every message, in the same shape.
        full = [type(m).__name__ for m in agents[0.5].history()]
        assert full == [type(m).__name__ for m in agents[None].history()]
        assert full.count("UserMessage") == len(prompts)
    finally:
        for agent in agents.values():
            agent.close()


def test_init_without_an_address_starts_its_own_cluster_beside_a_recorded_one(tmp_path):
    # Ray with no address joins the cluster named in <ray temp dir>/ray_current_cluster (any
    # `ray start` on the machine writes it); raygent.init() must start a local one instead.
    import os
    import tempfile

    root = tempfile.mkdtemp(prefix="rg-", dir="/tmp")  # short: Ray's socket paths have a limit
    try:
        os.makedirs(f"{root}/ray")
        with open(f"{root}/ray/ray_current_cluster", "w") as f:
            f.write("127.0.0.1:9\n")  # nothing listens there
        code = (
            "import ray, raygent\n"
            "raygent.init(num_cpus=1)\n"
            "print(ray.get(ray.put(7)), ray.get_runtime_context().gcs_address)\n"
            "raygent.shutdown()\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": root}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        value, address = proc.stdout.split()
        assert value == "7" and not address.endswith(":9")
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
