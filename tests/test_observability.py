"""raygent.observability: the pure collector, its Ray metrics sink and its gen_ai.* spans."""

from __future__ import annotations

import time
import urllib.request

import msgspec
import pytest

from raygent.messages import (
    Done,
    StateChange,
    TextDelta,
    ToolCallStart,
    ToolResult,
    ToolResultChunk,
    Usage,
)
from raygent.observability import (
    GenAISpanSink,
    MetricsCollector,
    MetricsSink,
    RayMetricsSink,
    SessionMetrics,
    percentile,
)
from raygent.pipeline import ToolPipeline
from raygent.providers import ScriptedModel
from raygent.session import Session
from raygent.tools import builtin_tools


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _sc(source: str, target: str) -> StateChange:
    return StateChange(source=source, target=target, trigger="t")


def _result(name: str, ms: float, *, cached: bool = False, error: bool = False) -> ToolResultChunk:
    return ToolResultChunk(
        result=ToolResult(call_id=f"call_{name}_{ms}", name=name, content="x", duration_ms=ms, cached=cached, is_error=error, error_kind="timeout" if error else None)
    )


def _one_prompt(collector: MetricsCollector, clock: Clock) -> None:
    """Prompt -> response with a tool call (first chunk at +50 ms) -> two tools -> answer -> Idle."""
    steps: list[tuple[float, object]] = [
        (0.000, _sc("Idle", "ProcessingPrompt")),
        (0.010, _sc("ProcessingPrompt", "GeneratingResponse")),
        (0.060, ToolCallStart(index=0, id="c1", name="grep")),
        (0.070, Usage(input_tokens=100, output_tokens=20)),
        (0.075, Done(finish_reason="tool_calls")),
        (0.110, _sc("GeneratingResponse", "ExecutingTools")),
        (0.150, _result("grep", 30.0)),
        (0.160, _result("read_file", 2.0, cached=True)),
        (0.170, _sc("ExecutingTools", "GeneratingResponse")),
        (0.190, TextDelta(text="It is in billing.py")),
        (0.200, Usage(input_tokens=150, output_tokens=10)),
        (0.210, Done(finish_reason="stop")),
        (0.270, _sc("GeneratingResponse", "Idle")),
    ]
    start = clock.t
    for at, chunk in steps:
        clock.t = start + at
        collector.observe(chunk)  # type: ignore[arg-type]


def test_percentile_is_linear_interpolation():
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 100.0


def test_figures_from_a_chunk_stream():
    clock = Clock()
    c = MetricsCollector(clock=clock)
    _one_prompt(c, clock)
    m = c.snapshot()
    assert (m.tool_calls, m.tool_errors, m.cache_hits, m.cache_hit_ratio) == (2, 0, 1, 0.5)
    assert m.tool_latency_p50_ms == pytest.approx(16.0)
    assert m.turns == 2
    # Turn 1: 10 ms -> 110 ms; turn 2: 170 ms -> 270 ms.
    assert m.turn_latency_p50_ms == pytest.approx(100.0)
    # First chunks at +50 ms and +20 ms after each turn's start.
    assert sorted([m.time_to_first_token_p50_ms, m.time_to_first_token_p99_ms]) == pytest.approx([35.0, 49.7])
    assert m.prompts == 1 and m.prompt_latency_p50_ms == pytest.approx(270.0)
    assert (m.input_tokens, m.output_tokens) == (250, 30)
    assert m.state_transitions == {
        "Idle->ProcessingPrompt": 1,
        "ProcessingPrompt->GeneratingResponse": 1,
        "GeneratingResponse->ExecutingTools": 1,
        "ExecutingTools->GeneratingResponse": 1,
        "GeneratingResponse->Idle": 1,
    }
    # A msgspec Struct: it crosses Ray and the CLI as msgpack or JSON.
    assert msgspec.json.decode(msgspec.json.encode(m), type=SessionMetrics) == m


def test_empty_collector_and_window_bound():
    c = MetricsCollector(window=10)
    empty = c.snapshot()
    assert empty.tool_latency_p99_ms is None and empty.cache_hit_ratio is None and empty.turns == 0
    for ms in range(100):
        c.record_tool("grep", float(ms))
    m = c.snapshot()
    assert m.tool_calls == 100  # counts are totals
    assert m.tool_latency_p50_ms == pytest.approx(94.5)  # percentiles over the last 10 only
    c.record_tool("grep", 1.0, queued_ms=4.0, queue_depth=7)
    c.record_tool("grep", 1.0, queued_ms=2.0, queue_depth=2)
    c.record_tool("grep", 1.0, cached=True, queued_ms=9.0, queue_depth=9)  # cached: not counted
    assert (c.snapshot().queue_depth, c.snapshot().max_queue_depth) == (2, 7)
    with pytest.raises(ValueError):
        MetricsCollector(window=0)


