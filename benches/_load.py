"""The pieces of ``test_bench_load.py``: recorded runs, the shared tool actor, the session
driver and the memory sampler."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from raygent.messages import (
    SystemMessage,
    StateChange,
    ToolCall,
    ToolCallEnd,
    ToolMessage,
    ToolResult,
    ToolResultChunk,
    decode,
    encode,
)
from raygent.providers._trajectory import ReplayPrompt, replay_plan
from raygent.replay import Trajectory, load_trajectory
from raygent.replay_run import RecordedToolActor
from raygent.session import DEFAULT_SYSTEM_PROMPT
from raygent.state import AgentState

# Coding-agent runs of the shared data (MANIFEST §1): SWE-agent demonstrations and aider
# transcripts. Their observations and file contents are real tool output.
LOAD_FORMATS = ("swe-agent.traj", "aider.chat-history.md")

_GENERATING = AgentState.GENERATING_RESPONSE.value


@dataclass(frozen=True)
class Recording:
    """One recorded run as the load test replays it.

    ``tool_calls`` and ``turns`` are what one session replaying it must show: tool results
    received and recorded model turns (closing turns the runtime adds are counted apart).
    """

    path: Path
    trajectory: Trajectory
    plan: list[ReplayPrompt]
    system_prompt: str
    tool_calls: int
    turns: int
    max_turns: int

    @classmethod
    def load(cls, path: Path) -> Recording:
        trajectory = load_trajectory(path)
        plan = replay_plan(trajectory.messages)
        system = next(
            (m.content for m in trajectory.messages if isinstance(m, SystemMessage)), DEFAULT_SYSTEM_PROMPT
        )
        return cls(
            path=path, trajectory=trajectory, plan=plan, system_prompt=system,
            tool_calls=len(trajectory.tool_calls), turns=sum(len(p.turns) for p in plan),
            max_turns=max((len(p.turns) for p in plan), default=0) + 2,
        )

    @property
    def results(self) -> list[ToolMessage]:
        return [m for m in self.trajectory.messages if isinstance(m, ToolMessage)]


def load_recordings(shared_data: Path) -> list[Recording]:
    """The coding-agent runs listed in ``trajectories/INDEX.jsonl`` that make tool calls, by path."""
    index = shared_data / "trajectories" / "INDEX.jsonl"
    paths = []
    for line in index.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("format") in LOAD_FORMATS:
            paths.append(shared_data / entry["file"])
    recordings = [Recording.load(p) for p in sorted(paths)]
    return [r for r in recordings if r.tool_calls]


class LoadToolActor:
    """One tool actor answering the recorded results of many runs, each session from its own.

    Recordings reuse call ids (the importer numbers synthesized ids ``rg-1``, ``rg-2`` ... in
    every run), so a call is answered from the recording its session replays: the driver
    :meth:`assign` s each session a recording before its first prompt, and the agent names the
    session in every ``turn_id`` (``"<session id>:<turn>"``). Each recording is answered by a
    :class:`~raygent.replay_run.RecordedToolActor` (used here as a plain object): same results,
    ``duration_ms=0``, at once.

    Parameters
    ----------
    results : list of bytes
        Per recording, its encoded ``list[ToolMessage]``.
    """

    def __init__(self, results: list[bytes]) -> None:
        self.players = [RecordedToolActor(r) for r in results]
        self.sessions: dict[str, int] = {}

    def assign(self, sessions: dict[str, int]) -> int:
        """Session id -> index of its recording; returns the number of sessions assigned."""
        for session_id, index in sessions.items():
            if not 0 <= index < len(self.players):
                raise IndexError(f"session {session_id}: no recording {index} (there are {len(self.players)})")
        self.sessions.update(sessions)
        return len(self.sessions)

    def schemas(self) -> list[dict[str, Any]]:
        """A schema per tool name of any recording (first seen wins)."""
        seen: dict[str, dict[str, Any]] = {}
        for player in self.players:
            for schema in player.schemas():
                seen.setdefault(schema["name"], schema)
        return list(seen.values())

    async def run_turn(self, calls: bytes, turn_id: str | None = None) -> AsyncIterator[bytes]:
        session_id = (turn_id or "").rpartition(":")[0]
        index = self.sessions.get(session_id)
        if index is None:
            for call in decode(calls, list[ToolCall]):
                yield encode(ToolResultChunk(ToolResult(
                    call_id=call.id, name=call.name, is_error=True, error_kind="not_found", attempts=0,
                    content=f"session {session_id!r} was assigned no recording",
                )))
            return
        async for item in self.players[index].run_turn(calls, turn_id):
            yield item

    def cancel(self, turn_id: str) -> int:
        """Nothing to cancel: recorded answers are given at once."""
        return 0

    def end_session(self, session_id: str) -> None:
        """The session closed: forget its recording."""
        self.sessions.pop(session_id, None)

    def pid(self) -> int:
        return os.getpid()


@dataclass
class SessionRun:
    """What one session's replay showed the driver."""

    recording: int
    round_trips_ms: list[float] = field(default_factory=list)
    tool_results: int = 0
    turns: int = 0
    closing_turns: int = 0


