"""Figures of a running agent: one pure collector, fed to Ray metrics and OpenTelemetry spans.

:class:`MetricsCollector` turns what a session does into figures: it reads the chunks a
:class:`~raygent.session.Session` yields (:meth:`MetricsCollector.observe`: state changes, first
tokens, usage, tool results with what they met in the tool pipeline's queue) or takes explicit
records, and :meth:`MetricsCollector.snapshot` returns them as a :class:`SessionMetrics` msgspec Struct
(percentiles over the last ``window`` samples). It knows nothing of Ray or OpenTelemetry; it
forwards every event to its sinks:

- :class:`RayMetricsSink` records ``ray.util.metrics`` Histograms, Counters and Gauges (exported by
  Ray's metrics agent in Prometheus format) when it runs inside a Ray worker or driver;
- :class:`QueueDepthGauge` is the one figure that belongs to no session: the calls waiting in a
  ``ToolActor``'s pipeline now, by priority, set by the pipeline as its queue changes;
- :class:`GenAISpanSink` emits OpenTelemetry spans following the GenAI semantic conventions
  (``invoke_agent``, ``chat``, ``execute_tool`` with ``gen_ai.*`` attributes) when
  ``opentelemetry`` is importable; raygent does not depend on it.

Definitions (milliseconds, monotonic clock): a *turn* is one model response, from entering
``GeneratingResponse`` to leaving it; *time to first token* runs from the same start to the
first text, reasoning or tool-call chunk of that response; a *prompt* runs from
``ProcessingPrompt`` to the next ``Idle`` or ``Error``; *tool latency* is the tool's own
``ToolResult.duration_ms``. The cache hit ratio counts tool results served from the result
cache (``ToolResult.cached``) over all tool results. *Queue wait* is ``ToolResult.queued_ms``
and *queue depth* ``ToolResult.queue_depth`` (what the call met in the pipeline's queue), taken
from the results not served from the cache.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from raygent.messages import (
    Chunk,
    Done,
    ReasoningDelta,
    StateChange,
    TextDelta,
    ToolCallStart,
    ToolResultChunk,
    Usage,
)

__all__ = [
    "SessionMetrics",
    "MetricsCollector",
    "MetricsSink",
    "RayMetricsSink",
    "QueueDepthGauge",
    "GenAISpanSink",
    "percentile",
    "default_sinks",
    "LATENCY_BOUNDARIES_MS",
]

#: Histogram bucket bounds (milliseconds) for tool, turn, prompt and first-token latencies: from
#: a cached read (about 1 ms) to a long shell command (a minute).
LATENCY_BOUNDARIES_MS: tuple[float, ...] = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000)

_GENERATING = "GeneratingResponse"
_PROCESSING = "ProcessingPrompt"
_PROMPT_ENDS = frozenset({"Idle", "Error", "Shutdown"})


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) of ascending values by linear interpolation; None when empty.

    The same definition as NumPy's default (``method="linear"``): rank ``q * (n - 1)``.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    rank = q * (n - 1)
    low = int(rank)
    high = min(low + 1, n - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


class SessionMetrics(msgspec.Struct, frozen=True):
    """The figures of one session (or of one actor's sessions), as :meth:`MetricsCollector.snapshot` gives them.

    Latencies are milliseconds; percentiles are over the last ``window`` samples and None before
    the first one. ``state_transitions`` maps ``"Source->Target"`` to its count. ``queue_depth``
    is the tool-pipeline queue depth the latest executed call met (calls waiting, itself
    included; 0 when a slot was free), ``max_queue_depth`` the largest any call met, and
    ``queue_wait_p50_ms`` / ``queue_wait_p99_ms`` the time calls waited for a slot (results
    served from the cache left out).
    """

    tool_calls: int = 0
    tool_errors: int = 0
    tool_latency_p50_ms: float | None = None
    tool_latency_p99_ms: float | None = None
    cache_hits: int = 0
    cache_hit_ratio: float | None = None
    queue_depth: int = 0
    max_queue_depth: int = 0
    queue_wait_p50_ms: float | None = None
    queue_wait_p99_ms: float | None = None
    turns: int = 0
    turn_latency_p50_ms: float | None = None
    turn_latency_p99_ms: float | None = None
    time_to_first_token_p50_ms: float | None = None
    time_to_first_token_p99_ms: float | None = None
    prompts: int = 0
    prompt_latency_p50_ms: float | None = None
    prompt_latency_p99_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    state_transitions: dict[str, int] = {}


class MetricsSink:
    """Receives every event a :class:`MetricsCollector` records; each hook does nothing by default.

    Subclass and override the hooks you need. Latencies are milliseconds.
    """

    def prompt_started(self) -> None:
        """A prompt entered ``ProcessingPrompt``."""

    def prompt_ended(self, latency_ms: float, final_state: str) -> None:
        """The prompt reached ``Idle``, ``Error`` or ``Shutdown`` after ``latency_ms``."""

    def turn_started(self) -> None:
        """A model response began (``GeneratingResponse``)."""

    def first_token(self, ttft_ms: float) -> None:
        """The response's first text, reasoning or tool-call chunk arrived."""

    def turn_ended(self, latency_ms: float, input_tokens: int, output_tokens: int, finish_reason: str | None) -> None:
        """The model response ended; tokens as the provider reported for it (0 if it did not)."""

    def tool_finished(
        self, name: str, call_id: str, duration_ms: float, cached: bool, is_error: bool, error_kind: str | None
    ) -> None:
        """A tool call finished (or was served from the cache)."""

    def tool_queued(self, name: str, queued_ms: float, queue_depth: int) -> None:
        """A tool call not served from the cache waited ``queued_ms`` for a slot, meeting
        ``queue_depth`` calls in the queue (0 and 0 when a slot was free); heard after
        :meth:`tool_finished`."""

    def transition(self, source: str, target: str) -> None:
        """The state machine moved."""


class MetricsCollector:
    """Pure collector of a session's figures (no Ray, no OpenTelemetry, no threads).

    Parameters
    ----------
    window : int, default 4096
        Latency samples kept per figure for the percentiles (the oldest are dropped first).
    sinks : iterable of MetricsSink
        Receive every event as it is recorded (:class:`RayMetricsSink`, :class:`GenAISpanSink`).
    clock : callable, default ``time.perf_counter``
        Monotonic seconds; tests pass their own.
    """

    def __init__(
        self,
        *,
        window: int = 4096,
        sinks: Iterable[MetricsSink] = (),
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.sinks = list(sinks)
        self._clock = clock
        self._tool_ms: deque[float] = deque(maxlen=window)
        self._turn_ms: deque[float] = deque(maxlen=window)
        self._ttft_ms: deque[float] = deque(maxlen=window)
        self._prompt_ms: deque[float] = deque(maxlen=window)
        self._queue_wait_ms: deque[float] = deque(maxlen=window)
        self._transitions: dict[str, int] = {}
        self.tool_calls = self.tool_errors = self.cache_hits = 0
        self.turns = self.prompts = 0
        self.input_tokens = self.output_tokens = 0
        self._queue_depth = self._max_queue_depth = 0
        # Open spans of the chunk stream (monotonic start times, None when closed).
        self._prompt_t0: float | None = None
        self._turn_t0: float | None = None
        self._first_seen = False
        self._turn_usage = (0, 0)
        self._turn_finish: str | None = None

    # --- explicit records ---------------------------------------------------------------------

    def record_tool(
        self,
        name: str,
        duration_ms: float,
        *,
        call_id: str = "",
        cached: bool = False,
        is_error: bool = False,
        error_kind: str | None = None,
        queued_ms: float = 0.0,
        queue_depth: int = 0,
    ) -> None:
        """One finished tool call; ``queued_ms`` and ``queue_depth`` are what it met in the
        tool pipeline's queue (``ToolResult``'s fields), ignored for a cached result."""
        self.tool_calls += 1
        self.tool_errors += is_error
        self.cache_hits += cached
        self._tool_ms.append(duration_ms)
        if not cached:
            self._queue_wait_ms.append(queued_ms)
            self._queue_depth = queue_depth
            self._max_queue_depth = max(self._max_queue_depth, queue_depth)
        for sink in self.sinks:
            sink.tool_finished(name, call_id, duration_ms, cached, is_error, error_kind)
            if not cached:
                sink.tool_queued(name, queued_ms, queue_depth)

    def record_transition(self, source: str, target: str) -> None:
        """One state transition (``AgentState`` values)."""
        key = f"{source}->{target}"
        self._transitions[key] = self._transitions.get(key, 0) + 1
        for sink in self.sinks:
            sink.transition(source, target)

    # --- the chunk stream ---------------------------------------------------------------------

    def observe(self, chunk: Chunk, now: float | None = None) -> None:
        """Take one chunk of a session's stream, in the order the session yielded them.

        ``now`` is the monotonic time (seconds) the chunk was seen; default the collector's clock.
        """
        t = self._clock() if now is None else now
        if isinstance(chunk, StateChange):
            self._on_state(chunk.source, chunk.target, t)
        elif isinstance(chunk, (TextDelta, ReasoningDelta, ToolCallStart)):
            if self._turn_t0 is not None and not self._first_seen:
                self._first_seen = True
                ttft = (t - self._turn_t0) * 1000.0
                self._ttft_ms.append(ttft)
                for sink in self.sinks:
                    sink.first_token(ttft)
        elif isinstance(chunk, Usage):
            self.input_tokens += chunk.input_tokens
            self.output_tokens += chunk.output_tokens
            i, o = self._turn_usage
            self._turn_usage = (i + chunk.input_tokens, o + chunk.output_tokens)
        elif isinstance(chunk, Done):
            self._turn_finish = chunk.finish_reason
        elif isinstance(chunk, ToolResultChunk):
            r = chunk.result
            self.record_tool(
                r.name, r.duration_ms, call_id=r.call_id, cached=r.cached, is_error=r.is_error,
                error_kind=r.error_kind, queued_ms=r.queued_ms, queue_depth=r.queue_depth,
            )

    def _on_state(self, source: str, target: str, t: float) -> None:
        if source == _GENERATING and self._turn_t0 is not None:
            latency = (t - self._turn_t0) * 1000.0
            self.turns += 1
            self._turn_ms.append(latency)
            (inp, out), finish = self._turn_usage, self._turn_finish
            self._turn_t0 = None
            for sink in self.sinks:
                sink.turn_ended(latency, inp, out, finish)
        self.record_transition(source, target)
        if target == _PROCESSING:
            self._prompt_t0 = t
            for sink in self.sinks:
                sink.prompt_started()
        elif target == _GENERATING:
            self._turn_t0, self._first_seen, self._turn_usage, self._turn_finish = t, False, (0, 0), None
            for sink in self.sinks:
                sink.turn_started()
        elif target in _PROMPT_ENDS and self._prompt_t0 is not None:
            latency = (t - self._prompt_t0) * 1000.0
            self.prompts += 1
            self._prompt_ms.append(latency)
            self._prompt_t0 = None
            for sink in self.sinks:
                sink.prompt_ended(latency, target)

    # --- figures ------------------------------------------------------------------------------

    def snapshot(self) -> SessionMetrics:
        """The figures now."""
        tool, turn, ttft, prompt, wait = (
            sorted(d) for d in (self._tool_ms, self._turn_ms, self._ttft_ms, self._prompt_ms, self._queue_wait_ms)
        )
        return SessionMetrics(
            tool_calls=self.tool_calls,
            tool_errors=self.tool_errors,
            tool_latency_p50_ms=percentile(tool, 0.50),
            tool_latency_p99_ms=percentile(tool, 0.99),
            cache_hits=self.cache_hits,
            cache_hit_ratio=self.cache_hits / self.tool_calls if self.tool_calls else None,
            queue_depth=self._queue_depth,
            max_queue_depth=self._max_queue_depth,
            queue_wait_p50_ms=percentile(wait, 0.50),
            queue_wait_p99_ms=percentile(wait, 0.99),
            turns=self.turns,
            turn_latency_p50_ms=percentile(turn, 0.50),
            turn_latency_p99_ms=percentile(turn, 0.99),
            time_to_first_token_p50_ms=percentile(ttft, 0.50),
            time_to_first_token_p99_ms=percentile(ttft, 0.99),
            prompts=self.prompts,
            prompt_latency_p50_ms=percentile(prompt, 0.50),
            prompt_latency_p99_ms=percentile(prompt, 0.99),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            state_transitions=dict(self._transitions),
        )


class RayMetricsSink(MetricsSink):
    """Records the collector's events as ``ray.util.metrics`` (Prometheus via Ray's metrics agent).

    Metrics (names as Prometheus shows them, with Ray's ``ray_`` prefix):

    ``raygent_tool_latency_ms`` (Histogram; tags ``tool``, ``status`` = ok/error, ``cached``),
    ``raygent_tool_calls`` (Counter; same tags), ``raygent_cache_hit_ratio`` (Gauge),
    ``raygent_tool_queue_wait_ms`` (Histogram; tag ``tool``: each uncached call's wait for a slot),
    ``raygent_turn_latency_ms``, ``raygent_time_to_first_token_ms``,
    ``raygent_prompt_latency_ms`` (Histograms), ``raygent_state_transitions`` (Counter; tags
    ``source``, ``target``). Every metric also carries the ``tags`` given here (for example the
    actor's name); session ids are not tags, since one label value per session would make the
    series count grow without bound.

    Parameters
    ----------
    tags : dict of str to str, optional
        Constant tags of every metric.
    boundaries_ms : sequence of float, default :data:`LATENCY_BOUNDARIES_MS`
        Histogram bucket bounds.

    Raises
    ------
    RuntimeError
        If Ray is not initialized in this process (metrics need a Ray worker or driver).
    """

    def __init__(self, *, tags: dict[str, str] | None = None, boundaries_ms: Sequence[float] = LATENCY_BOUNDARIES_MS) -> None:
        import ray
        from ray.util import metrics

        if not ray.is_initialized():
            raise RuntimeError("RayMetricsSink needs Ray: call raygent.init() or ray.init() first")
        self.tags = dict(tags or {})
        base = tuple(self.tags)
        bounds = list(boundaries_ms)

        def hist(name: str, description: str, keys: tuple[str, ...] = ()) -> Any:
            h = metrics.Histogram(name, description=description, boundaries=bounds, tag_keys=base + keys)
            h.set_default_tags(self.tags)
            return h

        self.tool_latency = hist("raygent_tool_latency_ms", "Tool call duration (ms)", ("tool", "status", "cached"))
        self.tool_calls = metrics.Counter("raygent_tool_calls", description="Tool calls finished", tag_keys=base + ("tool", "status", "cached"))
        self.cache_hit_ratio = metrics.Gauge("raygent_cache_hit_ratio", description="Tool results served from the cache / all tool results", tag_keys=base)
        self.queue_wait = hist("raygent_tool_queue_wait_ms", "Time a tool call waited for a pipeline slot (ms)", ("tool",))
        self.turn_latency = hist("raygent_turn_latency_ms", "Model response duration (ms)")
        self.ttft = hist("raygent_time_to_first_token_ms", "Time to the first chunk of a model response (ms)")
        self.prompt_latency = hist("raygent_prompt_latency_ms", "Prompt to answer duration (ms)")
        self.transitions = metrics.Counter("raygent_state_transitions", description="Agent state transitions", tag_keys=base + ("source", "target"))
        for m in (self.tool_calls, self.cache_hit_ratio, self.transitions):
            m.set_default_tags(self.tags)
        self._calls = 0
        self._hits = 0

    def tool_finished(
        self, name: str, call_id: str, duration_ms: float, cached: bool, is_error: bool, error_kind: str | None
    ) -> None:
        tags = {"tool": name, "status": "error" if is_error else "ok", "cached": "true" if cached else "false"}
        self.tool_latency.observe(duration_ms, tags=tags)
        self.tool_calls.inc(1.0, tags=tags)
        self._calls += 1
        self._hits += cached
        self.cache_hit_ratio.set(self._hits / self._calls)

    def tool_queued(self, name: str, queued_ms: float, queue_depth: int) -> None:
        self.queue_wait.observe(queued_ms, tags={"tool": name})

    def turn_ended(self, latency_ms: float, input_tokens: int, output_tokens: int, finish_reason: str | None) -> None:
        self.turn_latency.observe(latency_ms)

    def first_token(self, ttft_ms: float) -> None:
        self.ttft.observe(ttft_ms)

    def prompt_ended(self, latency_ms: float, final_state: str) -> None:
        self.prompt_latency.observe(latency_ms)

    def transition(self, source: str, target: str) -> None:
        self.transitions.inc(1.0, tags={"source": source, "target": target})


class QueueDepthGauge:
    """``raygent_queue_depth`` (a ``ray.util.metrics`` Gauge; tag ``priority``, plus the constant
    ``tags``): tool calls waiting for a slot in one ``ToolActor``'s pipeline now.

    Pass :meth:`set` as the pipeline's ``on_queue_change``; only the priorities whose count
    changed are written.

    Parameters
    ----------
    tags : dict of str to str, optional
        Constant tags (the ``ToolActor`` sets ``workspace``).

    Raises
    ------
    RuntimeError
        If Ray is not initialized in this process.
    """

    def __init__(self, *, tags: dict[str, str] | None = None) -> None:
        import ray
        from ray.util import metrics

        if not ray.is_initialized():
            raise RuntimeError("QueueDepthGauge needs Ray: call raygent.init() or ray.init() first")
        self.tags = dict(tags or {})
        self.gauge = metrics.Gauge(
            "raygent_queue_depth",
            description="Tool calls waiting for a slot in a ToolActor's pipeline",
            tag_keys=(*self.tags, "priority"),
        )
        self.gauge.set_default_tags(self.tags)
        self.last: dict[str, int] = {}

    def set(self, by_priority: dict[str, int]) -> None:
        """Record the calls waiting now, priority name -> count."""
        for priority, n in by_priority.items():
            if self.last.get(priority) != n:
                self.gauge.set(n, tags={"priority": priority})
                self.last[priority] = n


class GenAISpanSink(MetricsSink):
    """OpenTelemetry spans per the GenAI semantic conventions, from the collector's events.

    One ``invoke_agent {agent}`` span per prompt; inside it one ``chat {model}`` span per model
    response (kind CLIENT; ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
    ``gen_ai.response.finish_reasons``) and one ``execute_tool {tool}`` span per tool call
    (``gen_ai.tool.name``, ``gen_ai.tool.call.id``, ``gen_ai.tool.type``; ``error.type`` when it
    failed), timed from the tool's own duration. Every span carries ``gen_ai.operation.name``,
    ``gen_ai.provider.name`` and ``gen_ai.conversation.id`` (the session id).

    Parameters
    ----------
    model : str
        ``gen_ai.request.model``.
    provider : str
        ``gen_ai.provider.name`` (``"openai"``, ``"anthropic"``, ``"raygent.scripted"`` ...).
    session_id : str
        ``gen_ai.conversation.id``.
    agent_name : str, default "raygent"
        ``gen_ai.agent.name``.
    tracer : opentelemetry.trace.Tracer, optional
        Default: ``opentelemetry.trace.get_tracer("raygent")`` (the globally configured provider).

    Raises
    ------
    ImportError
        If ``opentelemetry`` is not installed (see :meth:`available`).
    """

    @staticmethod
    def available() -> bool:
        """True when ``opentelemetry`` can be imported."""
        try:
            import opentelemetry.trace  # noqa: F401
        except ImportError:
            return False
        return True

    def __init__(self, *, model: str, provider: str, session_id: str, agent_name: str = "raygent", tracer: Any = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer if tracer is not None else trace.get_tracer("raygent")
        self.model = model
        self._common = {
            "gen_ai.provider.name": provider,
            "gen_ai.conversation.id": session_id,
            "gen_ai.agent.name": agent_name,
        }
        self.agent_name = agent_name
        self._agent_span: Any = None
        self._chat_span: Any = None

    def _context(self) -> Any:
        return self._trace.set_span_in_context(self._agent_span) if self._agent_span is not None else None

    def prompt_started(self) -> None:
        self._agent_span = self._tracer.start_span(
            f"invoke_agent {self.agent_name}",
            kind=self._trace.SpanKind.INTERNAL,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": self.model, **self._common},
        )

    def prompt_ended(self, latency_ms: float, final_state: str) -> None:
        if self._agent_span is None:
            return
        if final_state == "Error":
            self._agent_span.set_attribute("error.type", "agent_error")
            self._agent_span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        self._agent_span.end()
        self._agent_span = None

    def turn_started(self) -> None:
        self._chat_span = self._tracer.start_span(
            f"chat {self.model}",
            context=self._context(),
            kind=self._trace.SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": self.model, **self._common},
        )

    def turn_ended(self, latency_ms: float, input_tokens: int, output_tokens: int, finish_reason: str | None) -> None:
        span, self._chat_span = self._chat_span, None
        if span is None:
            return
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
        span.end()

    def tool_finished(
        self, name: str, call_id: str, duration_ms: float, cached: bool, is_error: bool, error_kind: str | None
    ) -> None:
        end_ns = time.time_ns()
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
            **self._common,
        }
        if is_error:
            attributes["error.type"] = error_kind or "error"
        span = self._tracer.start_span(
            f"execute_tool {name}",
            context=self._context(),
            kind=self._trace.SpanKind.INTERNAL,
            attributes=attributes,
            start_time=end_ns - int(duration_ms * 1_000_000),
        )
        if is_error:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end(end_time=end_ns)


_RAY_SINKS: dict[str, RayMetricsSink] = {}


def default_sinks(*, model: str, provider: str, session_id: str) -> list[MetricsSink]:
    """The sinks a running agent feeds: Ray metrics inside Ray, gen_ai.* spans with opentelemetry.

    Spans go to the globally configured ``TracerProvider``; with none configured the
    OpenTelemetry API's no-op tracer drops them at almost no cost. The Ray sink is created once
    per process and shared by every session of it (its cache-hit gauge is the process's).
    """
    import ray

    sinks: list[MetricsSink] = []
    if ray.is_initialized():
        # One per process (and Ray job), shared by its sessions: each RayMetricsSink registers
        # eight ray.util.metrics objects, and an agent shard hosts thousands of sessions (the
        # metrics carry no session tag, so sharing changes no series).
        context = ray.get_runtime_context()
        # The node too: job ids start again from 1 on a new cluster in the same process.
        key = f"{context.get_node_id()}:{context.get_job_id()}"
        if key not in _RAY_SINKS:
            _RAY_SINKS[key] = RayMetricsSink()
        sinks.append(_RAY_SINKS[key])
    if GenAISpanSink.available():
        sinks.append(GenAISpanSink(model=model, provider=provider, session_id=session_id))
    return sinks