def test_sinks_hear_every_event_in_order():
    events: list[tuple] = []

    class Recorder(MetricsSink):
        def prompt_started(self) -> None:
            events.append(("prompt_started",))

        def prompt_ended(self, latency_ms, final_state) -> None:
            events.append(("prompt_ended", round(latency_ms), final_state))

        def turn_started(self) -> None:
            events.append(("turn_started",))

        def first_token(self, ttft_ms) -> None:
            events.append(("first_token", round(ttft_ms)))

        def turn_ended(self, latency_ms, input_tokens, output_tokens, finish_reason) -> None:
            events.append(("turn_ended", round(latency_ms), input_tokens, output_tokens, finish_reason))

        def tool_finished(self, name, call_id, duration_ms, cached, is_error, error_kind) -> None:
            events.append(("tool", name, cached))

    clock = Clock()
    c = MetricsCollector(clock=clock, sinks=[Recorder()])
    _one_prompt(c, clock)
    assert events == [
        ("prompt_started",),
        ("turn_started",),
        ("first_token", 50),
        ("turn_ended", 100, 100, 20, "tool_calls"),
        ("tool", "grep", False),
        ("tool", "read_file", True),
        ("turn_started",),
        ("first_token", 20),
        ("turn_ended", 100, 150, 10, "stop"),
        ("prompt_ended", 270, "Idle"),
    ]


async def test_collector_over_a_real_scripted_session(tmp_path):
    (tmp_path / "billing.py").write_text("def compute_invoice(total):\n    return round(total, 2)\n")
    pipeline = ToolPipeline(builtin_tools(tmp_path))
    session = Session(
        provider=ScriptedModel(),
        run_tools=pipeline.run_turn,
        tool_schemas=[t.schema for t in pipeline.tools.values()],
    )
    c = MetricsCollector()
    async for chunk in session.run("Where is invoice rounding?"):
        c.observe(chunk)
    m = c.snapshot()
    assert m.turns == session.stats.turns > 1
    assert m.tool_calls == session.stats.tool_calls > 0
    assert m.prompts == 1 and m.time_to_first_token_p50_ms is not None
    assert m.state_transitions["GeneratingResponse->Idle"] == 1
    assert sum(m.state_transitions.values()) == len(session.machine.history)


# --- OpenTelemetry ------------------------------------------------------------------------------


def test_gen_ai_spans():
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk not installed")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    assert GenAISpanSink.available()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = GenAISpanSink(model="gpt-4.1", provider="openai", session_id="s-42", tracer=provider.get_tracer("test"))
    clock = Clock()
    c = MetricsCollector(clock=clock, sinks=[sink])
    _one_prompt(c, clock)
    c.observe(_sc("Idle", "ProcessingPrompt"))
    c.observe(_sc("ProcessingPrompt", "GeneratingResponse"))
    c.observe(_sc("GeneratingResponse", "ExecutingTools"))
    c.observe(_result("run_command", 5.0, error=True))
    c.observe(StateChange(source="ExecutingTools", target="Error", trigger="tool_timeout"))

    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert names == [
        "chat gpt-4.1",
        "execute_tool grep",
        "execute_tool read_file",
        "chat gpt-4.1",
        "invoke_agent raygent",
        "chat gpt-4.1",
        "execute_tool run_command",
        "invoke_agent raygent",
    ]
    agent = spans[4]
    for s in spans[:4]:
        assert s.parent is not None and s.parent.span_id == agent.context.span_id
        assert s.context.trace_id == agent.context.trace_id
        assert s.attributes["gen_ai.conversation.id"] == "s-42"
        assert s.attributes["gen_ai.provider.name"] == "openai"
    chat = spans[0]
    assert chat.kind is SpanKind.CLIENT
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4.1"
    assert (chat.attributes["gen_ai.usage.input_tokens"], chat.attributes["gen_ai.usage.output_tokens"]) == (100, 20)
    assert tuple(chat.attributes["gen_ai.response.finish_reasons"]) == ("tool_calls",)
    tool = spans[1]
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "grep"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_grep_30.0"
    assert (tool.end_time - tool.start_time) == 30_000_000  # the tool's own 30 ms
    failed = spans[6]
    assert failed.attributes["error.type"] == "timeout" and failed.status.status_code is StatusCode.ERROR
    assert spans[7].status.status_code is StatusCode.ERROR


