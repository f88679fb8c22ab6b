"""The asyncio tool pipeline: priorities, concurrency limits, timeouts, retries, cache, groups.

One :class:`ToolPipeline` serves every session of a workspace (it lives in the ``ToolActor``).
A call goes through, in order:

1. **Result cache** (read-only tools only): a fresh entry for the same tool and canonical
   arguments answers at once (``cached=True``, ``attempts=0``). Identical read-only calls in
   flight at the same time run once and share the result (single-flight).
2. **Circuit breaker** of the tool: an open breaker fails the call at once with
   ``error_kind="circuit_open"``.
3. **Priority queue**: ``critical``, ``high``, ``normal``, ``low``; a call starts when a global
   slot and a slot of its tool are free, the highest priority first (FIFO within a priority).
   The result says what the call met there: ``queued_ms`` (time it waited for a slot, over all
   its attempts) and ``queue_depth`` (calls waiting, itself included, once it was queued; 0
   when a slot was free). The calls waiting now, by priority, are in :meth:`ToolPipeline.metrics`
   and reach ``on_queue_change`` as they change (the ``ToolActor`` feeds a Ray Gauge with them).
4. **Timeout**: the tool's ``timeout_s`` or the pipeline default, lowered to the *adaptive*
   timeout of the call's action when one is set (:meth:`ToolPipeline.set_adaptive_timeouts`:
   the runtime derives it from the predictor's observed p99 duration; it never raises the
   configured timeout); on expiry the call's coroutine is cancelled, which makes
   ``run_command`` kill its whole process group.
5. **Retries**: a :class:`~raygent.errors.RetryableToolError` (any ``ToolError`` with
   ``retryable = True``) is retried up to ``max_retries`` times with exponential backoff and
   jitter; the result's ``attempts`` says how many runs it took.
6. **Output**: ANSI stripped; an output over ``spool_threshold_bytes`` is written whole to
   ``<workspace>/.raygent/spool/`` and the result keeps its head and tail around a marker with
   the bytes left out and the file's path.

**Order within a turn** (:meth:`ToolPipeline.run_turn`). Read-only calls run concurrently;
mutating calls keep their order; a mutating call waits for the earlier read-only calls that touch
its paths (``path``, ``file_path`` or ``paths`` arguments, normalized in the workspace; a
directory covers what lies under it), and for every earlier call when its paths are unknown
(``run_command``, a tool without a path argument). A read-only call waits for every earlier
mutating call, whatever its paths: a tool's path argument need not name everything it changes,
so the conservative choice keeps read-after-write exact at the cost of some overlap.

**Cache correctness.** A mutating call invalidates the entries that read its paths (all entries
when its paths are unknown) when it starts and again when it ends, and bumps a write epoch. A
read-only execution stores its result only if no mutating call started or ended while it ran, and
a call joins an in-flight execution only if that started in the current epoch, so a read that
begins after a write has finished never sees content from before it.

**Speculative execution** (:meth:`ToolPipeline.prefetch`). Predicted read-only calls run at
``low`` priority before the model asks for them, through the same single-flight and cache, so
a real call that comes next is answered from the cache or joins the speculative run
(``cached=True`` either way; a real call that joins a speculative run still queued lifts it to
its own priority). A mutating or unknown tool is never run speculatively. Metrics
count speculative executions, hits (real calls they answered) and waste (those no real call
used before the session's next speculation round, or that failed or were invalidated).

**Streaming output** (:meth:`ToolPipeline.stream_turn`, or ``run_call(..., on_output=...)``). What
a running tool passes to :func:`raygent.tools.emit` (``run_command`` passes its output as it reads
it) reaches the listener as :class:`~raygent.messages.ToolOutputDelta` chunks while the tool
runs. Each call's output goes through a streaming ANSI stripper (an escape sequence cut across
two writes is still removed) and is coalesced: the first output of a call is sent at once, later
output at most once per ``output_delta_interval_ms`` (50 ms), and a delta carries at most
``output_delta_max_bytes`` (16 KiB) of UTF-8, so one call streams at most about 320 KiB/s,
whatever its tool writes. Output beyond that within one interval is skipped (its newest part is
kept) and the delta starts with a ``[... N bytes of output not streamed ...]`` line. A call's
deltas all come before its result, and the result is the same as without a listener. A call
answered by the cache or by an identical call in flight streams nothing; a retried call streams
the output of each attempt.

Every result leaves the pipeline as a :class:`~raygent.messages.ToolResult`; a failure (unknown
tool, bad arguments, sandbox refusal, timeout, open breaker, cancellation, any exception) becomes
an error result with ``error_kind`` set, so the model sees it and the conversation goes on.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import os
import posixpath
import random
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
import orjson

from raygent._breaker import CLOSED, CircuitBreaker, backoff_s
from raygent._cache import ALL_PATHS, ResultCache, canonical_key, file_stamps, paths_overlap
from raygent._native import AnsiStripper, strip_ansi
from raygent.errors import SandboxViolation, ToolError, ToolNotFound, ToolTimeout
from raygent.messages import ToolCall, ToolOutputDelta, ToolResult
from raygent.predictor import action_of
from raygent.tools._tool import output_sink
from raygent.tools._workspace import Workspace

__all__ = ["ToolPipeline", "ToolLike", "PRIORITIES", "plan_steps", "cap_output", "call_paths"]

#: Priority names, most urgent first, with their rank in the queue.
PRIORITIES: dict[str, int] = {"critical": 0, "high": 1, "normal": 2, "low": 3}

#: Argument names taken as workspace paths a call touches.
PATH_ARGUMENTS = ("path", "file_path", "paths")

#: Error kinds that count against a tool's circuit breaker (the tool's fault, not the model's).
_BREAKER_KINDS = frozenset({"error", "timeout"})

#: Turn ids cancelled before their turn started, remembered so the turn starts cancelled.
_EARLY_CANCELS_KEPT = 1024


class ToolLike(Protocol):
    """What the pipeline needs of a tool (``raygent.tools.Tool`` has it)."""

    name: str
    read_only: bool
    timeout_s: float | None

    def invoke(self, arguments: dict[str, Any]) -> Awaitable[Any]: ...


def plan_steps(calls: Sequence[ToolCall], tools: Mapping[str, ToolLike]) -> list[list[ToolCall]]:
    """Split one turn's calls into ordered steps: runs of read-only calls, each mutating call alone.

    The coarse plan (every call of a step waits for the whole step before it);
    :meth:`ToolPipeline.run_turn` refines it with the paths the calls touch. An unknown tool
    counts as read-only: it touches nothing (it fails with ``not_found``).
    """
    steps: list[list[ToolCall]] = []
    for call in calls:
        if _read_only(call, tools) and steps and all(_read_only(c, tools) for c in steps[-1]):
            steps[-1].append(call)
        else:
            steps.append([call])
    return steps


def _read_only(call: ToolCall, tools: Mapping[str, ToolLike]) -> bool:
    tool = tools.get(call.name)
    return tool is None or tool.read_only


def cap_output(text: str, max_chars: int) -> str:
    """Keep the head and tail of ``text`` within ``max_chars``, with a marker of what was cut."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters truncated ...]\n{text[-half:]}"