async def play(agent: Any, recording: int, plan: Sequence[ReplayPrompt], *, buffer_size: int) -> SessionRun:
    """Send every recorded prompt to ``agent`` in order, timing each tool round trip.

    A round trip runs from receiving a call's ``ToolCallEnd`` to receiving its result, as in
    :mod:`raygent.replay_run`; the recorded tools take no time, so it is the runtime's own
    overhead. ``buffer_size`` is :meth:`raygent.Agent.stream`'s (chunks per Ray object).
    """
    run = SessionRun(recording)
    for prompt in plan:
        sent: dict[str, float] = {}
        responses = 0
        async for chunk in agent.astream(prompt.prompt, buffer_size=buffer_size):
            now = time.perf_counter()
            if isinstance(chunk, StateChange) and chunk.target == _GENERATING:
                responses += 1
            elif isinstance(chunk, ToolCallEnd):
                sent[chunk.call.id] = now
            elif isinstance(chunk, ToolResultChunk):
                run.tool_results += 1
                started = sent.pop(chunk.result.call_id, None)
                if started is not None:
                    run.round_trips_ms.append((now - started) * 1000.0)
        run.turns += min(responses, len(prompt.turns))
        run.closing_turns += max(responses - len(prompt.turns), 0)
    return run


class LoadTimeout(AssertionError):
    """The load run did not finish within its time limit."""


async def drive(
    agents: Sequence[Any],
    assigned: Sequence[int],
    recordings: Sequence[Recording],
    *,
    concurrency: int,
    buffer_size: int,
    timeout_s: float,
) -> tuple[list[SessionRun], float]:
    """Replay every session, at most ``concurrency`` at once; the runs and the wall time (s).

    Raises
    ------
    LoadTimeout
        The whole run took longer than ``timeout_s`` seconds (the message says how many
        sessions had finished); the sessions still running are cancelled.
    """
    gate = asyncio.Semaphore(concurrency)
    finished = 0

    async def one(agent: Any, index: int) -> SessionRun:
        nonlocal finished
        async with gate:
            run = await play(agent, index, recordings[index].plan, buffer_size=buffer_size)
        finished += 1
        return run

    started = time.perf_counter()
    try:
        runs = await asyncio.wait_for(
            asyncio.gather(*(one(a, i) for a, i in zip(agents, assigned, strict=True))), timeout_s
        )
    except TimeoutError:
        raise LoadTimeout(
            f"the load run exceeded {timeout_s:.0f} s: {finished} of {len(agents)} sessions finished"
        ) from None
    return list(runs), time.perf_counter() - started


# --- memory of raygent's processes -------------------------------------------------------------


def raygent_processes(actor_classes: Sequence[str]) -> dict[int, str]:
    """PID -> role of the driver and of every Ray worker hosting one of ``actor_classes``.

    Ray titles an actor's worker ``ray::<Class>`` (``ray::<Class>.<method>`` while a method
    runs). Only this process's descendants are searched: the local cluster the driver started
    (its raylet and workers), not other clusters on the machine.
    """
    me = psutil.Process()
    found = {me.pid: "driver"}
    for proc in me.children(recursive=True):
        try:
            title = proc.cmdline()[0] if proc.cmdline() else ""
        except psutil.Error:
            continue
        name = title.removeprefix("ray::").split(".", 1)[0] if title.startswith("ray::") else ""
        if name in actor_classes:
            found[proc.pid] = name
    return found


def rss_bytes(pids: dict[int, str]) -> dict[int, int]:
    """PID -> resident set size (bytes) of those still running."""
    out = {}
    for pid in pids:
        try:
            out[pid] = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return out


class PeakRSS:
    """Samples the summed RSS of raygent's processes in a thread until stopped; keeps the peak.

    The processes are looked up again every ``rescan_s`` seconds (actors started later count
    from then on).
    """

    def __init__(
        self, find: Callable[[], dict[int, str]], *, interval_s: float = 0.05, rescan_s: float = 1.0
    ) -> None:
        self.find = find
        self.interval_s = interval_s
        self.rescan_s = rescan_s
        self.peak_bytes = 0
        self.peak_processes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raygent-load-rss", daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        pids = self.find()
        scanned = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - scanned >= self.rescan_s:
                pids = self.find()
                scanned = time.monotonic()
            sizes = rss_bytes(pids)
            total = sum(sizes.values())
            self.samples += 1
            if total > self.peak_bytes:
                self.peak_bytes = total
                self.peak_processes = len(sizes)
            self._stop.wait(self.interval_s)
