"""Load: many agent sessions open at once, each replaying a recorded coding-agent run on Ray.

Run the check (10 sessions, the code path only)::

    .venv/bin/python -m pytest benches/test_bench_load.py --benchmark-disable -q

and the full load (figures printed with ``-s``, and kept in each case's ``extra_info``)::

    RAYGENT_LOAD_SESSIONS=1000 .venv/bin/python -m pytest benches/test_bench_load.py --benchmark-only -s
    RAYGENT_LOAD_SESSIONS=1000 raygent bench load

Settings (environment): ``RAYGENT_LOAD_SESSIONS`` (default 10), ``RAYGENT_LOAD_CONCURRENCY``
(sessions running a prompt at once, default 32), ``RAYGENT_LOAD_TIMEOUT_S`` (limit of the
whole run, default 900 s).

The workload: the SWE-agent demonstrations and aider transcripts of the shared data (their
tool output is real), cycled over the sessions. Every session is opened before the run (all
are open at once, idle); then the driver replays them from one asyncio loop with
``Agent.astream``, at most ``concurrency`` at a time: model turns from the recording (the
trajectory provider in the agent's actor), every tool call over Ray to one tool actor shared
by all sessions that answers the recorded result at once (:class:`_load.LoadToolActor`), chunks
streamed back to the driver in batches. A tool round trip is timed from receiving the call's
``ToolCallEnd`` to receiving its result, so it is the runtime's overhead under this load.

Reported: sessions, tool round trips and turns, throughput (round trips/s, turns/s), p50/p99
of the round trips (ms; the issue's target is p99 at most 5 ms), the peak RSS summed over the
driver and every Ray worker hosting a raygent actor (sampled every 50 ms from before the
sessions open until the run ends), and memory per idle session: the RSS growth of the
processes hosting agent sessions over opening all of them, divided by their number (also
given with the driver, whose handles grow too, and after the replay, when each session holds
its history).

Checked before anything is reported: every session's tool results and recorded turns match
its recording, and its history equals the recording (so it ends with the recorded final
answer). A failed check fails the case and keeps its timing out of the JSON.

The peer (``impl="ray"``): the same sessions and round trips with one Ray object per chunk
(``buffer_size=1``), what the stream costs without raygent's batching.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

import _load
from _load import LoadToolActor, PeakRSS, Recording, SessionRun, drive, load_recordings, raygent_processes, rss_bytes
from conftest import case

pytestmark = pytest.mark.ray

SESSIONS = int(os.environ.get("RAYGENT_LOAD_SESSIONS", "10"))
CONCURRENCY = int(os.environ.get("RAYGENT_LOAD_CONCURRENCY", "32"))
TIMEOUT_S = float(os.environ.get("RAYGENT_LOAD_TIMEOUT_S", "900"))
# Sessions played (and checked) before anything is measured, so the actors have run the
# whole path once.
WARMUP_SESSIONS = 2
MIB = 1 << 20


@pytest.fixture(scope="module")
def ray_here():
    import ray

    started = not ray.is_initialized()
    if started:
        # "local": a cluster of our own even when another process on the machine left its
        # address in /tmp/ray (ray.init() would join that one).
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, logging_level="warning")
        else:
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@pytest.fixture(scope="module")
def recordings(shared_data: Path) -> list[Recording]:
    found = load_recordings(shared_data)
    if not found:
        pytest.skip(f"no SWE-agent or aider trajectories under {shared_data / 'trajectories'}")
    return found


@pytest.fixture(scope="module")
def figures():
    """Each case's figures, printed side by side once the module's cases ran."""
    got: dict[str, dict[str, Any]] = {}
    yield got
    if len(got) > 1 and "raygent" in got:
        ours = got["raygent"]
        print("\nload: peer / raygent in the same run (above 1: raygent is faster)")
        for impl, f in got.items():
            if impl != "raygent":
                print(
                    f"  {impl}: wall {f['wall_s'] / ours['wall_s']:.2f}x   round trip p50 "
                    f"{f['round_trip_p50_ms'] / ours['round_trip_p50_ms']:.2f}x   "
                    f"p99 {f['round_trip_p99_ms'] / ours['round_trip_p99_ms']:.2f}x"
                )


def _actor_classes() -> tuple[str, ...]:
    from raygent.actors import AgentActor, PredictorActor, ToolActor

    return (AgentActor.__name__, ToolActor.__name__, PredictorActor.__name__, LoadToolActor.__name__)


def _open(recording: Recording, tool: Any, schemas: list[dict[str, Any]]) -> Any:
    from raygent.providers._spec import ProviderSpec
    from raygent.replay_run import _ReplayAgent

    return _ReplayAgent(
        provider=ProviderSpec(kind="trajectory", model=str(recording.path)), tool_actor=tool,
        schemas=schemas, system_prompt=recording.system_prompt, max_turns=recording.max_turns,
        workspace=os.getcwd(),
    )


def _hosting(sizes: dict[int, int], roles: dict[int, str]) -> int:
    from raygent.actors import AgentActor

    return sum(rss for pid, rss in sizes.items() if roles.get(pid) == AgentActor.__name__)


def _check_counts(runs: list[SessionRun], recordings: list[Recording]) -> None:
    for number, run in enumerate(runs):
        rec = recordings[run.recording]
        got = (run.tool_results, len(run.round_trips_ms), run.turns)
        want = (rec.tool_calls, rec.tool_calls, rec.turns)
        assert got == want, (
            f"session {number} replaying {rec.path.name}: (tool results, timed round trips, "
            f"recorded turns) {got} != {want}"
        )


def _check_histories(agents: list[Any], assigned: list[int], recordings: list[Recording]) -> None:
    from raygent.replay_run import history_diff

    for number, (agent, index) in enumerate(zip(agents, assigned, strict=True)):
        difference = history_diff(recordings[index].trajectory.messages, agent.history())
        assert difference is None, f"session {number} replaying {recordings[index].path.name}: {difference}"


@pytest.mark.parametrize("impl", ["raygent", "ray"])
def test_load_sessions_replaying_recorded_runs(benchmark, ray_here, recordings, figures, impl):
    import ray

    from raygent.replay_run import percentile
    from raygent.streaming import DEFAULT_BUFFER_SIZE

    buffer_size = DEFAULT_BUFFER_SIZE if impl == "raygent" else 1
    n = SESSIONS
    concurrency = max(1, min(CONCURRENCY, n))
    assigned = [i % len(recordings) for i in range(n)]
    warm = [i % len(recordings) for i in range(WARMUP_SESSIONS)]
    # By value: each agent actor's worker rebuilds the tool actor's handle from its class (to
    # check call signatures), and the workers cannot import benches/; a handle whose class
    # they cannot load rejects positional arguments.
    ray.cloudpickle.register_pickle_by_value(_load)
    tool = ray.remote(num_cpus=0)(LoadToolActor).remote([_encode_results(r) for r in recordings])
    classes = _actor_classes()
    agents: list[Any] = []
    warmups: list[Any] = []
    try:
        schemas = ray.get(tool.schemas.remote())
        with PeakRSS(lambda: raygent_processes(classes)) as peak:
            # Warm-up, checked: the whole path runs once before anything is measured.
            warmups = [_open(recordings[i], tool, schemas) for i in warm]
            ray.get(tool.assign.remote({a.session_id: i for a, i in zip(warmups, warm)}))
            runs, _ = asyncio.run(drive(
                warmups, warm, recordings, concurrency=len(warm), buffer_size=buffer_size, timeout_s=TIMEOUT_S,
            ))
            _check_counts(runs, recordings)
            _check_histories(warmups, warm, recordings)

            roles = raygent_processes(classes)
            assert ray.get(tool.pid.remote()) in roles, "the process scan misses the tool actor"
            before = rss_bytes(roles)
            agents = [_open(recordings[i], tool, schemas) for i in assigned]
            for a in agents:
                a.status()  # the session is open (its actor built it) once this answers
            ray.get(tool.assign.remote({a.session_id: i for a, i in zip(agents, assigned)}))
            roles = raygent_processes(classes)
            idle = rss_bytes(roles)

            result: dict[str, Any] = {}

            def run() -> None:
                runs, wall_s = asyncio.run(drive(
                    agents, assigned, recordings, concurrency=concurrency, buffer_size=buffer_size,
                    timeout_s=TIMEOUT_S,
                ))
                _check_counts(runs, recordings)
                result.update(runs=runs, wall_s=wall_s)

            case(benchmark, group=f"load: {n} sessions replaying recorded runs, {concurrency} at once",
                 impl=impl, items=sum(recordings[i].tool_calls for i in assigned))
            benchmark.pedantic(run, rounds=1, iterations=1)
            roles = raygent_processes(classes)
            replayed = rss_bytes(roles)
        try:
            _check_histories(agents, assigned, recordings)
        except AssertionError:
            benchmark.has_error = True  # pytest-benchmark then leaves the case out of its JSON
            raise
    finally:
        for a in warmups + agents:
            a.close()
        ray.kill(tool)

    runs, wall_s = result["runs"], result["wall_s"]
    trips = [ms for r in runs for ms in r.round_trips_ms]
    turns = sum(r.turns for r in runs)
    f = {
        "sessions": n,
        "concurrency": concurrency,
        "buffer_size": buffer_size,
        "recordings": len({recordings[i].path for i in assigned}),
        "tool_round_trips": len(trips),
        "turns": turns,
        "closing_turns": sum(r.closing_turns for r in runs),
        "wall_s": wall_s,
        "round_trips_per_s": len(trips) / wall_s,
        "turns_per_s": turns / wall_s,
        "round_trip_p50_ms": percentile(trips, 50),
        "round_trip_p90_ms": percentile(trips, 90),
        "round_trip_p99_ms": percentile(trips, 99),
        "round_trip_max_ms": max(trips),
        "peak_rss_mib": peak.peak_bytes / MIB,
        "peak_rss_processes": peak.peak_processes,
        "rss_samples": peak.samples,
        "idle_session_kib": (_hosting(idle, roles) - _hosting(before, roles)) / n / 1024,
        "idle_session_with_driver_kib": (sum(idle.values()) - sum(before.values())) / n / 1024,
        "replayed_session_kib": (_hosting(replayed, roles) - _hosting(before, roles)) / n / 1024,
    }
    benchmark.extra_info.update(f)
    # For raygent bench's overhead-under-load plot (its rounds are whole runs, not calls).
    benchmark.extra_info["load"] = concurrency
    benchmark.extra_info["latency_ms"] = {q: f[f"round_trip_{q}_ms"] for q in ("p50", "p90", "p99")}
    if impl != "raygent":
        benchmark.extra_info["how"] = "one Ray object per chunk (buffer_size=1)"
    figures[impl] = f
    _print(impl, f)


def _encode_results(recording: Recording) -> bytes:
    from raygent.messages import encode

    return encode(recording.results)


def _print(impl: str, f: dict[str, Any]) -> None:
    target = "met" if f["round_trip_p99_ms"] <= 5.0 else "not met"
    print(
        f"\nload [{impl}, {f['buffer_size']} chunks per Ray object]: {f['sessions']} sessions "
        f"({f['recordings']} recorded runs), {f['concurrency']} at once\n"
        f"  tool round trips       {f['tool_round_trips']:>10,}   turns {f['turns']:,} "
        f"(+{f['closing_turns']} closing)   wall {f['wall_s']:.2f} s\n"
        f"  throughput             {f['round_trips_per_s']:>10.1f} round trips/s   {f['turns_per_s']:.1f} turns/s\n"
        f"  round trip overhead    p50 {f['round_trip_p50_ms']:.2f} ms   p99 {f['round_trip_p99_ms']:.2f} ms "
        f"(target p99 <= 5 ms: {target})   max {f['round_trip_max_ms']:.2f} ms\n"
        f"  peak RSS               {f['peak_rss_mib']:>10.1f} MiB over {f['peak_rss_processes']} processes "
        f"(driver + raygent actors; {f['rss_samples']} samples)\n"
        f"  per idle session       {f['idle_session_kib']:>10.1f} KiB in the agent actors "
        f"({f['idle_session_with_driver_kib']:.1f} KiB with the driver); "
        f"{f['replayed_session_kib']:.1f} KiB after its replay"
    )