def _normalize(raw: Any, workspace: Workspace | None) -> str | None:
    """``raw`` as a ``/``-separated path relative to the workspace, or None if it is not one."""
    if not isinstance(raw, str):
        return None
    if workspace is not None:
        try:
            return workspace.relative(raw)
        except (SandboxViolation, OSError, ValueError):
            return None
    p = posixpath.normpath(raw or ".")
    return p


def call_paths(
    arguments: Mapping[str, Any], *, read_only: bool, workspace: Workspace | None = None
) -> frozenset[str] | None:
    """The workspace paths a call touches, from its path arguments.

    Parameters
    ----------
    arguments : Mapping
        The call's arguments; ``path``, ``file_path`` (str) and ``paths`` (list of str) count.
    read_only : bool
        Whether the tool is read-only. A read-only call without a path argument touches the whole
        workspace (``{"."}``: ``grep`` and ``list_dir`` default to the root).
    workspace : Workspace, optional
        Resolves paths (symlinks, ``..``) relative to its root; without it paths are normalized
        as text.

    Returns
    -------
    frozenset of str or None
        The paths; None when a mutating call names no path (it may touch anything), or when a
        path cannot be normalized (outside the workspace: the tool will refuse it).
    """
    found: list[str] = []
    for name in PATH_ARGUMENTS:
        if name not in arguments:
            continue
        raw = arguments[name]
        for item in raw if isinstance(raw, list) else [raw]:
            p = _normalize(item, workspace)
            if p is None:
                return None if not read_only else ALL_PATHS
            found.append(p)
    if not found:
        return ALL_PATHS if read_only else None
    return frozenset(found)


class _OutputCoalescer:
    """One call's streamed output: ANSI-stripped, coalesced into bounded deltas.

    :meth:`write` may be called from any thread (a sync tool runs in a worker thread); the
    rest runs on the event loop. The first output is delivered at once, later output when
    ``interval_s`` has passed since the previous delivery; at most ``max_bytes`` of UTF-8 are
    kept between deliveries (the newest), the rest is counted and reported by a marker line.
    """

    def __init__(
        self,
        call: ToolCall,
        deliver: Callable[[ToolOutputDelta], None],
        *,
        max_bytes: int,
        interval_s: float,
    ) -> None:
        self.call = call
        self.deliver = deliver
        self.max_bytes = max_bytes
        self.interval_s = interval_s
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stripper = AnsiStripper()
        self._parts: list[str] = []
        self._nbytes = 0
        self._skipped = 0
        self._last = -float("inf")
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def write(self, text: str) -> None:
        if threading.get_ident() == self._loop_thread:
            self._add(text)
        else:
            self.loop.call_soon_threadsafe(self._add, text)

    def _add(self, text: str) -> None:
        if self._closed:
            return  # a shared flight's tool outliving the call that listened
        text = self._stripper.feed(text)
        if not text:
            return
        self._parts.append(text)
        self._nbytes += len(text) if text.isascii() else len(text.encode("utf-8"))
        if self._nbytes > self.max_bytes:
            self._keep_newest()
        if self._timer is None:
            wait_s = self._last + self.interval_s - self.loop.time()
            if wait_s <= 0:
                self._flush()
            else:
                self._timer = self.loop.call_later(wait_s, self._flush)

    def _keep_newest(self) -> None:
        data = "".join(self._parts).encode("utf-8")
        kept = data[-self.max_bytes :].decode("utf-8", "ignore")  # a cut character is dropped
        nbytes = len(kept.encode("utf-8"))
        self._skipped += len(data) - nbytes
        self._parts = [kept]
        self._nbytes = nbytes

    def _flush(self) -> None:
        self._timer = None
        if not self._parts:
            return
        text = "".join(self._parts)
        if self._skipped:
            text = f"[... {self._skipped} bytes of output not streamed ...]\n{text}"
        self._parts, self._nbytes, self._skipped = [], 0, 0
        self._last = self.loop.time()
        self.deliver(ToolOutputDelta(call_id=self.call.id, name=self.call.name, text=text))

    def close(self) -> None:
        """Deliver what is left (the end of a cut sequence is dropped) and stop listening."""
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        rest = self._stripper.finish()
        if rest:
            self._parts.append(rest)
        self._flush()
        self._closed = True


_PRIORITY_NAMES = {rank: name for name, rank in PRIORITIES.items()}


