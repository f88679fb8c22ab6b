"""Starting raygent on Ray, and the :class:`Agent` handle a user holds.

``raygent.init()`` mirrors ``ray.init()``: with no address it starts a local cluster, with
``address="auto"``, ``"ray://host:port"`` or ``RAY_ADDRESS`` it joins an existing one. Actors
are placed with ``num_cpus=0`` because they mostly wait on I/O (the model, subprocesses); the
tools' own work runs in subprocesses and threads outside Ray's CPU accounting.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import ray

from raygent.actors import AgentActor, AgentSpec, PredictorActor, StoreSpec, ToolActor, decode_history
from raygent.errors import AgentError, ConfigError, RaygentError, SessionNotOpen
from raygent.messages import (
    ApprovalRequest,
    AssistantMessage,
    Chunk,
    Message,
    ToolCall,
    ToolCallEnd,
    ToolResult,
    ToolResultChunk,
    Usage,
    UserMessage,
    decode,
    encode,
)
from raygent.observability import SessionMetrics
from raygent.policy import POLICY_FILE, Policy, load_policy
from raygent.providers._ratelimit import RateLimits
from raygent.providers._spec import resolve_provider
from raygent.session import DEFAULT_SYSTEM_PROMPT
from raygent.store import PostgresStore, SQLiteStore, default_path
from raygent.streaming import DEFAULT_BUFFER_SIZE, DEFAULT_FLUSH_INTERVAL_MS, Stream, _gather
from raygent.tools import MCPServer, Tool, tool

__all__ = ["init", "shutdown", "Agent", "RunResult"]

_RAY_DEFAULTS: dict[str, Any] = {
    "include_dashboard": False,
    "logging_level": "warning",
    "log_to_driver": True,
}


# Options raygent itself sets on the actors it creates; a user's option dict may not name
# them, since sharing a workspace's ToolActor (and the agents' shards) rests on them.
_RESERVED_OPTIONS = frozenset({"name", "get_if_exists", "namespace"})


class _Settings:
    """What :func:`init` was told about placing raygent's actors, until :func:`shutdown`."""

    def __init__(self) -> None:
        self.agent_shards: int | None = None
        self.agent_actor_options: dict[str, Any] = {}
        self.tool_actor_options: dict[str, Any] = {}

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


_SETTINGS = _Settings()