# --- Ray metrics --------------------------------------------------------------------------------


def test_ray_sink_needs_ray():
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is already initialized in this process")
    with pytest.raises(RuntimeError):
        RayMetricsSink()


@pytest.mark.ray
def test_ray_metrics_recorded_in_a_worker_and_exported(ray_cluster):
    ray = ray_cluster
    from raygent.observability import QueueDepthGauge
    from raygent.observability import RayMetricsSink as Sink

    @ray.remote(num_cpus=0)
    def record() -> tuple[dict, list]:
        sink = Sink(tags={"actor": "test-observability"})
        c = MetricsCollector(sinks=[sink])
        for ms in (3.0, 40.0, 700.0):
            c.record_tool("grep", ms)
        c.record_tool("read_file", 1.0, cached=True)
        c.record_transition("Idle", "ProcessingPrompt")
        c.record_tool("run_command", 2.0, queued_ms=30.0, queue_depth=5)
        queue = QueueDepthGauge(tags={"actor": "test-observability"})
        queue.set({"critical": 0, "high": 0, "normal": 5, "low": 1})
        infos = [m.info for m in (sink.tool_latency, sink.tool_calls, sink.queue_wait, sink.transitions, queue.gauge)]
        return msgspec.to_builtins(c.snapshot()), [(i["name"], tuple(i["tag_keys"]), i["default_tags"]) for i in infos]

    snap, infos = ray.get(record.remote())
    assert snap["tool_calls"] == 5 and snap["cache_hit_ratio"] == 0.2 and snap["max_queue_depth"] == 5
    assert infos == [
        ("raygent_tool_latency_ms", ("actor", "tool", "status", "cached"), {"actor": "test-observability"}),
        ("raygent_tool_calls", ("actor", "tool", "status", "cached"), {"actor": "test-observability"}),
        ("raygent_tool_queue_wait_ms", ("actor", "tool"), {"actor": "test-observability"}),
        ("raygent_state_transitions", ("actor", "source", "target"), {"actor": "test-observability"}),
        ("raygent_queue_depth", ("actor", "priority"), {"actor": "test-observability"}),
    ]

    port = getattr(ray._private.worker.global_worker.node, "metrics_export_port", None)
    if not port or port < 0:
        pytest.skip("Ray runs without its metrics agent here (minimal install, no ray[default]): nothing to scrape")
    url = f"http://127.0.0.1:{port}/metrics"
    text = ""
    deadline = time.monotonic() + 40  # bounded: a few of Ray's 10 s report intervals
    while time.monotonic() < deadline:
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            text = ""
        if all(f"raygent_{m}" in text for m in ("tool_latency_ms", "state_transitions", "queue_depth", "tool_queue_wait_ms")):
            break
        time.sleep(1.0)
    lines = [ln for ln in text.splitlines() if ln.startswith("ray_raygent_") and 'actor="test-observability"' in ln]
    assert any(ln.startswith("ray_raygent_tool_latency_ms_count") and 'tool="grep"' in ln and ln.endswith(" 3.0") for ln in lines), lines
    assert any(ln.startswith("ray_raygent_state_transitions") and 'target="ProcessingPrompt"' in ln for ln in lines), lines
    assert any(ln.startswith("ray_raygent_queue_depth") and 'priority="normal"' in ln and ln.endswith(" 5.0") for ln in lines), lines
    assert any(ln.startswith("ray_raygent_tool_queue_wait_ms_count") and 'tool="run_command"' in ln for ln in lines), lines


@pytest.mark.ray
def test_agent_metrics_on_ray(ray_cluster, tmp_path):
    import raygent

    (tmp_path / "billing.py").write_text("def compute_invoice(total):\n    return round(total, 2)\n")
    agent = raygent.Agent(workspace=tmp_path, model="scripted")
    try:
        result = agent.run("Where is invoice rounding?")
        m = agent.metrics()
        status = agent.status()
    finally:
        agent.close()
    assert isinstance(m, SessionMetrics)
    assert m.prompts == 1
    assert m.turns == result.turns == status["stats"]["turns"]
    assert m.tool_calls == len(result.tool_calls) > 0
    assert m.tool_latency_p50_ms is not None and m.time_to_first_token_p50_ms is not None
    assert sum(m.state_transitions.values()) == len(status["transitions"])