class _Scheduler:
    """Global and per-tool slots, granted to waiters by priority then arrival.

    ``on_queue_change`` hears the calls waiting, by priority name, each time that changes.
    """

    def __init__(
        self,
        max_concurrency: int,
        per_tool: Mapping[str, int],
        on_queue_change: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.per_tool = dict(per_tool)
        self.running = 0
        self.by_tool: Counter[str] = Counter()
        self._waiters: list[tuple[int, int, str, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        # Waiting requests by rank, kept as they come and go (cancelled futures stay in the
        # heap until popped, so counting the heap would count them).
        self._queued = [0] * len(PRIORITIES)
        self.max_queued = 0
        self.on_queue_change = on_queue_change
        # A task's queued request, and the rank a more urgent caller raised the task to (a
        # speculative run at low priority that a real call joined).
        self._waiting: dict[asyncio.Task[Any], asyncio.Future[None]] = {}
        self._promoted: dict[asyncio.Task[Any], int] = {}

    def _can(self, tool: str) -> bool:
        limit = self.per_tool.get(tool)
        return self.running < self.max_concurrency and (limit is None or self.by_tool[tool] < limit)

    def _take(self, tool: str) -> None:
        self.running += 1
        self.by_tool[tool] += 1

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return sum(self._queued)

    def queued_by_priority(self) -> dict[str, int]:
        """Requests waiting for a slot now, by priority name (every name present)."""
        return {_PRIORITY_NAMES[rank]: n for rank, n in enumerate(self._queued)}

    def _count(self, rank: int, delta: int) -> None:
        self._queued[rank] += delta
        if delta > 0:
            self.max_queued = max(self.max_queued, self.queued)
        if self.on_queue_change is not None:
            self.on_queue_change(self.queued_by_priority())

    async def acquire(self, tool: str, rank: int) -> int:
        """Wait for a slot of ``tool``; returns the queue depth the request met: the requests
        waiting, itself included, once it was queued (0 when it got a slot at once)."""
        if not self._waiters and self._can(tool):
            self._take(tool)
            return 0
        task = asyncio.current_task()
        if task is not None:
            rank = min(rank, self._promoted.get(task, rank))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (rank, next(self._seq), tool, fut))
        self._count(rank, +1)
        depth = self.queued
        self._dispatch()
        if fut.done():
            return 0  # granted by the dispatch just now: it never waited
        if task is not None:
            self._waiting[task] = fut
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(tool)  # granted, then cancelled before it could run
            else:
                fut.cancel()
                self._count(self._rank_of(fut, rank), -1)
            raise
        finally:
            if task is not None:
                self._waiting.pop(task, None)
        return depth

    def _rank_of(self, fut: asyncio.Future[None], default: int) -> int:
        # Its rank may have been lifted by promote() since it was queued.
        for item in self._waiters:
            if item[3] is fut:
                return item[0]
        return default

    def promote(self, task: asyncio.Task[Any], rank: int) -> None:
        """Queue ``task``'s request (now and on retries) at ``rank`` if that is more urgent."""
        if task.done() or rank >= self._promoted.get(task, PRIORITIES["low"] + 1):
            return
        if task not in self._promoted:
            task.add_done_callback(lambda t: self._promoted.pop(t, None))
        self._promoted[task] = rank
        fut = self._waiting.get(task)
        for i, item in enumerate(self._waiters):
            if item[3] is fut and rank < item[0]:
                self._waiters[i] = (rank, item[1], item[2], item[3])
                heapq.heapify(self._waiters)
                self._queued[item[0]] -= 1
                self._count(rank, +1)
                self._dispatch()
                return

    def release(self, tool: str) -> None:
        self.running -= 1
        self.by_tool[tool] -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        blocked = []
        while self._waiters and self.running < self.max_concurrency:
            item = heapq.heappop(self._waiters)
            fut = item[3]
            if fut.done():
                continue
            if self._can(item[2]):
                self._take(item[2])
                fut.set_result(None)
                self._count(item[0], -1)
            else:
                blocked.append(item)  # its tool is at its own limit; let lower ranks pass
        for item in blocked:
            heapq.heappush(self._waiters, item)


class _QueueSeen:
    """What one call met in the queue over its attempts: total wait and the largest depth."""

    __slots__ = ("wait_s", "depth")

    def __init__(self) -> None:
        self.wait_s = 0.0
        self.depth = 0

    def add(self, wait_s: float, depth: int) -> None:
        self.wait_s += wait_s
        self.depth = max(self.depth, depth)

    def stamp(self, result: ToolResult) -> ToolResult:
        if not self.depth:
            return result  # never queued: the defaults (0) hold
        return msgspec.structs.replace(result, queued_ms=self.wait_s * 1000.0, queue_depth=self.depth)


class _Flight:
    """One execution of a read-only call shared by every identical call that joins it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[ToolResult]) -> None:
        self.task = task
        self.waiters = 0


class _Planned(msgspec.Struct):
    call: ToolCall
    read_only: bool
    paths: frozenset[str] | None


def _must_wait(later: _Planned, earlier: _Planned) -> bool:
    if not earlier.read_only:
        return True  # mutating calls keep their order, and reads wait for writes before them
    if later.read_only:
        return False
    if later.paths is None or earlier.paths is None:
        return True
    return paths_overlap(later.paths, earlier.paths)


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class ToolPipeline:
    """Runs tool calls against a registry of tools.

    Parameters
    ----------
    tools : Mapping[str, ToolLike]
        The registry, by tool name.
    max_concurrency : int, default 8
        Calls running at once across all turns fed to this pipeline.
    per_tool_concurrency : Mapping[str, int], optional
        Calls of one tool running at once, by tool name (no limit for tools not named).
    default_timeout_s : float, default 120.0
        Timeout of a call whose tool sets none, in seconds. On timeout the call's coroutine is
        cancelled (``run_command`` kills its process group) and an error result is returned.
    max_output_chars : int, default 100_000
        Longer outputs keep their head and tail with a visible truncation marker.
    workspace : str, os.PathLike or Workspace, optional
        Root the tools work in: paths are normalized against it (cache keys, ordering) and large
        outputs are spooled under its ``.raygent/spool/``. Without it paths are normalized as text
        and large outputs are only truncated.
    spool_threshold_bytes : int, default 65536
        Outputs longer than this (UTF-8 bytes) are spooled; the result keeps the first and last
        quarter of this size.
    cache : bool, default True
        Cache the results of read-only tools and share identical calls in flight.
    cache_ttl_s : float, default 60.0
        Seconds a cached result stays valid.
    cache_max_entries : int, default 1024
        Most cached results.
    cache_max_bytes : int, default 32 MiB
        Most bytes of cached content.
    max_retries : int, default 2
        Retries of a call that failed with a retryable error.
    retry_base_s, retry_max_s : float, default 0.2 and 5.0
        Backoff before retry ``n``: ``min(retry_max_s, retry_base_s * 2**(n-1))`` seconds times a
        uniform jitter factor in [0.5, 1].
    breaker_failures : int, default 5
        Failures (kinds ``error`` and ``timeout``) within ``breaker_window_s`` that open a tool's
        circuit breaker.
    breaker_window_s, breaker_cooldown_s : float, default 60.0 and 30.0
        The failure window, and how long a breaker stays open before one probe call, in seconds.
    clock : callable, default time.monotonic
        Seconds, for the cache TTL and the breakers (injectable for tests).
    seed : int, optional
        Seed of the jitter's random generator.
    output_delta_max_bytes : int, default 16384
        Most UTF-8 bytes of tool output one :class:`~raygent.messages.ToolOutputDelta` carries
        (plus a marker line when output was skipped); see "Streaming output" above.
    output_delta_interval_ms : float, default 50.0
        Shortest time between two deltas of one call, in milliseconds (the first is sent at
        once).
    on_queue_change : callable, optional
        Called on the event loop with the calls waiting for a slot, by priority name
        (``{"critical": 0, "high": 0, "normal": 3, "low": 1}``), each time a call enters or
        leaves the queue. Keep it cheap: it runs inside the scheduler.

    Raises
    ------
    ValueError
        If a concurrency limit is less than 1, a threshold is not positive, ``max_retries`` is
        negative or an output delta bound is not positive.
    NotADirectoryError
        If ``workspace`` is given and is not a directory.
    """

    def __init__(
        self,
        tools: Mapping[str, ToolLike],
        *,
        max_concurrency: int = 8,
        per_tool_concurrency: Mapping[str, int] | None = None,
        default_timeout_s: float = 120.0,
        max_output_chars: int = 100_000,
        workspace: str | os.PathLike[str] | Workspace | None = None,
        spool_threshold_bytes: int = 64 * 1024,
        cache: bool = True,
        cache_ttl_s: float = 60.0,
        cache_max_entries: int = 1024,
        cache_max_bytes: int = 32 * 1024 * 1024,
        max_retries: int = 2,
        retry_base_s: float = 0.2,
        retry_max_s: float = 5.0,
        breaker_failures: int = 5,
        breaker_window_s: float = 60.0,
        breaker_cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        output_delta_max_bytes: int = 16 * 1024,
        output_delta_interval_ms: float = 50.0,
        on_queue_change: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        per_tool = dict(per_tool_concurrency or {})
        if max_concurrency < 1 or any(v < 1 for v in per_tool.values()):
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency} / {per_tool}")
        if max_retries < 0 or spool_threshold_bytes < 4:
            raise ValueError("max_retries must be >= 0 and spool_threshold_bytes >= 4")
        if output_delta_max_bytes < 1 or not output_delta_interval_ms > 0:
            raise ValueError(
                "output_delta_max_bytes must be >= 1 and output_delta_interval_ms > 0, got "
                f"{output_delta_max_bytes} and {output_delta_interval_ms}"
            )
        self.output_delta_max_bytes = output_delta_max_bytes
        self.output_delta_interval_s = output_delta_interval_ms / 1000.0
        self.tools = dict(tools)
        self.default_timeout_s = default_timeout_s
        self.max_output_chars = max_output_chars
        self.workspace = (
            workspace if isinstance(workspace, Workspace) or workspace is None else Workspace(workspace)
        )
        self.spool_threshold_bytes = spool_threshold_bytes
        self.max_retries = max_retries
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._breaker_args = {
            "failures": breaker_failures,
            "window_s": breaker_window_s,
            "cooldown_s": breaker_cooldown_s,
            "clock": clock,
        }
        CircuitBreaker(**self._breaker_args)  # type: ignore[arg-type]  # validates early
        self._breakers: dict[str, CircuitBreaker] = {}
        self._sched = _Scheduler(max_concurrency, per_tool, on_queue_change)
        root = str(self.workspace.root) if self.workspace is not None else None
        self.cache: ResultCache | None = (
            ResultCache(
                ttl_s=cache_ttl_s,
                max_entries=cache_max_entries,
                max_bytes=cache_max_bytes,
                root=root,
                clock=clock,
            )
            if cache
            else None
        )
        self._flights: dict[tuple[bytes, int], _Flight] = {}
        self._epoch = 0
        self._rng = random.Random(seed)
        self._turns: dict[str, list[asyncio.Task[ToolResult]]] = {}
        self._early_cancels: OrderedDict[str, None] = OrderedDict()
        self._counts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._adaptive_timeouts_s: dict[str, float] = {}
        # Speculative results not used yet: cache key -> session id; and per session the keys
        # of its latest speculation round (unused ones become waste at its next round).
        self._spec_unused: dict[bytes, str] = {}
        self._spec_rounds: dict[str, set[bytes]] = {}
        self._spec: Counter[str] = Counter()

    # --- one call ----------------------------------------------------------------------------

    async def run_call(
        self,
        call: ToolCall,
        *,
        priority: str = "normal",
        on_output: Callable[[ToolOutputDelta], None] | None = None,
    ) -> ToolResult:
        """Run one call through cache, breaker, queue, timeout and retries.

        Parameters
        ----------
        call : ToolCall
            The call.
        priority : str, default "normal"
            ``"critical"``, ``"high"``, ``"normal"`` or ``"low"``: its place in the queue for a slot.
        on_output : callable, optional
            Receives the call's streamed output as :class:`~raygent.messages.ToolOutputDelta`
            while it runs (on the event loop; see "Streaming output" in the module docs), all
            before this method returns. The result does not depend on it.

        Returns
        -------
        ToolResult
            Never raises for a tool's failure: errors are results with ``error_kind`` set.

        Raises
        ------
        ValueError
            If ``priority`` is not one of :data:`PRIORITIES`.
        asyncio.CancelledError
            If the caller is cancelled; the tool is cancelled with it (``run_command`` kills its
            process group) unless an identical in-flight call of another caller still needs it.
        """
        rank = PRIORITIES.get(priority)
        if rank is None:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        if on_output is None:
            return await self._run_call(call, rank)
        out = _OutputCoalescer(
            call,
            on_output,
            max_bytes=self.output_delta_max_bytes,
            interval_s=self.output_delta_interval_s,
        )
        try:
            # The tool finds the channel through raygent.tools.emit's context variable; tasks
            # started below (a shared flight, run_command's reader) inherit it.
            with output_sink(out.write):
                return await self._run_call(call, rank)
        finally:
            out.close()

    async def _run_call(self, call: ToolCall, rank: int) -> ToolResult:
        self._counts["calls"] += 1
        started = time.perf_counter()
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools))
            err = ToolNotFound(f"no tool named {call.name!r}; known tools: {known}", tool=call.name)
            return self._error_result(call, err, started, attempts=0)
        if not tool.read_only:
            return await self._run_mutating(call, tool, rank, started)
        if self.cache is None:
            return await self._execute(call, tool, rank, started)
        args = self._canonical_args(call.arguments)  # path arguments resolved once, here
        paths = call_paths(args, read_only=True)
        if paths is None:
            return await self._execute(call, tool, rank, started)
        key = canonical_key(call.name, args)
        hit = self.cache.get(key)
        self._use_speculation(key, served=hit is not None or (key, self._epoch) in self._flights)
        if hit is not None:
            return msgspec.structs.replace(
                hit,
                call_id=call.id,
                attempts=0,
                cached=True,
                duration_ms=(time.perf_counter() - started) * 1000.0,
                queued_ms=0.0,
                queue_depth=0,
            )
        return await self._join_flight(call, tool, rank, started, key, paths)

    def _use_speculation(self, key: bytes, *, served: bool) -> None:
        """A real call for ``key`` arrived: a hit when a speculative result serves it, waste
        when one was made but is gone (invalidated, expired or evicted)."""
        if self._spec_unused.pop(key, None) is not None:
            self._spec["hits" if served else "wasted"] += 1

    def _canonical_args(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(arguments)
        for name in PATH_ARGUMENTS:
            if name in out:
                raw = out[name]
                if isinstance(raw, list):
                    out[name] = [_normalize(r, self.workspace) or r for r in raw]
                else:
                    out[name] = _normalize(raw, self.workspace) or raw
        return out

    async def _join_flight(
        self,
        call: ToolCall,
        tool: ToolLike,
        rank: int,
        started: float,
        key: bytes,
        paths: frozenset[str],
    ) -> ToolResult:
        fkey = (key, self._epoch)
        flight = self._flights.get(fkey)
        leader = flight is None
        if flight is None:
            task = asyncio.ensure_future(self._execute_and_store(call, tool, rank, started, key, paths))
            flight = _Flight(task)
            self._flights[fkey] = flight
            task.add_done_callback(functools.partial(self._end_flight, fkey, flight))
        else:
            self._counts["singleflight_shared"] += 1
            # A real call joining a speculative run queued at low priority must not wait there.
            self._sched.promote(flight.task, rank)
        flight.waiters += 1
        try:
            result = await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # nobody needs it any more: stop the tool too
                await asyncio.wait([flight.task])
            raise
        flight.waiters -= 1
        if leader:
            return result
        return msgspec.structs.replace(
            result,
            call_id=call.id,
            attempts=0,
            cached=True,
            duration_ms=(time.perf_counter() - started) * 1000.0,
            queued_ms=0.0,
            queue_depth=0,
        )

    def _end_flight(self, key: tuple[bytes, int], flight: _Flight, _task: object = None) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def _execute_and_store(
        self,
        call: ToolCall,
        tool: ToolLike,
        rank: int,
        started: float,
        key: bytes,
        paths: frozenset[str],
    ) -> ToolResult:
        assert self.cache is not None
        epoch = self._epoch
        stamps = file_stamps(paths, self.cache.root) if paths != ALL_PATHS else ()
        result = await self._execute(call, tool, rank, started)
        # Stored only if no mutating call started or ended meanwhile: it might have read stale data.
        if not result.is_error and epoch == self._epoch:
            self.cache.put(
                key,
                result,
                nbytes=len(result.content.encode("utf-8")),
                paths=paths,
                stamps=stamps,
            )
        return result

    async def _run_mutating(
        self, call: ToolCall, tool: ToolLike, rank: int, started: float
    ) -> ToolResult:
        paths = call_paths(call.arguments, read_only=False, workspace=self.workspace)
        self._invalidate(paths)
        try:
            return await self._execute(call, tool, rank, started)
        finally:
            self._invalidate(paths)

    def _invalidate(self, paths: frozenset[str] | None) -> None:
        self._epoch += 1
        if self.cache is not None:
            self.cache.invalidate(paths)

    def _breaker(self, name: str) -> CircuitBreaker:
        b = self._breakers.get(name)
        if b is None:
            b = self._breakers[name] = CircuitBreaker(**self._breaker_args)  # type: ignore[arg-type]
        return b

    async def _execute(self, call: ToolCall, tool: ToolLike, rank: int, started: float) -> ToolResult:
        breaker = self._breaker(call.name)
        if not breaker.allow():
            err = ToolError(
                f"circuit open for {call.name}: it failed {breaker.failures} times within "
                f"{breaker.window_s:g} s; calls fail fast for another {breaker.retry_in_s():.1f} s "
                "(breaker state: open)",
                tool=call.name,
                kind="circuit_open",
            )
            return self._error_result(call, err, started, attempts=0)
        attempts = 0
        verdict = False
        queue = _QueueSeen()
        try:
            while True:
                attempts += 1
                waited_from = time.perf_counter()
                depth = await self._sched.acquire(call.name, rank)
                queue.add(time.perf_counter() - waited_from, depth)
                self._counts["executions"] += 1
                try:
                    content = await self._invoke(call, tool)
                    error: BaseException | None = None
                except ToolError as e:
                    error = e
                except Exception as e:  # a tool's own bug must not end the session
                    error = e
                finally:
                    self._sched.release(call.name)
                if error is None:
                    breaker.success()
                    verdict = True
                    return queue.stamp(await self._ok_result(call, content, started, attempts))
                if getattr(error, "retryable", False) and attempts <= self.max_retries:
                    self._counts["retries"] += 1
                    await asyncio.sleep(backoff_s(attempts, self.retry_base_s, self.retry_max_s, self._rng))
                    continue
                kind = error.kind if isinstance(error, ToolError) else "error"
                if kind in _BREAKER_KINDS or getattr(error, "retryable", False):
                    breaker.failure()
                    verdict = True
                return queue.stamp(self._error_result(call, error, started, attempts=attempts, breaker=breaker))
        finally:
            if not verdict:
                breaker.release()

    def timeout_for(self, call: ToolCall) -> float:
        """Seconds ``call`` may run: the tool's ``timeout_s`` (else the pipeline default),
        lowered to the adaptive timeout of its action (:func:`raygent.predictor.action_of`)
        when one is set, unless the call names its own ``timeout_s`` argument (the model
        chose a limit for this call, e.g. a long test run)."""
        tool = self.tools.get(call.name)
        configured = self.default_timeout_s if tool is None or tool.timeout_s is None else tool.timeout_s
        if "timeout_s" in call.arguments:
            return configured
        adaptive = self._adaptive_timeouts_s.get(action_of(call.name, call.arguments))
        return configured if adaptive is None else min(configured, adaptive)

    def set_adaptive_timeouts(self, timeouts_s: Mapping[str, float]) -> None:
        """Replace the adaptive timeouts: action (tool name, or the program a shell tool runs)
        -> seconds. Each only ever lowers the configured timeout (see :meth:`timeout_for`).

        Raises
        ------
        ValueError
            If a timeout is not a positive finite number (nothing is changed then).
        """
        for action, t in timeouts_s.items():
            if not 0 < t < float("inf"):
                raise ValueError(f"adaptive timeout of {action!r} must be positive and finite, got {t}")
        self._adaptive_timeouts_s = dict(timeouts_s)

    async def _invoke(self, call: ToolCall, tool: ToolLike) -> str:
        timeout_s = self.timeout_for(call)
        try:
            # asyncio.timeout, not wait_for: no extra task per call. On expiry the tool's
            # coroutine is cancelled in place (run_command kills its process group).
            async with asyncio.timeout(timeout_s):
                out = await tool.invoke(dict(call.arguments))
        except TimeoutError:
            raise ToolTimeout(
                f"{call.name} did not finish within {timeout_s:g} s and was cancelled",
                tool=call.name,
                timeout_s=timeout_s,
            ) from None
        if isinstance(out, str):
            return out
        if isinstance(out, bytes):
            return out.decode("utf-8", "replace")
        return orjson.dumps(out, default=str).decode()

    # --- results -----------------------------------------------------------------------------

    def _error_result(
        self,
        call: ToolCall,
        error: BaseException,
        started: float,
        *,
        attempts: int,
        breaker: CircuitBreaker | None = None,
    ) -> ToolResult:
        if isinstance(error, ToolError):
            kind, text = error.kind, f"{error.kind}: {error}"
        else:
            kind, text = "error", f"error: {type(error).__name__}: {error}"
        if attempts > 1:
            text += f"\n[failed after {attempts} attempts]"
        if breaker is not None and breaker.state != CLOSED:
            text += f"\n[circuit breaker of {call.name} is now {breaker.state}]"
        self._errors[kind] += 1
        return ToolResult(
            call_id=call.id,
            name=call.name,
            content=cap_output(strip_ansi(text), self.max_output_chars),
            is_error=True,
            error_kind=kind,
            duration_ms=(time.perf_counter() - started) * 1000.0,
            attempts=attempts,
        )

    async def _ok_result(self, call: ToolCall, content: str, started: float, attempts: int) -> ToolResult:
        text = strip_ansi(content)
        spooled: str | None = None
        if self.workspace is not None and len(text) * 4 > self.spool_threshold_bytes:
            data = text.encode("utf-8")
            if len(data) > self.spool_threshold_bytes:
                spooled = await asyncio.to_thread(self._spool, call, data)
                keep = self.spool_threshold_bytes // 4
                head = data[:keep].decode("utf-8", "ignore")
                tail = data[-keep:].decode("utf-8", "ignore")
                left_out = len(data) - len(head.encode()) - len(tail.encode())
                text = (
                    f"{head}\n[... {left_out} bytes left out of {len(data)}; the whole output is "
                    f"in {spooled} (read_file it with offset/limit) ...]\n{tail}"
                )
                self._counts["spooled"] += 1
        return ToolResult(
            call_id=call.id,
            name=call.name,
            content=cap_output(text, self.max_output_chars),
            duration_ms=(time.perf_counter() - started) * 1000.0,
            attempts=attempts,
            spooled_path=spooled,
        )

    def _spool(self, call: ToolCall, data: bytes) -> str:
        assert self.workspace is not None
        directory = self.workspace.root / ".raygent" / "spool"
        directory.mkdir(parents=True, exist_ok=True)
        stem = _SAFE_NAME.sub("_", f"{call.name}-{call.id}")[:100]
        path = directory / f"{stem}-{time.time_ns():x}.txt"
        Path(path).write_bytes(data)
        return path.relative_to(self.workspace.root).as_posix()

    # --- speculation -------------------------------------------------------------------------

    async def prefetch(self, calls: Sequence[ToolCall], *, session_id: str = "") -> list[ToolResult]:
        """Run predicted read-only calls ahead of the model, so their results wait in the cache.

        Parameters
        ----------
        calls : sequence of ToolCall
            Predicted calls (ids are only for the results returned here; nothing of them
            reaches a conversation).
        session_id : str, default ""
            The session they were predicted for. Its previous round's results that no real
            call used are counted as wasted now: a prediction is for the model's next step.

        Returns
        -------
        list of ToolResult
            The results of the calls that were executed (at ``low`` priority). A call is
            skipped when its tool is unknown or not read-only (never run speculatively), when
            the cache is off, or when its result is already cached or being computed.
        """
        self.end_speculation(session_id)
        keys: set[bytes] = set()
        self._spec_rounds[session_id] = keys
        started = time.perf_counter()
        runs: list[tuple[bytes, Awaitable[ToolResult]]] = []
        for call in calls:
            tool = self.tools.get(call.name)
            if tool is None or not tool.read_only or self.cache is None:
                self._spec["refused"] += 1
                continue
            args = self._canonical_args(call.arguments)
            paths = call_paths(args, read_only=True)
            if paths is None:
                self._spec["refused"] += 1
                continue
            key = canonical_key(call.name, args)
            if key in keys or (key, self._epoch) in self._flights or self.cache.peek(key):
                self._spec["skipped"] += 1
                continue
            self._spec["executed"] += 1
            self._spec_unused[key] = session_id
            keys.add(key)
            runs.append((key, self._join_flight(call, tool, PRIORITIES["low"], started, key, paths)))
        results = list(await asyncio.gather(*(run for _, run in runs)))
        for (key, _), result in zip(runs, results):
            # A failure is not cached: nothing is left for a real call to use.
            if result.is_error and self._spec_unused.pop(key, None) is not None:
                self._spec["wasted"] += 1
        return results

    def end_speculation(self, session_id: str) -> int:
        """Close the session's latest speculation round: its results no real call used are
        counted as wasted and forgotten (their cache entries stay, as any read's would).
        Returns how many were wasted."""
        wasted = 0
        for key in self._spec_rounds.pop(session_id, ()):
            if self._spec_unused.pop(key, None) is not None:
                wasted += 1
        self._spec["wasted"] += wasted
        return wasted

    # --- turns -------------------------------------------------------------------------------

    async def run_turn(
        self, calls: Sequence[ToolCall], *, priority: str = "normal", turn_id: str | None = None
    ) -> AsyncIterator[ToolResult]:
        """Run one assistant turn's calls, ordered as the module docs say.

        Parameters
        ----------
        calls : sequence of ToolCall
            The turn's calls, in the model's order.
        priority : str, default "normal"
            Queue priority of every call of the turn (see :data:`PRIORITIES`).
        turn_id : str, optional
            Name under which :meth:`cancel` finds the turn; unique per turn.

        Yields
        ------
        ToolResult
            Each result as soon as its call finishes (completion order). A call cancelled by
            :meth:`cancel` yields an error result of kind ``"cancelled"``.

        Raises
        ------
        ValueError
            If ``priority`` is not one of :data:`PRIORITIES`.

        Notes
        -----
        Closing the iterator early, or cancelling the task that consumes it, cancels the calls
        still running (``run_command`` kills its process group) and waits until they are gone.
        """
        turn = self._turn(calls, priority, turn_id, stream_output=False)
        try:
            async for item in turn:
                if isinstance(item, ToolResult):  # always: no listener, no deltas
                    yield item
        finally:
            await turn.aclose()

    async def stream_turn(
        self, calls: Sequence[ToolCall], *, priority: str = "normal", turn_id: str | None = None
    ) -> AsyncIterator[ToolOutputDelta | ToolResult]:
        """:meth:`run_turn`, with the calls' output streamed while they run.

        Yields
        ------
        ToolOutputDelta or ToolResult
            Output deltas of running calls (bounded as "Streaming output" in the module docs
            says), and each call's result when it finishes, after all of that call's deltas.
            The results are the ones :meth:`run_turn` gives.

        Raises
        ------
        ValueError
            If ``priority`` is not one of :data:`PRIORITIES`.
        """
        turn = self._turn(calls, priority, turn_id, stream_output=True)
        try:
            async for item in turn:
                yield item
        finally:
            await turn.aclose()

    async def _turn(
        self, calls: Sequence[ToolCall], priority: str, turn_id: str | None, *, stream_output: bool
    ) -> AsyncGenerator[ToolOutputDelta | ToolResult, None]:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        # Deltas and results share one queue, so a call's deltas (delivered before its task
        # ends) always come out before its result.
        queue: asyncio.Queue[ToolOutputDelta | ToolResult] = asyncio.Queue()
        on_output = queue.put_nowait if stream_output else None
        started = time.perf_counter()
        planned: list[_Planned] = []
        tasks: list[asyncio.Task[ToolResult]] = []
        for call in calls:
            tool = self.tools.get(call.name)
            ro = tool is None or tool.read_only
            paths = (
                frozenset()
                if tool is None
                else call_paths(call.arguments, read_only=ro, workspace=self.workspace)
            )
            p = _Planned(call, ro, paths)
            deps = [t for q, t in zip(planned, tasks) if _must_wait(p, q)]
            planned.append(p)
            task = asyncio.ensure_future(self._after(deps, call, priority, on_output))
            task.add_done_callback(functools.partial(self._deliver, queue, call, started))
            tasks.append(task)
        if turn_id is not None:
            self._turns[turn_id] = tasks
            if turn_id in self._early_cancels:
                del self._early_cancels[turn_id]
                self.cancel(turn_id)
        try:
            remaining = len(tasks)
            while remaining:
                item = await queue.get()
                if isinstance(item, ToolResult):
                    remaining -= 1
                yield item
        finally:
            if turn_id is not None and self._turns.get(turn_id) is tasks:
                del self._turns[turn_id]
            live = [t for t in tasks if not t.done()]
            for t in live:
                t.cancel()
            if live:
                await asyncio.wait(live)

    def _deliver(
        self,
        queue: asyncio.Queue[ToolOutputDelta | ToolResult],
        call: ToolCall,
        started: float,
        task: asyncio.Task[ToolResult],
    ) -> None:
        if task.cancelled():  # cancelled before it ever ran: _after had no chance to answer
            queue.put_nowait(self._cancelled_result(call, started))
        elif (exc := task.exception()) is not None:
            queue.put_nowait(self._error_result(call, exc, started, attempts=0))
        else:
            queue.put_nowait(task.result())

    async def _after(
        self,
        deps: list[asyncio.Task[ToolResult]],
        call: ToolCall,
        priority: str,
        on_output: Callable[[ToolOutputDelta], None] | None,
    ) -> ToolResult:
        started = time.perf_counter()
        try:
            if deps:
                await asyncio.wait(deps)
            return await self.run_call(call, priority=priority, on_output=on_output)
        except asyncio.CancelledError:
            return self._cancelled_result(call, started)

    def _cancelled_result(self, call: ToolCall, started: float) -> ToolResult:
        self._counts["cancelled"] += 1
        self._errors["cancelled"] += 1
        return ToolResult(
            call_id=call.id,
            name=call.name,
            content="cancelled: the turn was cancelled before this call finished",
            is_error=True,
            error_kind="cancelled",
            duration_ms=(time.perf_counter() - started) * 1000.0,
            attempts=0,
        )

    def cancel(self, turn_id: str) -> int:
        """Cancel the calls of a turn; returns how many were still running or queued.

        Their results arrive from :meth:`run_turn` / :meth:`stream_turn` as errors of kind
        ``"cancelled"``; running subprocesses are killed with their children (SIGTERM to the
        process group, SIGKILL after a grace period) before the results are yielded. A
        ``turn_id`` not running yet is remembered (the last 1024 such ids), so a turn started
        later under it starts cancelled: a cancel sent across Ray may overtake the turn it is
        meant for. Turn ids must therefore be unique.
        """
        tasks = self._turns.get(turn_id)
        if tasks is None:
            self._early_cancels[turn_id] = None
            while len(self._early_cancels) > _EARLY_CANCELS_KEPT:
                self._early_cancels.popitem(last=False)
            return 0
        live = [t for t in tasks if not t.done()]
        for t in live:
            t.cancel()
        return len(live)

    async def run_all(
        self,
        calls: Sequence[ToolCall],
        on_result: Callable[[ToolResult], None] | None = None,
        *,
        priority: str = "normal",
    ) -> list[ToolResult]:
        """Run one turn and return the results in the order of ``calls``."""
        by_id: dict[str, ToolResult] = {}
        async for r in self.run_turn(calls, priority=priority):
            by_id[r.call_id] = r
            if on_result is not None:
                on_result(r)
        return [by_id[c.id] for c in calls]

    # --- metrics -----------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """Counters of this pipeline since it was made.

        Returns
        -------
        dict
            ``calls`` (calls received), ``executions`` (tool runs, retries included),
            ``retries``, ``cancelled``, ``spooled``, ``singleflight_shared`` (calls answered by
            an identical call in flight), ``errors`` (by kind), ``running`` and ``queued`` (now),
            ``queued_by_priority`` (now, priority name -> calls), ``max_queued`` (the most calls
            ever waiting at once),
            ``breakers`` (tool -> ``{"state", "opened"}``) and ``cache`` (``hits``, ``misses``,
            ``evictions``, ``expirations``, ``invalidations``, ``entries``, ``bytes``; empty when
            the cache is off), ``speculative`` (:meth:`prefetch`: ``executed``, ``hits`` (real
            calls answered by a speculative result), ``wasted`` (results no real call used),
            ``pending`` (results that may still be used), ``skipped`` (already cached or
            running), ``refused`` (mutating or unknown tools)) and ``adaptive_timeouts_s``.
        """
        return {
            "calls": self._counts["calls"],
            "executions": self._counts["executions"],
            "retries": self._counts["retries"],
            "cancelled": self._counts["cancelled"],
            "spooled": self._counts["spooled"],
            "singleflight_shared": self._counts["singleflight_shared"],
            "errors": dict(self._errors),
            "running": self._sched.running,
            "queued": self._sched.queued,
            "queued_by_priority": self._sched.queued_by_priority(),
            "max_queued": self._sched.max_queued,
            "breakers": {
                name: {"state": b.state, "opened": b.opened_count} for name, b in self._breakers.items()
            },
            "cache": self.cache.stats() if self.cache is not None else {},
            "speculative": {
                "executed": self._spec["executed"],
                "hits": self._spec["hits"],
                "wasted": self._spec["wasted"],
                "pending": len(self._spec_unused),
                "skipped": self._spec["skipped"],
                "refused": self._spec["refused"],
            },
            "adaptive_timeouts_s": dict(self._adaptive_timeouts_s),
        }