def _checked_options(setting: str, options: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise ConfigError(f"{setting} must be a dict of Ray actor options, got {type(options).__name__}", setting=setting)
    reserved = sorted(_RESERVED_OPTIONS & options.keys())
    if reserved:
        raise ConfigError(
            f"{setting} may not set {', '.join(reserved)}: raygent names its shared actors itself",
            setting=setting,
        )
    return dict(options)


def init(
    address: str | None = None,
    *,
    agent_shards: int | None = None,
    agent_actor_options: dict[str, Any] | None = None,
    tool_actor_options: dict[str, Any] | None = None,
    **ray_init_kwargs: Any,
) -> None:
    """Connect to Ray, starting a local cluster when there is none to join, and record where
    raygent places its actors.

    Parameters
    ----------
    address : str, optional
        As for ``ray.init``: ``None`` (``RAY_ADDRESS`` if set, else a new local cluster),
        ``"auto"``, or ``"ray://host:port"``.
    agent_shards : int, optional
        How many agent actors (``raygent-agents-{i}``) host this job's sessions, each session
        on the one its id hashes to. Default: the cluster's CPU count (at least 1) when the
        first agent starts.
    agent_actor_options : dict, optional
        Ray actor options (``ray.actor.ActorClass.options``: ``scheduling_strategy``,
        ``resources``, ``num_cpus``, ``runtime_env`` ...) applied when raygent creates the
        agent actors; they override raygent's own defaults (``num_cpus=0``, ``max_restarts``).
    tool_actor_options : dict, optional
        The same, for the workspaces' ``ToolActor`` actors.
    **ray_init_kwargs
        Passed to ``ray.init`` (``num_cpus``, ``namespace`` ...); raygent's defaults turn the
        dashboard off. Ignored when Ray is already initialized in this process.

    The three raygent settings are recorded even when Ray is already initialized (a test or
    an application calls ``ray.init`` itself, then ``raygent.init(agent_actor_options=...)``),
    apply to the actors created afterwards, and last until :func:`shutdown`; one left as
    ``None`` keeps its recorded value. Actors already running keep their placement.

    Raises
    ------
    ConfigError
        ``agent_shards`` is not a positive int, or an option dict is not a dict or sets
        ``name``, ``get_if_exists`` or ``namespace`` (raygent names its shared actors).
    """
    if agent_shards is not None:
        if isinstance(agent_shards, bool) or not isinstance(agent_shards, int) or agent_shards < 1:
            raise ConfigError(f"agent_shards must be an int >= 1, got {agent_shards!r}", setting="agent_shards")
    agent_options = None if agent_actor_options is None else _checked_options("agent_actor_options", agent_actor_options)
    tool_options = None if tool_actor_options is None else _checked_options("tool_actor_options", tool_actor_options)
    if agent_shards is not None:
        _SETTINGS.agent_shards = agent_shards
    if agent_options is not None:
        _SETTINGS.agent_actor_options = agent_options
    if tool_options is not None:
        _SETTINGS.tool_actor_options = tool_options
    if ray.is_initialized():
        return
    # "local", not None: with no address Ray itself would join the cluster named in
    # /tmp/ray/ray_current_cluster (written by any `ray start` on the machine), not start one.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, **{**_RAY_DEFAULTS, **ray_init_kwargs})


def shutdown(*, mcp_close_timeout_s: float = 10.0) -> None:
    """Disconnect from Ray (a local cluster started by :func:`init` stops) and forget the
    settings given to :func:`init` (shards, actor options).

    The workspaces' tool actors this process started first close their MCP connections (stdio
    servers are asked to exit) and drop the record they kept for a restart, waiting at most
    ``mcp_close_timeout_s`` seconds in all.
    """
    if ray.is_initialized():
        tool_actors = [h for (_, name), h in _SHARED_ACTORS.items() if name.startswith("raygent-tools-")]
        closing = [h.close.remote() for h in tool_actors]
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=mcp_close_timeout_s)
    _SHARED_ACTORS.clear()
    _SHARD_HANDLES.clear()
    _DEFAULT_SHARDS.clear()
    _SETTINGS.reset()
    ray.shutdown()


WORKSPACE_STORE = "workspace"
# Restarts Ray allows an agent shard (after each, its sessions are opened again from their
# stores); a run in flight is resumed as many times.
AGENT_MAX_RESTARTS = 3
# Calls in flight at once on one agent shard, and on one workspace's ToolActor: every run of a
# session is a streaming call held open for the whole run (or while it waits in its mailbox),
# and every model turn's tools one more on the ToolActor; Ray's default of 1,000 for an async
# actor would stall a shard hosting a few thousand sessions.
AGENT_MAX_CONCURRENCY = 10_000
TOOL_MAX_CONCURRENCY = 10_000
# Longest a call waits for an agent shard that is restarting after a crash (seconds), polling
# every _RESTART_POLL_S.
RESTART_WAIT_S = 60.0
_RESTART_POLL_S = 0.1


def agent_shards() -> int:
    """How many agent shards (``raygent-agents-{i}``) this job's sessions are spread over.

    ``raygent.init(agent_shards=N)`` when given; otherwise the cluster's CPU count when the
    first session starts (at least 1), kept while this process stays connected to that cluster
    so that a session id always maps to the same shard.
    """
    if _SETTINGS.agent_shards is not None:
        return _SETTINGS.agent_shards
    cluster = _cluster_id()
    if cluster not in _DEFAULT_SHARDS:
        _DEFAULT_SHARDS[cluster] = max(1, int(ray.cluster_resources().get("CPU", 0)))
    return _DEFAULT_SHARDS[cluster]


_DEFAULT_SHARDS: dict[str, int] = {}


def shard_of(session_id: str, shards: int) -> int:
    """The shard (``0 <= i < shards``) hosting ``session_id``: CRC-32 of its UTF-8 bytes modulo
    ``shards``, the same in every process (Python's ``hash`` of a str is salted per process)."""
    return zlib.crc32(session_id.encode()) % shards


def _cluster_id() -> str:
    # The node this process runs on: a new cluster (ray.shutdown() then ray.init() in one
    # process) has new node ids, while its job ids start again from 1.
    return str(ray.get_runtime_context().get_node_id())


