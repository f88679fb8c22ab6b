"""Run a recorded trajectory through the whole runtime on Ray, and measure raygent's overhead.

``raygent replay PATH`` (and :func:`replay_trajectory`) feeds the recording's user prompts, in
order, to a real agent session: an ``AgentActor`` whose provider is the
:class:`~raygent.providers._trajectory.TrajectoryModel` of the recording (the model's turns
come from the file), whose tool calls go over Ray to a tool actor, and whose chunks stream back
to the caller in batches, exactly as in ``raygent run``. Two tool actors:

- :class:`RecordedToolActor` (default) answers each call with the recorded result for its call
  id: no side effects, and it answers at once, so a turn's wall time *is* the runtime's
  overhead (actor calls, encoding, context, state machine, batching, the stream to the caller);
- :class:`ExecutingToolActor` (``execute=True``) runs the calls for real with the built-in tools
  in a scratch copy of a workspace. Calls to tools raygent does not have are mapped by
  :func:`map_call` (a shell command to ``run_command``) or fail with ``not_found``. The tools'
  own durations (``ToolResult.duration_ms``) are subtracted from each turn's wall time.

Timing is taken where the caller sees it: a turn starts when the caller sends the prompt (first
turn) or receives the state change into ``GeneratingResponse``, and ends when the next one is
received (or the run's stream ends). A tool round trip runs from receiving a call's
``ToolCallEnd`` to receiving its result. Starting the actors is reported apart (``startup_ms``).

Deviations from the recording, reported rather than hidden: when a prompt's recorded turns end
with tool calls, the runtime asks the model once more and the model answers with an empty
closing turn (marked ``recorded=False``; it is in the overhead totals, since it is real runtime
work, and not in the turn count). Assistant turns recorded before any user message are sent
after an empty prompt. The context budget is set so the window is never trimmed (the model is
a function of the conversation it is shown).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from raygent.actors import AgentSpec, PredictorActor, ToolActor
from raygent.messages import (
    AssistantMessage,
    Message,
    StateChange,
    SystemMessage,
    ToolCall,
    ToolCallEnd,
    ToolMessage,
    ToolOutputDelta,
    ToolResult,
    ToolResultChunk,
    UserMessage,
    decode,
    encode,
)
from raygent.providers._spec import ProviderSpec
from raygent.providers._trajectory import ReplayPrompt, replay_plan
from raygent.replay import Trajectory, load_trajectory
from raygent.runtime import _SHARED_ACTORS, Agent, _agent_shard, _get, _remote, init
from raygent.session import DEFAULT_SYSTEM_PROMPT
from raygent.state import AgentState
from raygent.tools import pass_env

__all__ = [
    "RecordedToolActor",
    "ExecutingToolActor",
    "TurnTiming",
    "ReplayReport",
    "ReplayRunner",
    "map_call",
    "replay_trajectory",
    "history_diff",
    "percentile",
]

# The window is never trimmed in a replay: the model is a function of the conversation shown.
_UNBOUNDED_BUDGET_TOKENS = 1 << 40

# SWE-agent's own commands (file viewer, editor, search, submit, CTF helpers): not shell
# commands, so --execute does not send them to run_command; they fail with not_found.
SWE_AGENT_COMMANDS = frozenset(
    """
    open goto scroll_up scroll_down create edit insert append search_file search_dir find_file
    submit str_replace_editor filemap view_image exit_forfeit skip forfeit review_on_submit
    connect_start connect_sendline connect_exec connect_stop decompile disassemble
    debug_start debug_add_breakpoint debug_continue debug_step debug_exec debug_stop
    """.split()
)
# Tool names that are a shell by another name, with the command in the "command" argument.
SHELL_TOOLS = frozenset(
    {"bash", "shell", "sh", "execute_bash", "execute_command", "run_shell_command", "terminal",
     "exec", "run", "bash_code_execution", "local_shell", "command"}
)


def map_call(call: ToolCall, builtin: frozenset[str] | set[str], *, timeout_s: float) -> ToolCall:
    """The built-in call that executes a recorded ``call`` for real, where there is an obvious one.

    - a built-in tool's name: unchanged;
    - a shell tool (:data:`SHELL_TOOLS`) with a string ``command``: ``run_command``;
    - a SWE-agent shell command recorded as ``{"command": "<name> ..."}`` (the name is the
      command's first word and not one of :data:`SWE_AGENT_COMMANDS`): ``run_command``;
    - anything else: unchanged, so the pipeline fails it with ``not_found``.

    ``run_command`` calls get ``timeout_s`` (seconds) unless the recording gave one.
    """
    if call.name in builtin:
        return call
    command = call.arguments.get("command")
    if not isinstance(command, str) or not command.strip():
        return call
    shell = call.name in SHELL_TOOLS
    if not shell and call.name not in SWE_AGENT_COMMANDS:
        try:
            first = shlex.split(command, comments=False)[0]
        except (ValueError, IndexError):
            first = command.split()[0]
        shell = first == call.name
    if not shell:
        return call
    return ToolCall(call.id, "run_command", {"command": command, "timeout_s": timeout_s})


class RecordedToolActor:
    """A tool actor that answers each call with the recorded result for its call id.

    The same streaming ``run_turn(calls, turn_id)`` and ``cancel(turn_id)`` as
    :class:`~raygent.actors.ToolActor`, so the agent's path to it is the one real tool calls
    take. No side effects; each result has
    ``duration_ms=0`` (the recorded tool took no time here). A call with no recorded result
    fails with ``error_kind="not_found"``.

    Parameters
    ----------
    results : bytes
        Encoded ``list[ToolMessage]``: the recording's tool results.
    """

    def __init__(self, results: bytes) -> None:
        self.results = {m.call_id: m for m in decode(results, list[ToolMessage])}

    def schemas(self) -> list[dict[str, Any]]:
        """A schema per recorded tool name (any object argument: the recording is not checked)."""
        names = dict.fromkeys(m.name for m in self.results.values())
        return [
            {"name": n, "description": "A tool of the recording.", "parameters": {"type": "object"}}
            for n in names
        ]

    async def run_turn(self, calls: bytes, turn_id: str | None = None) -> AsyncIterator[bytes]:
        for call in decode(calls, list[ToolCall]):
            recorded = self.results.get(call.id)
            if recorded is None:
                result = ToolResult(
                    call_id=call.id, name=call.name, content=f"no recorded result for call {call.id}",
                    is_error=True, error_kind="not_found", attempts=0,
                )
            else:
                result = ToolResult(
                    call_id=call.id, name=call.name, content=recorded.content,
                    is_error=recorded.is_error, error_kind="recorded" if recorded.is_error else None,
                    duration_ms=0.0, attempts=0,
                )
            yield encode(ToolResultChunk(result))

    def cancel(self, turn_id: str) -> int:
        """Nothing to cancel: recorded answers are given at once."""
        return 0


class ExecutingToolActor(ToolActor):
    """A :class:`~raygent.actors.ToolActor` that first maps recorded calls to built-ins (:func:`map_call`).

    Results keep the recorded call's name, so the history names the tools the recording named.
    """

    def __init__(self, workspace: str, *, default_timeout_s: float = 30.0) -> None:
        super().__init__(workspace, default_timeout_s=default_timeout_s)
        self.default_timeout_s = default_timeout_s

    async def run_turn(
        self, calls: bytes, turn_id: str | None = None, env: dict[str, str] | None = None
    ) -> AsyncIterator[bytes]:
        recorded = decode(calls, list[ToolCall])
        names = {c.id: c.name for c in recorded}
        builtin = frozenset(self.builtin_names)
        mapped = [map_call(c, builtin, timeout_s=self.default_timeout_s) for c in recorded]
        with pass_env(env or {}):
            async for item in self.pipeline.stream_turn(mapped, turn_id=turn_id):
                renamed = msgspec.structs.replace(item, name=names.get(item.call_id, item.name))
                yield encode(renamed if isinstance(renamed, ToolOutputDelta) else ToolResultChunk(renamed))


class TurnTiming(msgspec.Struct, kw_only=True):
    """One model turn of the replay as the caller saw it (milliseconds).

    ``prompt`` and ``turn`` count from 1 (``turn`` within the prompt); ``recorded`` is False for
    a closing turn the recording lacks (see module docs). ``overhead_ms`` is ``wall_ms`` minus
    ``tools_ms`` (the tools' own reported durations; 0 for recorded answers).
    """

    prompt: int
    turn: int
    recorded: bool
    tool_calls: int = 0
    tool_errors: int = 0
    wall_ms: float = 0.0
    tools_ms: float = 0.0
    overhead_ms: float = 0.0
    round_trips_ms: list[float] = []


class ReplayReport(msgspec.Struct, kw_only=True):
    """The outcome of :func:`replay_trajectory`; totals are computed from ``turns``."""

    path: str
    format: str
    mode: str  # "recorded" or "execute"
    workspace: str | None
    recorded_turns: int
    recorded_tool_calls: int
    startup_ms: float
    wall_ms: float
    turns: list[TurnTiming]
    history_matches: bool
    history_difference: str | None = None

    def totals(self) -> dict[str, Any]:
        """Turns, calls, errors, overhead sums and percentiles (ms) as plain data."""
        recorded = [t for t in self.turns if t.recorded]
        per_turn = [t.overhead_ms for t in self.turns]
        trips = [ms for t in self.turns for ms in t.round_trips_ms]
        calls = sum(t.tool_calls for t in self.turns)
        overhead = sum(per_turn)
        return {
            "turns": len(recorded),
            "closing_turns": len(self.turns) - len(recorded),
            "tool_calls": calls,
            "tool_errors": sum(t.tool_errors for t in self.turns),
            "tools_ms": sum(t.tools_ms for t in self.turns),
            "overhead_ms": overhead,
            "turn_overhead_p50_ms": percentile(per_turn, 50),
            "turn_overhead_p99_ms": percentile(per_turn, 99),
            "tool_round_trip_p50_ms": percentile(trips, 50),
            "tool_round_trip_p99_ms": percentile(trips, 99),
            "overhead_per_tool_call_ms": overhead / calls if calls else 0.0,
            "startup_ms": self.startup_ms,
            "wall_ms": self.wall_ms,
        }

    def to_builtins(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["totals"] = self.totals()
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def history_diff(recorded: Sequence[Message], replayed: Sequence[Message], *, contents: bool = True) -> str | None:
    """The first difference between a recording and a replay's history, or None when they match.

    System messages and empty user messages are ignored, and so are empty closing assistant
    turns of the replay (see module docs); the results of one turn are compared in call order. Tool calls are compared by id, name and arguments; tool results by call id
    and name, and by content and error flag when ``contents`` (False after ``--execute``,
    where the results are new).
    """

    def keep(messages: Sequence[Message], closing: bool) -> list[Message]:
        out: list[Message] = []
        for m in messages:
            if isinstance(m, SystemMessage) or (isinstance(m, UserMessage) and not m.content):
                continue
            if closing and isinstance(m, AssistantMessage) and not m.content and not m.tool_calls:
                continue
            out.append(m)
        # Results of one turn in call order (the session appends them so; recordings vary).
        i = 0
        while i < len(out):
            j = i
            while j < len(out) and isinstance(out[j], ToolMessage):
                j += 1
            turn = out[i - 1] if i else None
            if j > i + 1 and isinstance(turn, AssistantMessage):
                order = {c.id: n for n, c in enumerate(turn.tool_calls)}
                out[i:j] = sorted(out[i:j], key=lambda t: order.get(getattr(t, "call_id", ""), len(order)))
            i = j + 1
        return out

    a, b = keep(recorded, False), keep(replayed, True)
    for i, (x, y) in enumerate(zip(a, b)):
        if isinstance(x, ToolMessage) and isinstance(y, ToolMessage) and not contents:
            x = msgspec.structs.replace(x, content="", is_error=False)
            y = msgspec.structs.replace(y, content="", is_error=False)
        if x != y:
            return f"message {i}: recorded {_brief(x)} != replayed {_brief(y)}"
    if len(a) != len(b):
        return f"recorded {len(a)} messages (system and closing turns aside), replayed {len(b)}"
    return None


def _brief(m: Message) -> str:
    text = repr(m)
    return text if len(text) <= 300 else text[:300] + "..."


class _ReplayAgent(Agent):
    """An :class:`~raygent.runtime.Agent` whose provider and tool actor are the replay's.

    ``stream``, ``history``, ``status`` and ``close`` are Agent's own, so the run takes the
    same path as any agent's; only construction differs (the tool actor is this replay's
    own, not the workspace's shared one).
    """

    def __init__(
        self, *, provider: ProviderSpec, tool_actor: Any, schemas: list[dict[str, Any]],
        system_prompt: str, max_turns: int, workspace: str,
    ) -> None:
        self.workspace = Path(workspace)
        self.model = provider.display_name
        self.session_id = uuid.uuid4().hex
        self._tools = tool_actor
        self._predictor = _remote(PredictorActor).options(
            name="raygent-predictor", get_if_exists=True
        ).remote()
        import ray

        _SHARED_ACTORS.setdefault((ray.get_runtime_context().get_job_id(), "raygent-predictor"), self._predictor)
        spec = AgentSpec(
            session_id=self.session_id, provider=provider, system_prompt=system_prompt,
            budget_tokens=_UNBOUNDED_BUDGET_TOKENS, max_turns=max_turns,
        )
        # On the job's agent shards like any session, with this replay's own tool actor.
        self._actor = _agent_shard(self.session_id)
        self._open_args = (encode(spec), tool_actor, self._predictor, schemas)
        self._open()


def replay_trajectory(
    path: str | os.PathLike[str],
    *,
    execute: bool = False,
    workspace: str | os.PathLike[str] | None = None,
    tool_timeout_s: float = 30.0,
    keep_scratch: bool = False,
    history: list[Message] | None = None,
) -> ReplayReport:
    """Replay one recorded trajectory through the runtime on Ray (see module docs).

    Parameters
    ----------
    path : str or os.PathLike
        A trajectory file (:func:`raygent.replay.load_trajectory`).
    execute : bool, default False
        Run the tool calls for real in a scratch copy of ``workspace`` instead of answering
        them from the recording.
    workspace : str or os.PathLike, optional
        With ``execute``: the directory copied to the scratch directory (default: none, the
        scratch directory starts empty). It is never written.
    tool_timeout_s : float, default 30.0
        With ``execute``: timeout of each tool call (seconds).
    keep_scratch : bool, default False
        With ``execute``: leave the scratch directory in place (its path is the report's
        ``workspace``); by default it is removed.
    history : list, optional
        When given, receives the session's history after the replay.

    Returns
    -------
    ReplayReport

    Raises
    ------
    raygent.errors.TrajectoryError
        The file is not a trajectory in a known format.
    raygent.errors.AgentError
        The run failed (as for :meth:`raygent.Agent.stream`).
    """
    started = time.perf_counter()
    runner = ReplayRunner(path, execute=execute, workspace=workspace, tool_timeout_s=tool_timeout_s)
    try:
        agent = runner.start_session()
        try:
            startup_ms = (time.perf_counter() - started) * 1000.0
            run_started = time.perf_counter()
            turns = runner.play(agent)
            wall_ms = (time.perf_counter() - run_started) * 1000.0
            replayed = agent.history()
        finally:
            agent.close()
    finally:
        runner.close(keep_scratch=keep_scratch)
    if history is not None:
        history[:] = replayed
    trajectory = runner.trajectory
    difference = history_diff(trajectory.messages, replayed, contents=not execute)
    return ReplayReport(
        path=os.fspath(path), format=trajectory.format, mode="execute" if execute else "recorded",
        workspace=runner.root if execute and keep_scratch else (None if execute else runner.root),
        recorded_turns=sum(len(p.turns) for p in runner.plan),
        recorded_tool_calls=len(trajectory.steps), startup_ms=startup_ms, wall_ms=wall_ms, turns=turns,
        history_matches=difference is None, history_difference=difference,
    )


class ReplayRunner:
    """The actors of a replay: one tool actor for its life, a new agent session per play.

    :func:`replay_trajectory` is one play with reporting; benchmarks play many sessions on one
    runner (:meth:`start_session` untimed, :meth:`play` timed). Parameters as for
    :func:`replay_trajectory`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        execute: bool = False,
        workspace: str | os.PathLike[str] | None = None,
        tool_timeout_s: float = 30.0,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.trajectory: Trajectory = load_trajectory(path)
        self.plan = replay_plan(self.trajectory.messages)
        messages = self.trajectory.messages
        self.system_prompt = next((m.content for m in messages if isinstance(m, SystemMessage)), DEFAULT_SYSTEM_PROMPT)
        init()
        self.scratch: str | None = None
        if execute:
            self.scratch = tempfile.mkdtemp(prefix="raygent-replay-")
            self.root = os.path.join(self.scratch, "workspace")
            if workspace is not None:
                shutil.copytree(workspace, self.root, symlinks=True)
            else:
                os.mkdir(self.root)
            self.tool_actor = _remote(ExecutingToolActor).remote(self.root, default_timeout_s=tool_timeout_s)
        else:
            self.root = os.fspath(workspace) if workspace is not None else os.getcwd()
            results = [m for m in messages if isinstance(m, ToolMessage)]
            self.tool_actor = _remote(RecordedToolActor).remote(encode(results))
        self.schemas: list[dict[str, Any]] = _get(self.tool_actor.schemas.remote())

    def start_session(self) -> Agent:
        """A new agent session on this replay's tool actor, started (its provider loaded the file)."""
        agent = _ReplayAgent(
            provider=ProviderSpec(kind="trajectory", model=self.path),
            tool_actor=self.tool_actor, schemas=self.schemas, system_prompt=self.system_prompt,
            max_turns=max((len(p.turns) for p in self.plan), default=0) + 2, workspace=self.root,
        )
        agent.status()
        return agent

    def play(self, agent: Agent) -> list[TurnTiming]:
        """Send every recorded prompt to a fresh ``agent``, in order; the turns as timed."""
        turns: list[TurnTiming] = []
        for number, prompt in enumerate(self.plan, 1):
            turns += _timed_run(agent, number, prompt)
        return turns

    def close(self, *, keep_scratch: bool = False) -> None:
        """Stop the tool actor; remove the scratch directory unless ``keep_scratch``."""
        import ray

        ray.kill(self.tool_actor)
        if self.scratch is not None and not keep_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _timed_run(agent: Agent, number: int, prompt: ReplayPrompt) -> list[TurnTiming]:
    """Send one prompt and time its turns from the chunks as they arrive (see module docs)."""
    turns: list[TurnTiming] = []
    sent: dict[str, float] = {}
    start = time.perf_counter()
    current: TurnTiming | None = None

    def close(now: float) -> None:
        if current is not None:
            current.wall_ms = (now - turn_start) * 1000.0
            current.overhead_ms = max(current.wall_ms - current.tools_ms, 0.0)
            turns.append(current)

    turn_start = start
    for chunk in agent.stream(prompt.prompt):
        now = time.perf_counter()
        if isinstance(chunk, StateChange) and chunk.target == AgentState.GENERATING_RESPONSE.value:
            close(now)
            index = len(turns)
            turn_start = start if current is None else now
            current = TurnTiming(prompt=number, turn=index + 1, recorded=index < len(prompt.turns))
        elif isinstance(chunk, ToolCallEnd):
            sent[chunk.call.id] = now
        elif isinstance(chunk, ToolResultChunk) and current is not None:
            r = chunk.result
            current.tool_calls += 1
            current.tool_errors += r.is_error
            current.tools_ms += r.duration_ms
            if r.call_id in sent:
                current.round_trips_ms.append(max((now - sent.pop(r.call_id)) * 1000.0 - r.duration_ms, 0.0))
    close(time.perf_counter())
    return turns
