"""The standard workload: a recorded SWE-agent run replayed through the whole runtime on Ray.

Each round plays every recorded prompt of the trajectory on a fresh agent session (started
untimed): model turns from the recording (``TrajectoryModel`` in the ``AgentActor``), every tool
call over Ray to a tool actor answering from the recording, chunks streamed to the driver in
batches. The model and the tools answer at once, so the time is raygent's own overhead; items
are the tool calls, so the per-item figure is the overhead per tool round trip (a model turn
and its tool call). ``raygent replay PATH`` prints the same per turn. No peer runs this
workload on Ray, so the case stands alone.
"""

from __future__ import annotations

import pytest

from conftest import SHARED_DATA, case

TRAJECTORY = (
    SHARED_DATA / "trajectories/swe-agent/trajectories/demonstrations"
    / "replay__marshmallow-code__marshmallow-1867__function_calling__install-1"
    / "marshmallow-code__marshmallow-1867.traj"
)


@pytest.fixture(scope="module")
def ray_here():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def test_replay_swe_agent_trajectory(benchmark, ray_here):
    if not TRAJECTORY.is_file():
        pytest.skip(f"real data not found at {TRAJECTORY} (../shared/data beside the project)")
    from raygent.replay_run import ReplayRunner, history_diff

    runner = ReplayRunner(TRAJECTORY)
    agents = []
    try:
        n_calls = len(runner.trajectory.steps)
        n_turns = sum(len(p.turns) for p in runner.plan)
        # Checked before timing: one play gives the recorded turns, calls and history.
        agent = runner.start_session()
        agents.append(agent)
        turns = runner.play(agent)
        assert sum(t.recorded for t in turns) == n_turns
        assert sum(t.tool_calls for t in turns) == n_calls
        assert history_diff(runner.trajectory.messages, agent.history()) is None

        def setup():
            agents.append(runner.start_session())
            return (agents[-1],), {}

        def play(agent):
            got = runner.play(agent)
            assert sum(t.tool_calls for t in got) == n_calls

        case(benchmark, group=f"replay through the runtime: {TRAJECTORY.name} ({n_calls} tool calls)",
             impl="raygent", items=n_calls)
        benchmark.extra_info["turns"] = len(turns)
        benchmark.pedantic(play, setup=setup, rounds=3, iterations=1)
    finally:
        for a in agents:
            a.close()
        runner.close()
