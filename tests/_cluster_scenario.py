"""One session on a two-node Ray cluster that loses its agent actor's node mid-turn.

Run by ``test_cluster.py`` in a subprocess of its own, because a process holds one Ray runtime
and the test session's is taken by the ``ray_cluster`` fixture::

    python tests/_cluster_scenario.py CONFIG_JSON

``CONFIG_JSON`` holds ``conninfo`` (the PostgreSQL database of the session store),
``workspace`` (the tools' directory, holding no ``marks.txt`` yet), ``model`` (a
``trajectory:PATH`` model that plays the prompts below) and ``prompts`` (three prompts).

What it does, with ``ray.cluster_utils.Cluster`` (each node its own raylet and object store):

1. starts a head node and a worker node, connects, and tells raygent to place agent actors on
   the worker with *soft* node affinity (so the restart after the worker's loss may land on
   the head) and the workspace's tool actor on the head;
2. runs the first prompt to its end (agent on the worker, tools on the head);
3. runs the second prompt, whose tool call holds the turn until a ``go`` file appears, and
   removes the worker node (no graceful shutdown) while the call runs; the caller's stream
   goes on after Ray restarts the agent actor on the head, which reloads the session from
   PostgreSQL (the only store both nodes reach: SQLite is node-local);
4. runs the third prompt on the head, then shuts down everything it started.

The last line of stdout is one JSON object (see :func:`scenario`); worker output is not
forwarded to this driver, so nothing else is printed on stdout. Give it a private
``RAY_TMPDIR`` (the test does): a ``Cluster`` records its address in the Ray temp dir, where a
plain ``ray.init()`` of any other process would find it and join.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import raygent
from raygent.messages import StateChange, ToolCallEnd, ToolResultChunk
from raygent.store import PostgresStore

# The GCS declares a node dead after health_check_failure_threshold failed checks, one per
# health_check_period_ms (defaults 5 x 3 s): 3 x 1 s here, so the run resumes about 5 s after
# the removal instead of about 16 s with the defaults (both measured on the shared 2-core
# machine). Not shorter: under load a healthy raylet can miss a check of under a second and be
# declared dead while it starts. The initial delay (5 s) runs out long before the removal.
FAST_NODE_DEATH = {
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}
# What the agent actor asks for (see scenario); the head's 1 CPU has room for its restart.
AGENT_NUM_CPUS = 0.01
# Polls below: bounded (20 ms steps).
WAIT_STEP_S = 0.02


def _wait_for(check: Any, timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s / WAIT_STEP_S)):
        if check():
            return
        time.sleep(WAIT_STEP_S)
    raise TimeoutError(f"waited {timeout_s} s for {what}")


@ray.remote(num_cpus=0)
def _node_of_task() -> str:
    return ray.get_runtime_context().get_node_id()


def _wait_until_schedulable(node_id: str, timeout_s: float = 60.0) -> None:
    """Wait until work asked for ``node_id`` with soft affinity lands there.

    A node is registered with the GCS before the head's scheduler has it in its view of the
    cluster; a soft affinity to it falls back to another node meanwhile, which would put the
    agent actor on the head from the start.
    """
    deadline = time.monotonic() + timeout_s
    strategy = NodeAffinitySchedulingStrategy(node_id, soft=True)
    while ray.get(_node_of_task.options(scheduling_strategy=strategy).remote()) != node_id:
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {node_id} not schedulable after {timeout_s} s")
        time.sleep(0.2)


def _actor_row(class_name: str) -> dict[str, Any]:
    """The GCS actor table's live row of this job's only actor of ``class_name``.

    Read from the GCS directly: the public state API (``ray.util.state``) is served by the
    dashboard, which this cluster leaves off to stay light on a 2-core machine.
    """
    job = ray.get_runtime_context().get_job_id()
    rows = [
        row for row in ray._private.state.actors().values()
        if row["ActorClassName"] == class_name and row["JobID"] == job and row["State"] != "DEAD"
    ]
    if len(rows) != 1:
        raise RuntimeError(f"expected one live {class_name} of job {job}, found {len(rows)}: {rows}")
    return rows[0]


def _placement(class_name: str) -> dict[str, Any]:
    row = _actor_row(class_name)
    return {"node_id": row["Address"]["NodeID"], "pid": row["Pid"], "restarts": row["NumRestarts"], "state": row["State"]}


def _chunk_summary(chunks: list[Any]) -> dict[str, Any]:
    return {
        "kinds": [type(c).__name__ for c in chunks],
        "results": [[c.result.call_id, c.result.error_kind] for c in chunks if isinstance(c, ToolResultChunk)],
        "last_state": next((c.target for c in reversed(chunks) if isinstance(c, StateChange)), None),
    }


def scenario(cluster: Cluster, cfg: dict[str, Any]) -> dict[str, Any]:
    """Steps 2-4 of the module docs; returns the report printed as JSON.

    Report keys: ``head``/``worker`` (node ids), ``session_id``, ``placement`` (``before`` and
    ``after`` the removal: ``agent``/``tools``, each node id, pid, restarts), ``runs`` (per
    prompt: chunk kinds, tool results ``[call_id, error_kind]``, last state), ``history`` (JSON
    of the agent's ``list[Message]``), ``pids`` (agent actor pid as the actor reports it, before
    and after), ``worker_removed_s`` and ``resumed_after_s`` (seconds from the removal's start
    to its end, and to the restarted actor's answer to the cut-short call), ``released`` (the held call ended once let go).
    """
    workspace = Path(cfg["workspace"])
    worker = next(iter(cluster.worker_nodes))
    head_id, worker_id = cluster.head_node.node_id, worker.node_id
    raygent.init(
        agent_shards=1,  # one agent actor hosts the session, so "the agent's node" is one node
        agent_actor_options={
            "scheduling_strategy": NodeAffinitySchedulingStrategy(worker_id, soft=True),
            # Ray places an actor that asks for no resources at random unless its node
            # affinity is hard, so the soft affinity holds only with some resource asked.
            "num_cpus": AGENT_NUM_CPUS,
        },
        tool_actor_options={"scheduling_strategy": NodeAffinitySchedulingStrategy(head_id, soft=False)},
    )
    store = PostgresStore(cfg["conninfo"])
    _wait_until_schedulable(worker_id)
    agent = raygent.Agent(workspace=workspace, model=cfg["model"], store=store)
    ray.get(agent._actor.pid.remote())  # placed and started
    if _placement("AgentActor")["node_id"] != worker_id:
        raise RuntimeError("the agent actor was not placed on the worker node despite its affinity")
    report: dict[str, Any] = {"head": head_id, "worker": worker_id, "session_id": agent.session_id, "runs": []}
    first, second, third = cfg["prompts"]

    report["runs"].append(_chunk_summary(list(agent.stream(first))))
    report["placement"] = {"before": {"agent": _placement("AgentActor"), "tools": _placement("ToolActor")}}
    report["pids"] = {"before": ray.get(agent._actor.pid.remote())}

    stream = iter(agent.stream(second))
    seen = []
    for chunk in stream:
        seen.append(chunk)
        if isinstance(chunk, ToolCallEnd):
            break
    marks = workspace / "marks.txt"
    _wait_for(lambda: marks.exists() and len(marks.read_text().splitlines()) >= 2, 60, "the held call to start")
    removing = time.monotonic()
    cluster.remove_node(worker, allow_graceful=False)
    report["worker_removed_s"] = time.monotonic() - removing
    for chunk in stream:
        seen.append(chunk)
        if isinstance(chunk, ToolResultChunk) and "resumed_after_s" not in report:
            # The first chunk only the restarted actor can send: the cut-short call's answer.
            report["resumed_after_s"] = time.monotonic() - removing
    report["runs"].append(_chunk_summary(seen))

    report["placement"]["after"] = {"agent": _placement("AgentActor"), "tools": _placement("ToolActor")}
    report["pids"]["after"] = ray.get(agent._actor.pid.remote())
    report["runs"].append(_chunk_summary(list(agent.stream(third))))
    report["history"] = json.loads(msgspec.json.encode(agent.history()))

    # Let the held call go (it still runs on the head's tool actor) so no shell outlives us.
    (workspace / "go").touch()
    released = workspace / "released.txt"
    try:
        _wait_for(released.exists, 30, "the held call to end")
        report["released"] = True
    except TimeoutError:
        report["released"] = False
    agent.close()
    store.close()
    return report


def main() -> int:
    cfg = json.loads(sys.argv[1])
    # The test's timeout sends SIGTERM: leave through the finally below, which stops the nodes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": FAST_NODE_DEATH},
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
        report = scenario(cluster, cfg)
    finally:
        raygent.shutdown()
        cluster.shutdown()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
