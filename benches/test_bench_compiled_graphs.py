"""Ray Compiled Graphs for the AgentActor<->ToolActor hot path: what they save, what they cost.

Run: ``.venv/bin/python -m pytest benches/test_bench_compiled_graphs.py -s`` (the timed
cases, then the idle cost, the share of an agent turn and the structural checks, which print
their figures; ``--benchmark-disable -q`` for a quick check). Everything runs on the real local
Ray cluster (``num_cpus=2``); every actor pair is ``AgentSide`` -> ``ToolSide`` from
``_cgraph_actors.py``, the round trips timed inside the agent's actor, where raygent's
``AgentActor`` sees them.

- ``cgraph: tool round trip <size>``: a 2 KB encoded tool call out, an encoded tool result of
  2 KB, 64 KiB or 1 MB back, one round trip after the other (``items`` = round trips, so the
  report gives the cost per round trip; ``extra_info`` holds p50/p99 per round trip in µs).
  ``raygent``: a ``run_turn`` streaming-generator call, what ``AgentActor`` does today; ``ray``
  ``compiled graph``: ``InputNode -> tool.answer``, ``experimental_compile(enable_asyncio=True)``,
  ``await execute_async()``; ``ray`` ``actor call``: ``await tool.answer.remote()``.
- ``cgraph: 2 KB messages agent to tool, one way``: 2,000 messages, raygent's
  :class:`raygent.transport.Batcher` against one compiled-graph execution per message (8 in
  flight) and one pipelined actor call per message.
- ``test_idle_cost_and_turn_share`` (not timed): CPU seconds per second burnt by each pair's
  processes (``psutil`` on their PIDs) over an idle interval, and the fraction of a real agent
  turn the compiled graph's saving would be, from a live ``raygent replay`` of a recorded
  SWE-agent run and the tool durations recorded in the SWE-agent trajectories.
- ``test_structure_*`` (not timed): what a compiled graph allows, checked against this Ray.

Compiled graphs are torn down at the end of each case (bounded by Ray's own teardown
timeouts) and their actors killed by handle; nothing here stops the cluster. If this Ray build
cannot run compiled graphs, every case skips with the error it raised.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import msgspec
import pytest

from _cgraph_actors import BATCHER, CALL, COMPILED, RUN_TURN, AgentSide, ToolSide, check_answer, make_call
from conftest import SHARED_DATA, case

pytestmark = pytest.mark.ray

BENCHES = str(Path(__file__).resolve().parent)
KIB = 1024
SIZES = [("2KB", 2_000), ("64KiB", 64 * KIB), ("1MB", 1_000_000)]
#: Round trips per timed round: enough for a p99 over the rounds, few enough at 1 MB.
TRIPS = {"2KB": 200, "64KiB": 100, "1MB": 20}
ROUNDS = 5
ONE_WAY_MESSAGES = 2_000
#: Idle interval (seconds) over which the pairs' CPU is read.
IDLE_S = 3.0
#: The recorded run replayed for raygent's own per-turn figures (as benches/test_bench_replay.py).
TRAJECTORY = (
    SHARED_DATA / "trajectories/swe-agent/trajectories/demonstrations"
    / "replay__marshmallow-code__marshmallow-1867__function_calling__install-1"
    / "marshmallow-code__marshmallow-1867.traj"
)
#: A model response's latency is not in the recordings (SWE-agent demonstrations report 0
#: tokens): the share is computed at both ends of the range an agent turn sees, a short answer
#: from a fast local model and a typical hosted-model response.
MODEL_RESPONSE_S = (0.05, 1.0)


def _actor(ray, cls):
    path = os.pathsep.join(p for p in (BENCHES, os.environ.get("PYTHONPATH", "")) if p)
    return ray.remote(num_cpus=0, runtime_env={"env_vars": {"PYTHONPATH": path}})(cls)


@pytest.fixture(scope="module")
def ray_mod():
    import ray

    started = not ray.is_initialized()
    if started:
        # address="local": a cluster of our own even when another one on this machine is the
        # "current" one that a bare ray.init() would join.
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def compiled_ok(ray_mod):
    """Skip with the exact error when this Ray build cannot compile and run a graph."""
    ray = ray_mod
    from ray.dag import InputNode

    tool = _actor(ray, ToolSide).remote(10)
    graph = None
    try:
        with InputNode() as inp:
            graph = tool.answer.bind(inp).experimental_compile()
        check_answer(ray.get(graph.execute(make_call("call_probe")), timeout=60), "call_probe", 10)
    except Exception as exc:  # noqa: BLE001 - any failure means no compiled graphs here
        pytest.skip(f"Ray {ray.__version__} cannot run compiled graphs here: {type(exc).__name__}: {exc}")
    finally:
        if graph is not None:
            graph.teardown()
        ray.kill(tool)


def _psutil():
    return pytest.importorskip("psutil", reason="psutil reads the actors' CPU time: pip install 'raygent[bench]'")


def _cpu_s(psutil, pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def _idle_cores(pids: list[int], idle_s: float = IDLE_S) -> float:
    """CPU seconds per second (cores) the processes burn while nobody calls them."""
    psutil = _psutil()
    before = _cpu_s(psutil, pids)
    time.sleep(idle_s)
    return (_cpu_s(psutil, pids) - before) / idle_s


class _Pair:
    """An AgentSide -> ToolSide pair, torn down and killed on exit."""

    def __init__(self, ray, how: str, output_bytes: int, method: str = "answer") -> None:
        self.ray = ray
        self.tool = _actor(ray, ToolSide).remote(output_bytes)
        self.agent = _actor(ray, AgentSide).remote(self.tool, how, method)
        self.pids = [ray.get(self.tool.pid.remote(), timeout=120), ray.get(self.agent.pid.remote(), timeout=120)]

    def __enter__(self) -> _Pair:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.ray.get(self.agent.close.remote(), timeout=120)
        finally:
            self.ray.kill(self.agent)
            self.ray.kill(self.tool)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --- round trips -------------------------------------------------------------------------------

WAYS = [("raygent", RUN_TURN), ("ray", COMPILED), ("ray", CALL)]


@pytest.mark.parametrize("label,size", SIZES, ids=[s[0] for s in SIZES])
@pytest.mark.parametrize("impl,how", WAYS, ids=["raygent-run_turn", "ray-compiled", "ray-call"])
def test_tool_round_trip(benchmark, ray_mod, compiled_ok, impl, how, label, size):
    ray = ray_mod
    n = TRIPS[label]
    case(benchmark, group=f"cgraph: tool round trip {label}", impl=impl, items=n, nbytes=n * (2_000 + size))
    benchmark.extra_info["how"] = how
    with _Pair(ray, how, size) as pair:
        ray.get(pair.agent.check.remote(size), timeout=120)
        rounds: list[list[float]] = []
        benchmark.pedantic(lambda: rounds.append(ray.get(pair.agent.trips.remote(n))), rounds=ROUNDS, iterations=1, warmup_rounds=1)
        # The first round is the warm-up, unless --benchmark-disable ran the function once.
        timed = rounds[1:] if len(rounds) > 1 else rounds
        trips = [t for r in timed for t in r]
        assert timed and len(trips) == len(timed) * n
        p50, p99 = _pct(trips, 50) * 1e6, _pct(trips, 99) * 1e6
        benchmark.extra_info["p50_us"] = round(p50, 1)
        benchmark.extra_info["p99_us"] = round(p99, 1)
        print(f"\n{label} {how}: p50 {p50:.0f} µs, p99 {p99:.0f} µs per round trip")


@pytest.mark.parametrize("impl,how", [("raygent", BATCHER), ("ray", COMPILED), ("ray", CALL)], ids=["raygent-batcher", "ray-compiled", "ray-call"])
def test_messages_one_way(benchmark, ray_mod, compiled_ok, impl, how):
    ray = ray_mod
    n = ONE_WAY_MESSAGES
    messages = [make_call(f"call_{i}") for i in range(n)]
    assert all(len(m) == 2_000 for m in messages)
    case(benchmark, group="cgraph: 2 KB messages agent to tool, one way", impl=impl, items=n, nbytes=n * 2_000)
    benchmark.extra_info["how"] = how
    with _Pair(ray, how, 0, method="take") as pair:
        sent = 0

        def one_round() -> None:
            nonlocal sent
            sent += n
            got = ray.get(pair.agent.send.remote(messages))
            assert got == sent, (got, sent)

        one_round()  # checked before timing: the receiver counted every message
        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)


# --- idle cost and the share of a real turn ------------------------------------------------------


def _recorded_tool_durations_s() -> list[float]:
    """``execution_time`` of every step of the SWE-agent trajectories that record it (seconds)."""
    out: list[float] = []
    for path in sorted((SHARED_DATA / "trajectories" / "swe-agent").rglob("*.traj")):
        steps = msgspec.json.decode(path.read_bytes()).get("trajectory", [])
        out.extend(float(s["execution_time"]) for s in steps if isinstance(s, dict) and "execution_time" in s)
    return out


def test_idle_cost_and_turn_share(ray_mod, compiled_ok, shared_data):
    ray = ray_mod
    if not TRAJECTORY.is_file():
        pytest.skip(f"real data not found at {TRAJECTORY} (../shared/data beside the project)")
    from raygent.replay_run import replay_trajectory

    p50_s: dict[str, float] = {}
    idle: dict[str, float] = {}
    for how in (COMPILED, RUN_TURN, CALL):
        with _Pair(ray, how, 2_000) as pair:
            ray.get(pair.agent.check.remote(2_000), timeout=120)
            trips = ray.get(pair.agent.trips.remote(300))
            p50_s[how] = statistics.median(trips[50:])  # past the warm-up
            idle[how] = _idle_cores(pair.pids)
            if how == COMPILED:
                ray.get(pair.agent.close.remote(), timeout=120)
                idle["compiled graph, torn down"] = _idle_cores(pair.pids)
    report = replay_trajectory(TRAJECTORY)
    assert report.history_matches, report.history_difference
    totals = report.totals()
    durations = _recorded_tool_durations_s()
    assert len(durations) >= 30 and all(d > 0 for d in durations), len(durations)

    saved_s = p50_s[RUN_TURN] - p50_s[COMPILED]
    turn_overhead_s = totals["turn_overhead_p50_ms"] / 1000
    lines = [
        f"idle CPU (cores, over {IDLE_S:.0f} s): " + ", ".join(f"{h} {c:.2f}" for h, c in idle.items()),
        "2 KB round trip p50 (µs): " + ", ".join(f"{h} {s * 1e6:.0f}" for h, s in p50_s.items()),
        f"saved per tool round trip (run_turn - compiled): {saved_s * 1e3:.2f} ms",
        f"raygent replay: turn overhead p50 {totals['turn_overhead_p50_ms']:.2f} ms, "
        f"tool round trip p50 {totals['tool_round_trip_p50_ms']:.2f} ms",
        f"recorded tool durations: {len(durations)} calls, p50 {statistics.median(durations) * 1e3:.0f} ms, "
        f"min {min(durations) * 1e3:.0f} ms, max {max(durations) * 1e3:.0f} ms",
    ]
    for model_s in MODEL_RESPONSE_S:
        # One SWE-agent step is one model response and one tool call.
        shares = [saved_s / (model_s + d + turn_overhead_s) for d in durations]
        for share in shares:
            assert share < 1.0
        best = saved_s / (model_s + turn_overhead_s)  # a tool that takes no time at all
        lines.append(
            f"model response {model_s * 1e3:.0f} ms: saving = {statistics.median(shares):.2%} of a turn "
            f"(p50 over recorded calls), {max(shares):.2%} at most; {best:.2%} with a 0 ms tool"
        )
    print("\n" + "\n".join(lines))


# --- structural constraints ---------------------------------------------------------------------


@pytest.fixture
def tool(ray_mod, compiled_ok):
    handle = _actor(ray_mod, ToolSide).remote(100)
    ray_mod.get(handle.pid.remote(), timeout=120)
    yield handle
    ray_mod.kill(handle)


def _compile(tool, method: str = "answer"):
    from ray.dag import InputNode

    with InputNode() as inp:
        return getattr(tool, method).bind(inp).experimental_compile()


def test_structure_graph_is_fixed_once_compiled(ray_mod, tool):
    ray = ray_mod
    graph = _compile(tool)
    try:
        # The graph takes exactly what its InputNode was bound to: one argument, one method.
        with pytest.raises(ValueError, match="1 positional args"):
            graph.execute(make_call("call_a"), make_call("call_b"))
        check_answer(ray.get(graph.execute(make_call("call_c")), timeout=60), "call_c", 100)
    finally:
        graph.teardown()


def test_structure_actor_belongs_to_one_graph(ray_mod, tool):
    ray = ray_mod
    from ray.exceptions import RayChannelTimeoutError

    first = _compile(tool)
    second = None
    try:
        check_answer(ray.get(first.execute(make_call("call_1")), timeout=60), "call_1", 100)
        # A second graph over the same actor compiles, but nothing it is given runs while the
        # first exists: the actor's execution loop belongs to the first graph.
        second = _compile(tool)
        with pytest.raises(RayChannelTimeoutError):
            ray.get(second.execute(make_call("call_2")), timeout=5)
        # Once the first is torn down, the second's loop starts and answers. (Torn down the
        # other way round, the second's teardown waits for a loop that never started: it hangs.)
        first.teardown()
        check_answer(ray.get(second.execute(make_call("call_3")), timeout=60), "call_3", 100)
    finally:
        first.teardown()
        if second is not None:
            second.teardown()


def test_structure_ordinary_calls_run_beside_the_graph(ray_mod, tool):
    ray = ray_mod
    graph = _compile(tool, "wait_for_go")
    try:
        ref = graph.execute(60.0)
        # The graph's task blocks in the actor until an ordinary call releases it: the ordinary
        # call runs at the same time, on another thread of the same actor. A raygent actor's
        # state would be shared by two threads, which its asyncio code does not expect.
        assert isinstance(ray.get(tool.release.remote(), timeout=60), int)
        assert ray.get(ref, timeout=90) == "released"
    finally:
        graph.teardown()


def test_structure_no_streaming_generators_no_async_methods(ray_mod, tool):
    ray = ray_mod
    from ray.exceptions import RayTaskError

    # ToolActor.run_turn streams its results: a generator method is refused at compile time.
    with pytest.raises(TypeError):
        _compile(tool, "numbers")
    # And its methods are coroutines: the graph calls them without awaiting and fails to
    # serialize the coroutine.
    graph = _compile(tool, "answer_async")
    try:
        with pytest.raises(RayTaskError, match="coroutine"):
            ray.get(graph.execute(make_call("call_async")), timeout=60)
    finally:
        graph.teardown()


def test_structure_teardown_frees_the_actor_and_death_ends_the_graph(ray_mod, tool):
    ray = ray_mod
    from ray.exceptions import RayActorError, RayChannelError, RayError

    graph = _compile(tool)
    check_answer(ray.get(graph.execute(make_call("call_1")), timeout=60), "call_1", 100)
    graph.teardown()
    with pytest.raises(RayChannelError):
        graph.execute(make_call("call_2"))
    # Torn down, the actor serves ordinary calls and can join a new graph.
    check_answer(ray.get(tool.answer.remote(make_call("call_3")), timeout=60), "call_3", 100)
    again = _compile(tool)
    try:
        check_answer(ray.get(again.execute(make_call("call_4")), timeout=60), "call_4", 100)
        # A graph does not survive its actor: no restart, the channel is closed.
        ray.kill(tool)
        # ray.kill returns before the process is gone, and calls can still reach it meanwhile:
        # wait (bounded) until an ordinary call fails.
        deadline = time.monotonic() + 60
        while True:
            try:
                ray.get(tool.pid.remote(), timeout=30)
            except RayActorError:
                break
            assert time.monotonic() < deadline, "the killed tool actor still answers after 60 s"
            time.sleep(0.1)
        with pytest.raises(RayError):
            ray.get(again.execute(make_call("call_5")), timeout=30)
    finally:
        again.teardown()