def _agent_shard(session_id: str, *, replacing: Any = None) -> Any:
    """The handle of the agent shard hosting ``session_id``, created if it does not exist yet
    (named, so every driver and worker of the job finds the same one).

    ``replacing``: a handle of that shard whose calls failed with ``actor_died``. When the
    actor is gone for good (out of restarts, or killed), a new one takes its name; while it
    lives or restarts, the handle is kept.
    """
    name = f"raygent-agents-{shard_of(session_id, agent_shards())}"
    key = (ray.get_runtime_context().get_job_id(), name)
    cluster = _cluster_id()
    known = _SHARD_HANDLES.get(key)
    handle = known[1] if known is not None and known[0] == cluster else None
    if handle is not None and replacing is not None and handle is replacing:
        try:
            named = ray.get_actor(name)
        except ValueError:  # dead: its name is free
            handle = None
        else:
            # Another process made a new shard of that name already. The same id may also be a
            # dead actor whose name the GCS has not released yet: the caller tries again.
            if named._actor_id != handle._actor_id:
                handle = named
                _SHARD_HANDLES[key] = (cluster, handle)
                _SHARED_ACTORS[key] = handle
    if handle is None:
        handle = _remote(AgentActor).options(
            **{"max_restarts": AGENT_MAX_RESTARTS, "max_concurrency": AGENT_MAX_CONCURRENCY, **_SETTINGS.agent_actor_options},
            name=name, get_if_exists=True,
        ).remote()
        # A named actor still dies when the handle that created it is collected: keep it.
        _SHARD_HANDLES[key] = (cluster, handle)
        _SHARED_ACTORS[key] = handle
    return handle


# The agent shards' handles by (job id, name), with the cluster they belong to: a handle of a
# cluster this process has left must not be used.
_SHARD_HANDLES: dict[tuple[str, str], tuple[str, Any]] = {}


def _store_spec(store: SQLiteStore | PostgresStore | str | Path | None, workspace: Path) -> StoreSpec | None:
    if store is None:
        return None
    if store == WORKSPACE_STORE:
        store = default_path(workspace)
    spec = StoreSpec.of(store)
    # Opened here once so a bad path or an unreachable server fails the constructor, not the
    # actor: StoreError names the database and the cause.
    spec.open().close()
    return spec


# Handles of the shared named actors (tool actor per workspace, predictor, agent shards), by
# (job id, name).
_SHARED_ACTORS: dict[tuple[str, str], Any] = {}


@cache
def _remote(cls: type) -> Any:
    # Wrapped lazily, once per process: importing raygent must not need a Ray cluster.
    return ray.remote(num_cpus=0)(cls)


class RunResult(msgspec.Struct):
    """The outcome of :meth:`Agent.run`.

    Attributes
    ----------
    text : str
        The final answer: the text of the last assistant message.
    tool_calls, tool_results : list
        Every tool call of the run and its result, in order.
    turns : int
        Model responses in this run.
    input_tokens, output_tokens : int
        Tokens the provider reported for this run.
    wall_ms : float
        Wall time of the run (milliseconds).
    model : str
        The provider's display name (``"scripted (offline)"`` for the offline model).
    """

    text: str
    tool_calls: list[ToolCall]
    tool_results: list[ToolResult]
    turns: int
    input_tokens: int
    output_tokens: int
    wall_ms: float
    model: str


