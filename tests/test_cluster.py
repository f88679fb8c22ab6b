"""A session across a two-node Ray cluster, and the loss of the node that holds its agent actor.

The cluster (``ray.cluster_utils.Cluster``: a head and a worker node on this machine, each with
its own raylet and object store) runs in a subprocess, ``_cluster_scenario.py``, since this
process already holds the session's Ray runtime and a process holds one. The session store is
the real PostgreSQL server of the ``postgres`` fixture: both nodes reach it, where an SQLite
file would be node-local. The test checks what the scenario reports and reads the store itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest

from raygent.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage
from raygent.store import PostgresStore

from test_tool_streaming import write_trajectory

SCENARIO = Path(__file__).resolve().parent / "_cluster_scenario.py"
# Starting two nodes, the removal (the run resumes about 5 s after it) and three prompts take
# 30-50 s on the shared 2-core machine; the bound is for a machine under heavy load.
SCENARIO_TIMEOUT_S = 240
# A held tool call: marks the file, then waits (bounded: 60 s) for the scenario's "go" file.
HELD = "echo ran >> marks.txt; for i in $(seq 1200); do [ -e go ] && break; sleep 0.05; done; echo > released.txt"
PROMPTS = ["look around", "change the file", "and again"]


def _run_scenario(cfg: dict, ray_tmpdir: Path) -> dict:
    # A Cluster records its address in <ray temp dir>/ray_current_cluster, where a plain
    # ray.init() of any other process on this machine would find it and join; a private temp
    # dir keeps the scenario's cluster to itself.
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmpdir)}
    proc = subprocess.Popen(
        [sys.executable, str(SCENARIO), json.dumps(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env,
    )
    try:
        out, err = proc.communicate(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the scenario stop its nodes; then the process group it leads, ours only.
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(f"the cluster scenario ran over {SCENARIO_TIMEOUT_S} s\n{err[-4000:]}") from None
    assert proc.returncode == 0, f"scenario failed ({proc.returncode}):\n{err[-6000:]}"
    lines = out.strip().splitlines()
    assert lines, f"scenario printed no report:\n{err[-4000:]}"
    return json.loads(lines[-1])


@pytest.mark.ray
def test_a_session_survives_the_loss_of_its_agent_actors_node(postgres, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    model = write_trajectory(
        tmp_path / "run.json",
        [
            (PROMPTS[0], [{"command": "echo first >> marks.txt"}, {"content": "looked"}]),
            (PROMPTS[1], [{"command": HELD}, {"content": "finished"}]),
            (PROMPTS[2], [{"command": "echo again >> marks.txt"}, {"content": "done again"}]),
        ],
    )
    conninfo = postgres.new_database()
    # Short (unix socket paths under it must stay within 107 bytes), and removed afterwards.
    ray_tmpdir = Path(tempfile.mkdtemp(prefix="rgc-", dir="/tmp"))
    try:
        report = _run_scenario(
            {"conninfo": conninfo, "workspace": str(workspace), "model": model, "prompts": PROMPTS}, ray_tmpdir
        )
    finally:
        shutil.rmtree(ray_tmpdir, ignore_errors=True)

    head, worker = report["head"], report["worker"]
    assert head != worker
    before, after = report["placement"]["before"], report["placement"]["after"]
    # Across nodes: the session's first run completed with its agent on the worker and its
    # tools on the head.
    assert before["agent"]["node_id"] == worker and before["tools"]["node_id"] == head
    first, second, third = report["runs"]
    assert first["results"] == [["call_1", None]] and first["last_state"] == "Idle"
    # After the worker's removal Ray restarted the agent actor on the head (soft affinity); the
    # tool actor on the head was never touched.
    assert after["agent"]["node_id"] == head and after["agent"]["restarts"] == 1
    assert after["tools"] == {**before["tools"], "state": "ALIVE"}
    assert report["pids"]["before"] == before["agent"]["pid"]
    assert report["pids"]["after"] == after["agent"]["pid"] != before["agent"]["pid"]

    # The run that lost its node went on from the store: the held mutating call, cut short,
    # was answered "interrupted" (not run again), each chunk of the call came once, and the
    # run ended Idle; the next prompt ran on the head.
    assert second["results"] == [["call_2", "interrupted"]] and second["last_state"] == "Idle"
    assert second["kinds"].count("ToolCallEnd") == 1 and second["kinds"].count("ToolResultChunk") == 1
    assert third["results"] == [["call_3", None]] and third["last_state"] == "Idle"

    history = msgspec.json.decode(json.dumps(report["history"]), type=list[Message])
    assert [type(m) for m in history] == [SystemMessage] + [UserMessage, AssistantMessage, ToolMessage, AssistantMessage] * 3
    assert [m.content for m in history if isinstance(m, UserMessage)] == PROMPTS
    assert [m.call_id for m in history if isinstance(m, ToolMessage)] == ["call_1", "call_2", "call_3"]
    interrupted = history[7]
    assert isinstance(interrupted, ToolMessage) and interrupted.is_error
    assert interrupted.content.startswith("interrupted:") and "not run again" in interrupted.content
    assert [m.content for m in history if isinstance(m, AssistantMessage) and not m.tool_calls] == [
        "looked", "finished", "done again",
    ]
    # Nothing lost, nothing doubled: PostgreSQL holds exactly the history, seq 0..n-1.
    with PostgresStore(conninfo) as store:
        assert store.load(report["session_id"]) == history
        assert store.last_seq(report["session_id"]) == len(history) - 1
    # Every mutating command ran once, the held one included.
    assert (workspace / "marks.txt").read_text().splitlines() == ["first", "ran", "again"]
    assert report["released"]
