"""Thin Ray actor shells over the pure cores.

Each class here is plain Python; :mod:`raygent.runtime` wraps it with ``ray.remote`` when it
starts actors. Methods only decode arguments, call the core, and encode what goes back:
everything crossing Ray is msgpack ``bytes`` (see :mod:`raygent.messages`), never a pickled
Struct.

- :class:`ToolActor` owns a workspace's tools and their :class:`~raygent.pipeline.ToolPipeline`.
- :class:`AgentActor` hosts many sessions (a shard), each a :class:`HostedSession` around a
  :class:`~raygent.session.Session` (context, state machine, turn loop) with its mailbox, and
  streams their chunks to the callers in batches.
- :class:`PredictorActor` owns the :class:`~raygent.predictor.Predictor`; it hears tool events
  fire-and-forget and nothing waits on it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import msgspec
import ray

from raygent._tool_record import ToolRecord
from raygent.errors import SessionNotOpen
from raygent.messages import (
    ApprovalRequest,
    AssistantMessage,
    Chunk,
    Done,
    Message,
    StateChange,
    SystemMessage,
    ToolCall,
    ToolCallEnd,
    ToolOutputDelta,
    ToolResult,
    ToolResultChunk,
    ToolStreamItem,
    UserMessage,
    decode,
    encode,
)
from raygent.mailbox import Mailbox
from raygent.observability import MetricsCollector, QueueDepthGauge, default_sinks
from raygent.pipeline import PRIORITIES, ToolPipeline
from raygent.policy import Policy
from raygent.predictor import Hints, Predictor, ToolEvent
from raygent.providers._spec import ProviderSpec, make_provider
from raygent.session import DEFAULT_SYSTEM_PROMPT, Session
from raygent.store import PostgresStore, SessionStore, SQLiteStore
from raygent.streaming import DEFAULT_BUFFER_SIZE, DEFAULT_FLUSH_INTERVAL_MS
from raygent.tools import MCPRegistry, MCPServer, Tool, builtin_tools, pass_env

__all__ = ["AgentSpec", "StoreSpec", "AgentActor", "HostedSession", "ToolActor", "PredictorActor"]


class StoreSpec(msgspec.Struct, frozen=True):
    """Where an :class:`AgentActor` checkpoints its session, sent instead of a store object
    (a connection does not cross processes): each actor opens its own connection.

    Attributes
    ----------
    kind : {"sqlite", "postgres"}
    target : str
        The SQLite file's path, or the PostgreSQL conninfo (``"postgresql://..."``).
    """

    kind: Literal["sqlite", "postgres"]
    target: str

    @classmethod
    def of(cls, store: SQLiteStore | PostgresStore | str | Path) -> StoreSpec:
        """The spec of a store object, or of an SQLite file path.

        Raises
        ------
        ValueError
            An in-memory SQLite store: other processes cannot reach it.
        TypeError
            Neither a path nor one of raygent's stores.
        """
        if isinstance(store, PostgresStore):
            return cls("postgres", store.conninfo)
        path = store.path if isinstance(store, SQLiteStore) else store
        if not isinstance(path, (str, Path)):
            raise TypeError(f"store must be an SQLiteStore, a PostgresStore or a path, got {type(store).__name__}")
        if str(path) == ":memory:":
            raise ValueError("an in-memory SQLite store cannot be shared with the agent's actor; give a file")
        return cls("sqlite", str(Path(path).absolute()))

    def open(self) -> SessionStore:
        """A new connection to the store (raises :class:`~raygent.errors.StoreError` when it fails)."""
        return SQLiteStore(self.target) if self.kind == "sqlite" else PostgresStore(self.target)


class AgentSpec(msgspec.Struct, frozen=True):
    """Everything an :class:`AgentActor` needs to build its session (sent as msgpack)."""

    session_id: str
    provider: ProviderSpec
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    budget_tokens: int = 32_000
    max_turns: int = 24
    # Chunks are coalesced so one Ray object carries many: a batch is sent when it holds
    # flush_chunks chunks, when flush_interval_ms has passed since the last one, or at a
    # boundary the caller wants to see at once (a finished tool call, a result, the end).
    # Defaults and their measurement: raygent.streaming.DEFAULT_BUFFER_SIZE.
    flush_chunks: int = DEFAULT_BUFFER_SIZE
    flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS
    # False: whole responses from the provider (see Session's ``stream``).
    stream: bool = True
    # Decides each tool call (allow / prompt / deny); None runs every call.
    policy: Policy | None = None
    approval_timeout_s: float | None = None
    # Summarize older turns past this fraction of budget_tokens; None never (Session).
    compact_threshold: float | None = 0.9
    # Speculative execution: as each model response starts, predicted read-only calls whose
    # confidence P(tool) x P(arguments | tool) is at least this (and that the policy allows
    # without asking) run at low priority on the ToolActor, so their results wait in its
    # cache; None turns speculation off (adaptive timeouts still apply). predictor-eval
    # prints what a threshold would have run and hit on recorded runs.
    speculation_threshold: float | None = 0.5
    # Adaptive timeouts sent with the same hints: max(floor, margin x p99) seconds per action
    # once it was seen timeout_min_samples times; they only ever lower a tool's timeout.
    timeout_floor_s: float = 5.0
    timeout_margin: float = 3.0
    timeout_min_samples: int = 20
    # Variables (name -> value, read on the driver) run_command gets despite the scrubbing.
    pass_env: dict[str, str] = {}
    # Every message of the history is written here before it is acted on, and a restarted
    # actor reloads the session from it; None keeps the history in memory only.
    store: StoreSpec | None = None
    # Tools safe to run again when a crash cut their call short (ToolActor.read_only_tools).
    read_only_tools: frozenset[str] = frozenset()


# Sent at once: an ApprovalRequest because the run waits for the answer; a ToolOutputDelta
# because it is already coalesced by the pipeline (at most one per call per 50 ms) and a quiet
# tool may send nothing after it for minutes.
_FLUSH_NOW = (ToolCallEnd, ToolResultChunk, ToolOutputDelta, Done, StateChange, ApprovalRequest)


class ToolActor:
    """The tools of one workspace and the pipeline that runs them.

    Parameters
    ----------
    workspace : str
        Root directory; every tool path is confined to it.
    max_concurrency : int
        Tool calls running at once (all sessions using this actor).
    default_timeout_s : float
        Timeout of a call whose tool sets none (seconds).
    record : ToolRecord, optional
        Where the tools and MCP servers added later are recorded so that this actor, restarted
        by Ray after its process died, has them again (user tools at once, MCP servers
        reconnected before the next call runs). Default: the GCS record of this Ray actor
        (:meth:`ToolRecord.of_this_actor`); see :mod:`raygent._tool_record` for the design.
    """

    def __init__(
        self,
        workspace: str,
        *,
        max_concurrency: int = 8,
        default_timeout_s: float = 120.0,
        record: ToolRecord | None = None,
    ) -> None:
        self.workspace = workspace
        self.tools = builtin_tools(workspace)
        self.builtin_names = tuple(self.tools)
        # The queue's depth is this actor's figure, not a session's: set here, by priority.
        self.queue_gauge = QueueDepthGauge(tags={"workspace": workspace}) if ray.is_initialized() else None
        self.pipeline = ToolPipeline(
            self.tools,
            max_concurrency=max_concurrency,
            default_timeout_s=default_timeout_s,
            workspace=workspace,
            on_queue_change=None if self.queue_gauge is None else self.queue_gauge.set,
        )
        if self.queue_gauge is not None:
            self.queue_gauge.set(dict.fromkeys(PRIORITIES, 0))  # every series starts at 0
        self.mcp = MCPRegistry(default_cwd=workspace)
        # After Ray restarted this actor, __init__ runs again: what earlier calls registered
        # comes back from the record (see raygent._tool_record for why it lives in the GCS).
        self.record = record if record is not None else ToolRecord.of_this_actor()
        for t in self.record.tools():
            self._register(t)
        # MCP connections need the event loop: reopened by the first call that runs tools.
        self._reconnect = self.record.mcp_servers()
        self._reconnect_lock = asyncio.Lock()

    def _register(self, t: Any) -> None:
        self.tools[t.name] = t
        self.pipeline.tools[t.name] = t

    async def _reconnect_mcp(self) -> None:
        if not self._reconnect:
            return
        # Calls that arrive while the servers reconnect (a turn and the predictor's hints)
        # wait for them; _reconnect empties only once they are all tried, once each.
        async with self._reconnect_lock:
            # One server at a time: one that is gone must not keep the others' tools away.
            for server in self._reconnect:
                try:
                    for t in await self.mcp.add([server], self.tools, self.builtin_names):
                        self._register(t)
                except Exception as exc:  # MCPConnectError, MCPConfigError: logged, not fatal
                    _log.error(
                        "MCP server %r registered before the tool actor restarted could not be "
                        "reconnected; its tools are unavailable until it is added again: %s",
                        server.label, exc,
                    )
            self._reconnect = []

    def schemas(self) -> list[dict[str, Any]]:
        """Schemas of the built-in tools (user tools are offered by the session that added them)."""
        return [self.tools[name].schema for name in self.builtin_names]

    def add_tools(self, tools: list[Tool]) -> list[dict[str, Any]]:
        """Register user tools with this workspace's pipeline; returns their schemas.

        Raises
        ------
        ValueError
            A name is taken by a built-in, or by another tool with a different schema (the
            registry is shared by every session of the workspace, so a silent replacement
            would change another session's tool). Nothing is registered then.
        """
        for t in tools:
            taken = self.tools.get(t.name)
            if taken is None:
                continue
            if t.name in self.builtin_names:
                raise ValueError(f"tool name {t.name!r} is taken by a built-in tool")
            if taken.schema != t.schema:
                raise ValueError(
                    f"tool {t.name!r} is already registered on this workspace with another schema"
                )
        # Recorded first: a tool that cannot be kept across a restart is refused, not lost later.
        self.record.add_tools(tools)
        for t in tools:
            self._register(t)
        return [t.schema for t in tools]

    async def add_mcp_servers(self, servers: bytes) -> list[dict[str, Any]]:
        """Connect MCP servers (encoded ``list[MCPServer]``) and register their tools; returns
        their schemas.

        Each server is connected once per workspace, in this actor's event loop, and stays
        connected until :meth:`close_mcp` or the actor's end; the tools of a server already
        connected are returned again without a new connection.

        Raises
        ------
        MCPConnectError
            A server could not be started, reached or initialized (the message names it).
        MCPConfigError
            A tool name is taken by a built-in or another tool, or given by two servers.
            Nothing is registered when either is raised.
        """
        await self._reconnect_mcp()
        wanted = decode(servers, list[MCPServer])
        tools = await self.mcp.add(wanted, self.tools, self.builtin_names)
        self.record.add_mcp_servers(wanted)
        for t in tools:
            self._register(t)
        return [t.schema for t in tools]

    async def close_mcp(self) -> None:
        """Close every MCP connection (stdio servers exit) and drop their tools from the
        registry; a restart of this actor does not reconnect them."""
        self.record.drop_mcp_servers()
        async with self._reconnect_lock:  # after a reconnection in progress, not during it
            self._reconnect = []
            for conn in self.mcp.connections:
                for t in conn.tools:
                    if self.tools.get(t.name) is t:
                        del self.tools[t.name]
                        del self.pipeline.tools[t.name]
            await self.mcp.aclose()

    async def close(self) -> None:
        """The actor's end (:func:`raygent.shutdown`): :meth:`close_mcp`, and forget the record
        of registrations kept for a restart."""
        await self.close_mcp()
        self.record.forget()

    def read_only_tools(self) -> list[str]:
        """Names of the registered tools that only read (safe to run again after a crash)."""
        return sorted(name for name, t in self.tools.items() if t.read_only)

    def pid(self) -> int:
        """This actor's process id (recovery tests kill it)."""
        return os.getpid()

    def metrics(self) -> dict[str, Any]:
        """The pipeline's counters: calls, executions, retries, breakers, cache, speculation
        (see :meth:`raygent.pipeline.ToolPipeline.metrics`)."""
        return self.pipeline.metrics()

    async def apply_hints(self, hints: bytes, session_id: str) -> int:
        """Take the predictor's encoded :class:`~raygent.predictor.Hints` for a session: set
        the adaptive timeouts and run the speculative calls (read-only tools only, ``low``
        priority; results go to the cache). Returns the number of calls executed."""
        await self._reconnect_mcp()
        h = decode(hints, Hints)
        if h.timeouts_s:
            self.pipeline.set_adaptive_timeouts(h.timeouts_s)
        calls = [
            ToolCall(f"speculative-{session_id}-{i}", c.tool, c.arguments)
            for i, c in enumerate(h.speculative)
        ]
        return len(await self.pipeline.prefetch(calls, session_id=session_id))

    def end_session(self, session_id: str) -> None:
        """The session is over: its unused speculative results count as wasted."""
        self.pipeline.end_speculation(session_id)

    async def run_turn(
        self, calls: bytes, turn_id: str | None = None, env: dict[str, str] | None = None
    ) -> AsyncIterator[bytes]:
        """Streaming generator of encoded :data:`~raygent.messages.ToolStreamItem`: the calls'
        output deltas while they run, and a ``ToolResultChunk`` per call as each finishes.

        ``turn_id`` (unique) names the turn for :meth:`cancel`; ``env`` (name -> value) holds
        the variables this session passes to ``run_command``.
        """
        await self._reconnect_mcp()
        with pass_env(env or {}):
            async for item in self.pipeline.stream_turn(decode(calls, list[ToolCall]), turn_id=turn_id):
                yield encode(item if isinstance(item, ToolOutputDelta) else ToolResultChunk(item))

    def cancel(self, turn_id: str) -> int:
        """Cancel a turn's calls (see :meth:`raygent.pipeline.ToolPipeline.cancel`); returns how
        many were running or queued. Their results arrive from :meth:`run_turn` as errors of
        kind ``"cancelled"`` once their subprocesses are gone."""
        return self.pipeline.cancel(turn_id)


class PredictorActor:
    """Holds the tool-use predictor; fed fire-and-forget with encoded ``list[ToolEvent]``."""

    def __init__(self) -> None:
        self.predictor = Predictor()

    def observe(self, events: bytes) -> None:
        for event in decode(events, list[ToolEvent]):
            self.predictor.observe(event)

    def next_tools(self, after: str | None, k: int = 3) -> list[tuple[str, float]]:
        return self.predictor.next_tools(after, k=k)

    def hints(self, session_id: str, options: dict[str, Any]) -> bytes:
        """Encoded :class:`~raygent.predictor.Hints` for the session's next step; ``options``
        are :meth:`~raygent.predictor.Predictor.hints`' keyword arguments."""
        return encode(self.predictor.hints(session_id, **options))

    def snapshot(self) -> dict[str, Any]:
        return self.predictor.snapshot()

    def end_session(self, session_id: str) -> None:
        """The session is over: its sequence becomes one of the predictor's finished sessions."""
        self.predictor.end_session(session_id)

    def pid(self) -> int:
        """This actor's process id (recovery tests kill it)."""
        return os.getpid()


_log = logging.getLogger(__name__)


def _has(actor: Any, method: str) -> bool:
    # A Ray actor handle raises AttributeError for a method its class does not define.
    return actor is not None and hasattr(actor, method)


class HostedSession:
    """One session an :class:`AgentActor` hosts: its :class:`~raygent.session.Session`, metrics,
    hint tasks, turn ids, checkpoints and mailbox.

    Tools run on ``tool_actor``, events go to ``predictor``. As each model response starts, the
    session asks the predictor for hints in the background (nothing waits on them) and hands
    them to the tool actor: speculative read-only calls run at low priority into its cache, and
    adaptive timeouts (see :class:`AgentSpec`). Speculative calls never enter the history.

    Parameters
    ----------
    spec : AgentSpec
    tool_actor, predictor : Ray actor handles
        A ``ToolActor`` (or replay's recorded-results actor) and a ``PredictorActor``.
    tool_schemas : list of dict
        Schemas of the tools offered to the model.
    store : SessionStore, optional
        The shard's connection to ``spec.store`` (shared with its other sessions). A session
        found there is restored from it; a new one has its system prompt stored.
    sinks : list of MetricsSink
        Where the session's metrics go.

    Raises
    ------
    StoreError
        The store cannot be read or written.
    """

    def __init__(
        self,
        spec: AgentSpec,
        tool_actor: Any,
        predictor: Any,
        tool_schemas: list[dict],
        store: SessionStore | None,
        sinks: list[Any],
    ) -> None:
        self.spec = spec
        self.tool_actor = tool_actor
        self.predictor = predictor
        self._hint_tasks: set[asyncio.Task[None]] = set()
        self.hint_failures = 0
        self.session = Session(
            provider=make_provider(spec.provider),
            run_tools=self._run_tools,
            tool_schemas=tool_schemas,
            system_prompt=spec.system_prompt,
            budget_tokens=spec.budget_tokens,
            max_turns=spec.max_turns,
            stream=spec.stream,
            policy=spec.policy,
            approval_timeout_s=spec.approval_timeout_s,
            compact_threshold=spec.compact_threshold,
            # Hints need a predictor that gives them and a tool actor that takes them (a
            # replay's recorded-results actor does not).
            on_generate=self._start_hints if _has(predictor, "hints") and _has(tool_actor, "apply_hints") else None,
            cancel_tools=self._cancel_tools,
            on_append=self._checkpoint,
        )
        self.store = store
        # Messages found in the store when the session was opened (0: a new session). After a
        # crash Ray runs the actor's __init__ again with no session in memory: the next call
        # opens it again, and this is where it picks up from the store.
        self.restored = 0
        if store is not None:
            stored = store.load(spec.session_id)
            if stored:
                self.session.restore(stored)
                self.restored = len(stored)
            else:
                store.append(spec.session_id, self.session.context.history[:1], start_seq=0)
        # Restored in the middle of a run (the process died during it): its prompt counts as not
        # yet admitted, so the caller's resume of it runs before any later prompt.
        history = self.session.context.history
        last = history[-1]
        in_flight = not (isinstance(last, SystemMessage) or (isinstance(last, AssistantMessage) and not last.tool_calls))
        self.mailbox = Mailbox(admitted=self.prompts - in_flight)
        self.metrics = MetricsCollector(clock=time.monotonic, sinks=sinks)
        self._turn_numbers = itertools.count(1)
        self._turn_id: str | None = None

    @property
    def prompts(self) -> int:
        """User prompts in the history."""
        return sum(isinstance(m, UserMessage) for m in self.session.context.history)

    def _checkpoint(self, seq: int, message: Message) -> None:
        # Synchronous on purpose: the session acts on the message only once it is stored.
        # Idempotent by seq, so a message written just before a crash is not doubled.
        if self.store is not None:
            self.store.append(self.spec.session_id, [message], start_seq=seq)

    def _start_hints(self) -> None:
        task = asyncio.get_running_loop().create_task(self._hints())
        self._hint_tasks.add(task)
        task.add_done_callback(self._hint_tasks.discard)

    async def _hints(self) -> None:
        spec = self.spec
        options = {
            "threshold": math.inf if spec.speculation_threshold is None else spec.speculation_threshold,
            "timeout_floor_s": spec.timeout_floor_s,
            "timeout_margin": spec.timeout_margin,
            "timeout_min_samples": spec.timeout_min_samples,
        }
        try:
            hints = decode(await self.predictor.hints.remote(spec.session_id, options), Hints)
            allowed = [c for c in hints.speculative if self.session.may_speculate(c.tool, c.arguments)]
            hints = msgspec.structs.replace(hints, speculative=allowed)
            self.tool_actor.apply_hints.remote(encode(hints), spec.session_id)
        except Exception as e:  # a hint is optional: a dead predictor must not stop the turn
            self.hint_failures += 1
            _log.warning("session %s: no hints from the predictor: %s", spec.session_id, e)

    async def _run_tools(self, calls: list[ToolCall]) -> AsyncIterator[ToolResult | ToolOutputDelta]:
        turn_id = self._turn_id = f"{self.spec.session_id}:{next(self._turn_numbers)}"
        # env only when there is one: replay's RecordedToolActor takes no env.
        env = {"env": self.spec.pass_env} if self.spec.pass_env else {}
        by_id = {c.id: c for c in calls}
        answered: set[str] = set()
        events = []
        todo = calls
        try:
            # A second round only after the tool actor died and Ray restarted it: the calls it
            # left unanswered run again if read-only; the others may have run, so they are
            # answered "interrupted" rather than repeated.
            for attempt in range(2):
                refs = self.tool_actor.run_turn.options(num_returns="streaming").remote(encode(todo), turn_id, **env)
                try:
                    async for ref in refs:
                        item = decode(await ref, ToolStreamItem)
                        if isinstance(item, ToolOutputDelta):
                            yield item
                            continue
                        result = item.result
                        answered.add(result.call_id)
                        call = by_id.get(result.call_id)
                        if call is not None:
                            events.append(ToolEvent.of(self.spec.session_id, call, result))
                        yield result
                    return
                except ray.exceptions.RayActorError:
                    if attempt:
                        raise
                    lost = [c for c in todo if c.id not in answered]
                    todo = [c for c in lost if c.name in self.spec.read_only_tools]
                    for c in lost:
                        if c.name not in self.spec.read_only_tools:
                            answered.add(c.id)
                            yield _interrupted(c, "the tool actor's process stopped while this call ran")
                    if not todo:
                        return
        finally:
            self._turn_id = None
            if events:
                self.predictor.observe.remote(encode(events))

    async def _cancel_tools(self) -> None:
        if self._turn_id is not None:
            await self.tool_actor.cancel.remote(self._turn_id)

    async def run(
        self, prompt: str, prompt_number: int | None, flush_chunks: int | None, flush_interval_ms: float | None
    ) -> AsyncIterator[bytes]:
        """Encoded ``list[Chunk]`` batches of one prompt, once the mailbox gives it its turn."""
        async with self.mailbox.turn(prompt_number):
            async for batch in self._batches(self.session.run(prompt), flush_chunks, flush_interval_ms):
                yield batch

    async def resume(
        self, prompt: str, prompt_number: int, flush_chunks: int | None, flush_interval_ms: float | None
    ) -> AsyncIterator[bytes]:
        """What is left of the run of ``prompt``, the session's ``prompt_number``-th (see
        :meth:`AgentActor.resume`)."""
        async with self.mailbox.turn(prompt_number):
            # Decided once the turn came: an earlier prompt may have run meanwhile.
            chunks = (
                self.session.run(prompt)
                if self.prompts < prompt_number
                else self.session.resume(lambda call: call.name in self.spec.read_only_tools)
            )
            async for batch in self._batches(chunks, flush_chunks, flush_interval_ms):
                yield batch

    async def _batches(
        self, chunks: AsyncIterator[Chunk], flush_chunks: int | None, flush_interval_ms: float | None
    ) -> AsyncIterator[bytes]:
        batch: list[Chunk] = []
        last_flush = time.monotonic()
        max_chunks = flush_chunks or self.spec.flush_chunks
        interval_s = (self.spec.flush_interval_ms if flush_interval_ms is None else flush_interval_ms) / 1000.0
        try:
            async for chunk in chunks:
                now = time.monotonic()
                self.metrics.observe(chunk, now)
                batch.append(chunk)
                if (
                    isinstance(chunk, _FLUSH_NOW)
                    or len(batch) >= max_chunks
                    or now - last_flush >= interval_s
                ):
                    yield encode(batch)
                    batch = []
                    last_flush = now
        except Exception:
            if batch:
                yield encode(batch)
            raise
        if batch:
            yield encode(batch)

    def status(self) -> dict[str, Any]:
        s = self.session
        return {
            "session_id": self.spec.session_id,
            "model": self.spec.provider.display_name,
            "state": s.state.value,
            "error_kind": s.machine.error_kind,
            "stats": msgspec.to_builtins(s.stats),
            "transitions": [(t.source.value, t.target.value, t.trigger) for t in s.machine.history],
            "compactions": s.context.compactions,
            "compaction_failures": s.context.compaction_failures,
            "hint_failures": self.hint_failures,
            "restored_messages": self.restored,
            "queued_runs": self.mailbox.waiting,
        }

    async def close(self) -> None:
        """Stop the run in progress, end the session (runs still queued fail with
        ``kind="shutdown"``) and its speculation."""
        await self.session.cancel()
        self.session.shutdown()
        for task in list(self._hint_tasks):
            task.cancel()
        if _has(self.tool_actor, "end_session"):
            # Fire-and-forget: the tool actor counts this session's unused speculation as waste.
            self.tool_actor.end_session.remote(self.spec.session_id)


class AgentActor:
    """Hosts many sessions (a shard of the job's sessions): a thin shell over a dict of
    :class:`HostedSession`, each with its mailbox.

    A session is opened with :meth:`open`; every other method names it first. A session's runs
    (:meth:`run`, :meth:`resume`) go through its mailbox, so they never interleave and run in
    the order the caller numbered them; the control methods (approve, deny, cancel, status,
    history ...) act at once, also while a run waits or streams. Sessions of one shard run
    concurrently on its event loop. The shard opens one connection per store (:class:`StoreSpec`)
    and shares it among its sessions.

    A restarted shard (Ray runs ``__init__`` again after its process died) holds no session: a
    call naming one raises :class:`~raygent.errors.SessionNotOpen`, and the caller opens it
    again, which restores it from its store.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, HostedSession] = {}
        self._stores: dict[StoreSpec, SessionStore] = {}
        # The sessions of a workspace offer the same tools: one copy of their schemas per shard
        # instead of one per session (about 13 KiB each for the built-ins, measured with
        # tracemalloc: over half of an idle session's heap). Bounded: the oldest set is dropped.
        self._schemas: dict[bytes, list[dict]] = {}

    def _session(self, session_id: str) -> HostedSession:
        hosted = self.sessions.get(session_id)
        if hosted is None:
            raise SessionNotOpen(session_id, pid=os.getpid())
        return hosted

    def _store(self, spec: StoreSpec | None) -> SessionStore | None:
        if spec is None:
            return None
        store = self._stores.get(spec)
        if store is None:
            store = self._stores[spec] = spec.open()
        return store

    def _shared_schemas(self, tool_schemas: list[dict]) -> list[dict]:
        key = msgspec.json.encode(tool_schemas)
        shared = self._schemas.get(key)
        if shared is None:
            if len(self._schemas) >= _SCHEMA_SETS:
                del self._schemas[next(iter(self._schemas))]
            shared = self._schemas[key] = tool_schemas
        return shared

    async def open(self, spec: bytes, tool_actor: Any, predictor: Any, tool_schemas: list[dict]) -> dict[str, Any]:
        """Host the session of the encoded :class:`AgentSpec` (idempotent).

        A session already open here is left as it is; one found in the spec's store is
        restored from it (history, prompt count); otherwise it starts with its system prompt.

        Returns
        -------
        dict
            ``{"session_id", "prompts": user prompts in its history, "messages": its length,
            "restored": messages read from the store now (0 when it was open or new)}``.

        Raises
        ------
        StoreError
            The store cannot be opened, read or written.
        ValueError
            The stored history is not one a session accepts.
        """
        agent_spec = decode(spec, AgentSpec)
        opened = agent_spec.session_id not in self.sessions
        hosted = self.host(agent_spec, tool_actor, predictor, tool_schemas)
        return {
            "session_id": agent_spec.session_id,
            "prompts": hosted.prompts,
            "messages": len(hosted.session.context.history),
            "restored": hosted.restored if opened else 0,
        }

    def host(self, spec: AgentSpec, tool_actor: Any, predictor: Any, tool_schemas: list[dict]) -> HostedSession:
        """:meth:`open` without the encoding: the session of ``spec``, built if not held yet."""
        hosted = self.sessions.get(spec.session_id)
        if hosted is None:
            # Synchronous from the lookup to the insert: two opens of one session cannot both build it.
            hosted = HostedSession(
                spec, tool_actor, predictor, self._shared_schemas(tool_schemas), self._store(spec.store),
                _sinks(spec),
            )
            self.sessions[spec.session_id] = hosted
        return hosted

    async def run(
        self,
        session_id: str,
        prompt: str,
        prompt_number: int | None = None,
        flush_chunks: int | None = None,
        flush_interval_ms: float | None = None,
    ) -> AsyncIterator[bytes]:
        """Streaming generator of encoded ``list[Chunk]`` batches for one prompt of a session.

        ``prompt_number`` (the prompt's number in the session, from 1) orders it in the
        session's mailbox; None queues it after those waiting. ``flush_chunks`` (chunks) and
        ``flush_interval_ms`` (milliseconds) override the spec's batch bounds for this run. A
        failure is raised after the chunks that came before it have been sent.

        Raises
        ------
        SessionNotOpen
            The session is not open on this actor (never opened, closed, or the actor restarted).
        """
        hosted = self._session(session_id)
        async for batch in hosted.run(prompt, prompt_number, flush_chunks, flush_interval_ms):
            yield batch

    async def resume(
        self,
        session_id: str,
        prompt: str,
        prompt_number: int,
        flush_chunks: int | None = None,
        flush_interval_ms: float | None = None,
        reopen: tuple[bytes, Any, Any, list[dict]] | None = None,
    ) -> AsyncIterator[bytes]:
        """:meth:`run` again after this actor was restarted in the middle of it: the batches
        of what is left of the run of ``prompt``, the session's ``prompt_number``-th (from 1).

        ``reopen`` (:meth:`open`'s arguments) opens the session first when this actor does not
        hold it, which restores it from its store. When the stored history holds fewer
        prompts, the crash came before the prompt was checkpointed: it runs from the start.
        Otherwise the interrupted run goes on from the history
        (:meth:`raygent.session.Session.resume`): a tool call cut short is run again only if
        its tool is read-only, else answered ``error_kind="interrupted"``.

        Raises
        ------
        SessionNotOpen
            The session is not open here and ``reopen`` is None.
        """
        if reopen is not None:
            await self.open(*reopen)
        hosted = self._session(session_id)
        async for batch in hosted.resume(prompt, prompt_number, flush_chunks, flush_interval_ms):
            yield batch

    def pid(self) -> int:
        """This actor's process id (recovery tests kill it)."""
        return os.getpid()

    def session_ids(self) -> list[str]:
        """The sessions this actor holds now."""
        return list(self.sessions)

    # async: this actor's methods share one event loop, so an answer arrives while a run is
    # suspended waiting for it.
    async def approve(self, session_id: str, call_id: str) -> None:
        """Let a call waiting for approval run (:meth:`Session.approve`)."""
        self._session(session_id).session.approve(call_id)

    async def deny(self, session_id: str, call_id: str, reason: str = "") -> None:
        """Refuse a call waiting for approval (:meth:`Session.deny`)."""
        self._session(session_id).session.deny(call_id, reason)

    async def pending_approvals(self, session_id: str) -> list[str]:
        return self._session(session_id).session.pending_approvals

    async def cancel(self, session_id: str) -> bool:
        """Cancel the session's run in progress (:meth:`raygent.session.Session.cancel`): its
        running tools are cancelled on the tool actor and the run ends; False when nothing was
        running. Runs waiting in its mailbox are not affected."""
        return await self._session(session_id).session.cancel()

    async def history(self, session_id: str) -> bytes:
        return encode(self._session(session_id).session.context.history)

    async def metrics_snapshot(self, session_id: str) -> bytes:
        """The session's figures, an encoded :class:`~raygent.observability.SessionMetrics`."""
        return encode(self._session(session_id).metrics.snapshot())

    async def status(self, session_id: str) -> dict[str, Any]:
        return self._session(session_id).status()

    async def close(self, session_id: str) -> bool:
        """Stop the session's run, end it and free it (the actor and the shared store stay);
        False when it was not open here."""
        hosted = self.sessions.pop(session_id, None)
        if hosted is None:
            return False
        await hosted.close()
        return True


# Distinct tool schema sets an agent shard keeps one copy of (workspaces x user tool sets).
_SCHEMA_SETS = 64


def _sinks(spec: AgentSpec) -> list[Any]:
    return default_sinks(
        model=spec.provider.model or spec.provider.display_name,
        provider=spec.provider.kind,
        session_id=spec.session_id,
    )


def _interrupted(call: ToolCall, why: str) -> ToolResult:
    return ToolResult(
        call_id=call.id, name=call.name, is_error=True, error_kind="interrupted", attempts=0,
        content=(
            f"interrupted: {why}, so it may have run partly or completely; it was not run "
            "again: check its effects before repeating it"
        ),
    )


def decode_history(data: bytes) -> list[Message]:
    return decode(data, list[Message])