class Agent:
    """An agent session on Ray: hosted by one of the job's agent shards, with the workspace's
    ``ToolActor`` and the predictor.

    The session lives on the shard its id hashes to (:func:`shard_of`, over
    :func:`agent_shards` shards named ``raygent-agents-{i}``), beside the other sessions of
    that shard; its prompts run one at a time in the order they were sent (its mailbox), while
    other sessions run concurrently.

    Parameters
    ----------
    workspace : str or Path, default "."
        The directory the tools work in; paths outside it are refused.
    model : str, optional
        ``"scripted"`` for the offline model, or a model name of an OpenAI-compatible endpoint.
        Default: ``RAYGENT_MODEL`` when an endpoint is configured (``OPENAI_BASE_URL`` or
        ``OPENAI_API_KEY``), else the offline scripted model.
    base_url, api_key : str, optional
        The endpoint (default ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``).
    headers : dict, optional
        Extra HTTP headers for the endpoint.
    system_prompt : str, optional
        Replaces the default system prompt.
    budget_tokens : int, default 32_000
        Token budget of the window sent to the model.
    max_turns : int, default 24
        Model responses allowed per prompt.
    tool_timeout_s : float, default 120.0
        Timeout of a tool call (seconds).
    tools : sequence of Tool or callable, optional
        Tools offered to the model besides the built-ins (a plain function is wrapped with
        :func:`raygent.tool`). They run in the workspace's ``ToolActor`` process, registered
        there for every session of the workspace.
    mcp_servers : sequence of MCPServer, optional
        MCP servers whose tools are offered to the model besides the built-ins
        (:meth:`MCPServer.stdio`, :meth:`MCPServer.http`). The workspace's ``ToolActor`` connects
        each once and keeps the connection for its life; their tools run through the same
        pipeline (timeouts, retries, cache for tools annotated ``readOnlyHint``).
    rate_limits : RateLimits, optional
        Requests per second, tokens per minute and concurrent requests allowed to this
        endpoint, shared by every agent of the cluster that uses it (HTTP providers).
    stream : bool, default True
        False asks the model for whole responses instead of streamed ones (same history and
        tool calls; :meth:`stream` then delivers each response's chunks at once).
    policy : Policy, str or Path, optional
        Decides each tool call: ``allow``, ``prompt`` (the run waits for :meth:`approve` /
        :meth:`deny`) or ``deny`` (see :mod:`raygent.policy`). A path is read as a policy
        TOML file. Default: ``<workspace>/.raygent/policy.toml`` when it exists, else every
        call is allowed.
    approval_timeout_s : float, optional
        How long a call waits for an answer before it is denied (seconds); None waits
        for as long as it takes.
    pass_env : sequence of str, optional
        Environment variables ``run_command`` gets although its environment is scrubbed of
        API keys and tokens (``["GITHUB_TOKEN"]``). Their values are read here, on the
        driver, and sent with the session; names not set here are left out.
    compact_threshold : float or None, default 0.9
        Fraction of ``budget_tokens`` past which older turns are summarized by the model
        (trimmed when that fails); the full history is kept either way. None never compacts.
    speculation_threshold : float or None, default 0.5
        Predicted read-only calls at least this likely (P(tool) x P(arguments | tool), from
        the predictor) run ahead at low priority so their results wait in the workspace's
        cache; never a mutating tool, never into the history. None turns speculation off.
    store : SQLiteStore, PostgresStore, str, Path or None, default "workspace"
        Where every message of the session is checkpointed before it is acted on (keyed by
        :attr:`session_id` and its sequence number), and where a restarted agent actor
        reloads the session from. ``"workspace"``: SQLite (WAL) at
        ``<workspace>/.raygent/sessions.db``; another path: an SQLite file there; a store
        object: its database (the actor opens its own connection, so an in-memory SQLite
        store is refused; a PostgreSQL store lets the session survive the loss of its node).
        ``None``: the history lives in the actor's memory only and dies with it.
    session_id : str, optional
        The session's id (default: a new uuid4 hex). An id whose history is in ``store``
        reopens that conversation: the history is restored and the next prompt continues it
        (the other arguments configure the reopened session as for a new one).

    Raises
    ------
    NotADirectoryError
        ``workspace`` is not a directory.
    PolicyError
        The policy file cannot be read or is not a valid policy (the message names the file
        and the problem).
    ValueError
        An endpoint is configured without a model name, or a tool's name is taken (by a
        built-in, or by another tool of the workspace with a different schema); for an MCP
        server's tool this is :class:`~raygent.tools.MCPConfigError`; or a threshold is
        outside (0, 1]; or ``store`` is an in-memory SQLite store; or ``session_id`` is empty
        (:class:`~raygent.errors.ConfigError`).
    StoreError
        The store cannot be opened.
    MCPConnectError
        An MCP server could not be started, reached or initialized; the message names it.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str] = ".",
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        system_prompt: str | None = None,
        budget_tokens: int = 32_000,
        max_turns: int = 24,
        tool_timeout_s: float = 120.0,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        mcp_servers: Sequence[MCPServer] = (),
        stream: bool = True,
        rate_limits: RateLimits | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
        approval_timeout_s: float | None = None,
        pass_env: Sequence[str] = (),
        compact_threshold: float | None = 0.9,
        speculation_threshold: float | None = 0.5,
        store: SQLiteStore | PostgresStore | str | Path | None = WORKSPACE_STORE,
        session_id: str | None = None,
    ) -> None:
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise ConfigError(f"session_id must be a non-empty str, got {session_id!r}", setting="session_id")
        for name, value in (("compact_threshold", compact_threshold), ("speculation_threshold", speculation_threshold)):
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1] or None, got {value}")
        root = Path(workspace).resolve()
        if not root.is_dir():
            raise NotADirectoryError(f"workspace {str(root)!r} is not a directory")
        self.workspace = root
        if policy is None and (root / POLICY_FILE).is_file():
            policy = root / POLICY_FILE
        self.policy = policy if policy is None or isinstance(policy, Policy) else load_policy(policy)
        provider = resolve_provider(model, base_url=base_url, api_key=api_key, headers=headers)
        if rate_limits is not None:
            provider = msgspec.structs.replace(provider, rate_limits=rate_limits)
        self.model = provider.display_name
        self.session_id = session_id or uuid.uuid4().hex
        init()
        # One ToolActor per workspace and one predictor per job, shared by every Agent.
        key = hashlib.sha1(str(root).encode()).hexdigest()[:16]
        # Restarted by Ray whenever its process dies (it holds no session state); its calls
        # are never retried by Ray, since a mutating tool must not run twice: the agent actor
        # re-runs only read-only calls it lost (AgentActor._run_tools).
        self._tools = _remote(ToolActor).options(
            **{"max_restarts": -1, "max_concurrency": TOOL_MAX_CONCURRENCY, **_SETTINGS.tool_actor_options},
            name=f"raygent-tools-{key}", get_if_exists=True,
        ).remote(str(root), default_timeout_s=tool_timeout_s)
        # Restarted empty when its process or node dies: what it learned is only a hint, and
        # it learns again from the next sessions, whereas a dead predictor would stop hints
        # and speculation for every later session of the job.
        self._predictor = _remote(PredictorActor).options(
            name="raygent-predictor", get_if_exists=True, max_restarts=-1
        ).remote()
        # A named actor still dies when the handle that created it is collected, even if a later
        # get_if_exists handle is in use: keep the shared actors' handles for the driver's life.
        job = ray.get_runtime_context().get_job_id()  # a new cluster in this process starts afresh
        _SHARED_ACTORS.setdefault((job, f"raygent-tools-{key}"), self._tools)
        _SHARED_ACTORS.setdefault((job, "raygent-predictor"), self._predictor)
        schemas = _get(self._tools.schemas.remote())
        if tools:
            extra = [t if isinstance(t, Tool) else tool(t) for t in tools]
            schemas += _get(self._tools.add_tools.remote(extra))
        if mcp_servers:
            schemas += _get(self._tools.add_mcp_servers.remote(encode(list(mcp_servers))))
        spec = AgentSpec(
            session_id=self.session_id,
            provider=provider,
            system_prompt=system_prompt or DEFAULT_SYSTEM_PROMPT,
            budget_tokens=budget_tokens,
            max_turns=max_turns,
            stream=stream,
            policy=self.policy,
            approval_timeout_s=approval_timeout_s,
            pass_env={name: os.environ[name] for name in pass_env if name in os.environ},
            compact_threshold=compact_threshold,
            speculation_threshold=speculation_threshold,
            store=_store_spec(store, root),
            read_only_tools=frozenset(_get(self._tools.read_only_tools.remote())),
        )
        # Without a store a restarted shard has forgotten the session for good: its runs fail.
        self._restarts = AGENT_MAX_RESTARTS if spec.store is not None else 0
        self._actor = _agent_shard(self.session_id)
        self._open_args = (encode(spec), self._tools, self._predictor, schemas)
        self._open()

    # Class-level defaults: a subclass that builds its session itself (replay's _ReplayAgent)
    # runs without a store, so without restarts.
    _restarts = 0
    _prompts = 0
    _closed = False

    def _open(self) -> None:
        """Open the session on its shard (restored from the store when it is there)."""
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                info = _get_when_up(lambda: self._actor.open.remote(*self._open_args))
                break
            except AgentError as e:
                if e.kind != "actor_died" or time.monotonic() >= deadline:
                    raise
            # The shard died: Ray restarts it, or when it is gone for good (out of restarts,
            # killed) a new one takes its name.
            time.sleep(_RESTART_POLL_S)
            self._actor = _agent_shard(self.session_id, replacing=self._actor)
        # Numbers this handle's prompts for the session's mailbox; a handle that sent prompts
        # the store has not seen (a crash) keeps counting from its own figure.
        self._prompts = max(self._prompts, info["prompts"])

    def _resume(self, prompt: str, number: int, buffer_size: int, flush_interval_ms: float) -> Any:
        # A shard out of restarts is replaced first; the resume opens the session on it.
        self._actor = _agent_shard(self.session_id, replacing=self._actor)
        return self._actor.resume.options(num_returns="streaming").remote(
            self.session_id, prompt, number, buffer_size, flush_interval_ms, self._open_args
        )

    def _call(self, method: str, *args: Any) -> Any:
        """A per-session call to the shard; a shard that no longer holds the session (it
        restarted) gets it opened again from the store, and the call is made once more."""
        if self._closed:
            raise AgentError(f"session {self.session_id!r} is closed", kind="closed")
        def call() -> Any:
            return getattr(self._actor, method).remote(self.session_id, *args)

        try:
            return _get_when_up(call)
        except SessionNotOpen:
            if not self._restarts:
                raise
        except AgentError as e:
            if e.kind != "actor_died" or not self._restarts:
                raise
            self._actor = _agent_shard(self.session_id, replacing=self._actor)
        self._open()
        return _get_when_up(call)

    def stream(
        self,
        prompt: str,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS,
        text_only: bool = False,
        include: Iterable[str | type] | None = None,
    ) -> Stream:
        """Run ``prompt``; the returned :class:`~raygent.streaming.Stream` yields its chunks.

        The run starts at once, whether or not the stream is read. Iterate it (``for`` or
        ``async for``), or call ``collect()`` / ``as_reader()``. Unfiltered, it carries text
        deltas, tool-call start/delta/end, the output of running tools (``tool_output_delta``:
        progress, coalesced to at most one per call per 50 ms), tool results, usage, state
        changes and done, in order (see :mod:`raygent.messages`). :meth:`cancel` stops it.

        With a store (the default), a run whose agent actor dies goes on by itself: Ray
        restarts the actor (up to ``AGENT_MAX_RESTARTS`` times), it reloads the session from
        the store, and the stream continues with the rest of the run (no chunk is repeated,
        no message duplicated); a tool call the crash cut short is run again only if its tool
        is read-only, otherwise the model gets a result of kind ``"interrupted"``. The same
        holds for the workspace's tool actor. Without a store the run fails with
        ``actor_died``.

        With a policy, a call marked ``prompt`` arrives as an
        :class:`~raygent.messages.ApprovalRequest` and the run waits (``WaitingForUser``)
        until the reader calls :meth:`approve` or :meth:`deny` for it, or until
        ``approval_timeout_s``. A reader that filters the requests out (``include``,
        ``text_only``) must still answer them, or set ``approval_timeout_s``.

        Parameters
        ----------
        prompt : str
            The user's message.
        buffer_size : int, default 64
            Most chunks per Ray object sent from the agent's actor (chunks).
        flush_interval_ms : float, default 20.0
            Longest a chunk waits in the actor before it is sent (milliseconds).
        text_only : bool, default False
            Yield only text deltas.
        include : iterable of str or type, optional
            Chunk kinds to yield (see :data:`raygent.streaming.CHUNK_KINDS`); default all.

        Returns
        -------
        Stream

        Raises
        ------
        AgentError
            While reading: the run failed (``kind`` says why: ``provider_error``,
            ``rate_limit``, ``max_turns``, ``tool_runner_failed``, ``actor_died``); the chunks
            before the failure have been yielded and the session's history keeps every
            completed turn.
        """
        batches = _RayBatches()
        stream = Stream(  # validates the options before the run starts
            batches, buffer_size=buffer_size, flush_interval_ms=flush_interval_ms,
            text_only=text_only, include=include,
        )
        if self._closed:
            raise AgentError(f"session {self.session_id!r} is closed", kind="closed")
        self._prompts += 1
        number = self._prompts
        batches.refs = self._actor.run.options(num_returns="streaming").remote(
            self.session_id, prompt, number, buffer_size, flush_interval_ms
        )
        if self._restarts:
            batches.resumes_left = self._restarts
            batches.resume = lambda: self._resume(prompt, number, buffer_size, flush_interval_ms)
        return stream

    def astream(self, prompt: str, **options: Any) -> Stream:
        """:meth:`stream`, named for ``async for chunk in agent.astream(prompt)`` (the same
        :class:`~raygent.streaming.Stream` supports both; iterating it asynchronously awaits
        Ray objects instead of blocking the event loop)."""
        return self.stream(prompt, **options)

    def run(
        self, prompt: str, *, on_approval: Callable[[ApprovalRequest], bool | str] | None = None
    ) -> RunResult:
        """Run ``prompt`` to its final answer.

        Parameters
        ----------
        prompt : str
            The user's message.
        on_approval : callable, optional
            Asked for each tool call the policy marks ``prompt``: ``on_approval(request) ->
            True`` approves it, ``False`` denies it, a ``str`` denies it with that reason for
            the model. Without it, such calls are denied (reason: no approver), so a run
            without a person never blocks; the model sees the refusal and goes on. If it
            raises, the call is denied and the error propagates.

        Raises
        ------
        AgentError
            As for :meth:`stream`.
        """
        started = time.perf_counter()
        chunks: list[Chunk] = []
        for chunk in self.stream(prompt):
            chunks.append(chunk)
            if isinstance(chunk, ApprovalRequest):
                try:
                    answer = (
                        on_approval(chunk)
                        if on_approval is not None
                        else "no approver: Agent.run was called without on_approval"
                    )
                except BaseException:
                    # Answer before leaving, or the session would wait in WaitingForUser forever.
                    self.deny(chunk.call.id, reason="the approver failed")
                    raise
                if answer is True:
                    self.approve(chunk.call.id)
                else:
                    self.deny(chunk.call.id, reason=answer if isinstance(answer, str) else "")
        got = _gather(chunks)
        wall_ms = (time.perf_counter() - started) * 1000.0
        history = self.history()
        last_user = max(i for i, m in enumerate(history) if isinstance(m, UserMessage))
        answers = [m for m in history[last_user:] if isinstance(m, AssistantMessage)]
        return RunResult(
            text=answers[-1].content if answers else "",
            tool_calls=got.tool_calls,
            tool_results=got.tool_results,
            turns=len(answers),
            input_tokens=got.usage.input_tokens,
            output_tokens=got.usage.output_tokens,
            wall_ms=wall_ms,
            model=self.model,
        )

    def approve(self, call_id: str) -> None:
        """Let a tool call run that waits for approval (announced by an
        :class:`~raygent.messages.ApprovalRequest` chunk of the stream being read).

        Raises
        ------
        ApprovalError
            ``call_id`` is not waiting (unknown, already answered, or its run ended).
        """
        self._call("approve", call_id)

    def deny(self, call_id: str, reason: str = "") -> None:
        """Refuse a tool call that waits for approval: the model gets an error result of kind
        ``"denied"`` carrying ``reason``, and the run goes on with its next turn.

        Raises
        ------
        ApprovalError
            ``call_id`` is not waiting (unknown, already answered, or its run ended).
        """
        self._call("deny", call_id, reason)

    def pending_approvals(self) -> list[str]:
        """Ids of the tool calls waiting for :meth:`approve` / :meth:`deny`."""
        return self._call("pending_approvals")

    def cancel(self) -> bool:
        """Cancel the run in progress, from any thread (e.g. while another reads its stream).

        Running tool calls are cancelled on the workspace's ``ToolActor``: their subprocesses
        are killed with all their children, and they are answered with error results of kind
        ``"cancelled"`` (a ``tool_result`` chunk each); a response being streamed stops at the
        model's next chunk. The run's stream then ends normally with a state change to ``Idle``
        (trigger ``"cancelled"``); the history keeps every completed unit with each tool call
        answered, and the next prompt can follow at once.

        Returns
        -------
        bool
            True if a run was in progress, False if there was nothing to cancel.

        Raises
        ------
        AgentError
            ``kind="actor_died"`` when the agent's actor is gone.
        """
        return bool(self._call("cancel"))

    def history(self) -> list[Message]:
        """The full conversation so far (system prompt first)."""
        return decode_history(self._call("history"))

    def status(self) -> dict[str, Any]:
        """State, error kind, totals and recent transitions of the session."""
        return self._call("status")

    def metrics(self) -> SessionMetrics:
        """The session's figures: tool latency p50/p99, cache hit ratio, turn and prompt latency,
        time to first token, tokens and state transition counts (see
        :class:`raygent.observability.SessionMetrics`)."""
        return decode(self._call("metrics_snapshot"), SessionMetrics)

    def next_tools(self, after: str | None, k: int = 3) -> list[tuple[str, float]]:
        """The predictor's most likely next tools after ``after`` (over every session of the job)."""
        return _get(self._predictor.next_tools.remote(after, k))

    def close(self) -> None:
        """End the session: its run in progress stops, its shard frees it (the shard, the
        shared tool actor and the predictor stay), and this handle refuses further calls
        (``AgentError(kind="closed")``). Closing twice does nothing. With a store, the
        history stays there: ``Agent(session_id=...)`` reopens it."""
        if self._closed:
            return
        self._closed = True
        try:
            _get_when_up(lambda: self._actor.close.remote(self.session_id))
        except AgentError as e:
            # A shard gone for good took the session with it: nothing is left to free.
            if e.kind != "actor_died":
                raise
        finally:
            # Fire-and-forget, like every predictor message: closing never waits on it.
            self._predictor.end_session.remote(self.session_id)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RayBatches:
    """The batches of an ``AgentActor.run`` streaming generator, sync or async, decoded."""

    def __init__(self) -> None:
        self.refs: Any = None  # the ObjectRefGenerator, set once the run is started
        # Starts AgentActor.resume once the actor died mid-run (Ray restarts it from the store).
        self.resume: Callable[[], Any] | None = None
        self.resumes_left = 0
        self._restart_deadline: float | None = None

    def _resume_delay_s(self, e: BaseException) -> float | None:
        """Seconds to wait before resuming the run after ``e``, or None when it cannot go on."""
        if self.resume is None:
            return None
        if isinstance(e, ray.exceptions.ActorUnavailableError):
            # The shard is restarting (the resume sent after its death came too early): wait
            # for it, up to RESTART_WAIT_S, without spending a resume.
            now = time.monotonic()
            if self._restart_deadline is None:
                self._restart_deadline = now + RESTART_WAIT_S
            return _RESTART_POLL_S if now < self._restart_deadline else None
        # The shard died mid-run (RayActorError), or it had restarted before the run reached it
        # and no longer held the session (SessionNotOpen): resume reopens it from the store.
        lost = isinstance(e, ray.exceptions.RayActorError) or isinstance(getattr(e, "cause", None), SessionNotOpen)
        if not lost or self.resumes_left <= 0:
            return None
        self.resumes_left -= 1
        return _RESTART_POLL_S

    def __iter__(self) -> Iterator[list[Chunk]]:
        while True:
            try:
                data = ray.get(next(self.refs))
            except StopIteration:
                return
            except Exception as e:
                delay_s = self._resume_delay_s(e)
                if delay_s is None:
                    raise _translate(e) from e
                time.sleep(delay_s)
                self.refs = self.resume()  # type: ignore[misc]
                continue
            self._restart_deadline = None
            yield decode(data, list[Chunk])

    async def __aiter__(self) -> AsyncIterator[list[Chunk]]:
        while True:
            try:
                ref = await self.refs.__anext__()
                data = await ref
            except StopAsyncIteration:
                return
            except Exception as e:
                delay_s = self._resume_delay_s(e)
                if delay_s is None:
                    raise _translate(e) from e
                await asyncio.sleep(delay_s)
                self.refs = self.resume()  # type: ignore[misc]
                continue
            self._restart_deadline = None
            yield decode(data, list[Chunk])


def _get(ref: Any) -> Any:
    try:
        return ray.get(ref)
    except Exception as e:
        raise _translate(e) from e


def _get_when_up(make_ref: Callable[[], Any]) -> Any:
    """``_get(make_ref())``, made again while the actor is restarting: Ray answers a call to a
    restarting actor with ActorUnavailableError at once instead of queueing it. Only for
    calls that may run twice (idempotent or read-only: the first may have run before the
    death). Waits at most RESTART_WAIT_S."""
    deadline = time.monotonic() + RESTART_WAIT_S
    while True:
        try:
            return ray.get(make_ref())
        except ray.exceptions.ActorUnavailableError as e:
            if time.monotonic() >= deadline:
                raise _translate(e) from e
            time.sleep(_RESTART_POLL_S)
        except Exception as e:
            raise _translate(e) from e


def _translate(e: BaseException) -> BaseException:
    """Ray's wrappers to raygent's typed errors: the cause if it is ours, else ``actor_died``."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, RaygentError):
        return cause
    if isinstance(e, RaygentError):
        return e
    if isinstance(e, ray.exceptions.RayActorError):
        return AgentError(f"an agent actor died: {e}", kind="actor_died")
    return e
