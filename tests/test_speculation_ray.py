"""Speculative execution through the real actors on a real local Ray cluster.

The model is an OpenAI-compatible endpoint on 127.0.0.1 (a real HTTP server in this process):
turn 1 asks for a grep, turn 2 for a read of the file the grep found, turn 3 answers. The
server holds turn 2 until the ToolActor reports the speculative read done, as a real model's
latency would, so the test does not depend on which Ray message arrives first.
"""

import asyncio
import json
import threading
import time

import pytest

from _http_server import LoopbackServer
from raygent.actors import AgentActor, AgentSpec, PredictorActor, ToolActor, decode_history
from raygent.messages import (
    AssistantMessage,
    Chunk,
    ToolMessage,
    ToolResultChunk,
    decode,
    encode,
)
from raygent.predictor import ToolEvent
from raygent.providers._spec import ProviderSpec
from raygent.runtime import _remote

pytestmark = pytest.mark.ray

WAIT_ROUNDS = 600  # x 0.05 s: the most the server waits for the speculation
PAST = 20  # earlier sessions: enough calls of grep and read_file for adaptive timeouts


def _sse(delta: dict, finish: str | None) -> bytes:
    events = [
        {"id": "c", "object": "chat.completion.chunk", "model": "m",
         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {"id": "c", "object": "chat.completion.chunk", "model": "m",
         "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
    ]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def _tool_call(call_id: str, name: str, arguments: dict) -> bytes:
    return _sse({"role": "assistant", "tool_calls": [{
        "index": 0, "id": call_id, "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }]}, "tool_calls")


def _plan(body: bytes, before=None):
    async def plan(writer: asyncio.StreamWriter) -> None:
        if before is not None:
            await asyncio.to_thread(before)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        await writer.drain()

    return plan


class ThreadedServer:
    """The loopback server on its own event loop in a thread (the Ray driver API is blocking)."""

    def __init__(self) -> None:
        self.srv = LoopbackServer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.srv.start(), self.loop).result(timeout=10)
        return self.srv

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.srv.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def test_predicted_read_is_served_from_cache_on_ray(ray_cluster, tmp_path):
    ray = ray_cluster
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "scheduler.py").write_text("class Scheduler:\n    pass\n")
    (tmp_path / "pkg" / "other.py").write_text("VALUE = 1\n")
    # Actors of this test only: the job-wide predictor of raygent.Agent stays untouched.
    tools = _remote(ToolActor).remote(str(tmp_path))
    predictor = _remote(PredictorActor).remote()
    past = []
    for i in range(PAST):  # earlier sessions: grep, then read the first file it found
        hit = f"lib/mod{i}.py"
        past += [
            ToolEvent(f"past{i}", "grep", 300.0 + i, arguments={"pattern": f"p{i}"},
                      result_excerpt=f"{hit}:1: p{i}\n"),
            ToolEvent(f"past{i}", "read_file", 1.0, arguments={"path": hit}),
        ]
    ray.get(predictor.observe.remote(encode(past)))
    ray.get([predictor.end_session.remote(f"past{i}") for i in range(PAST)])

    def speculation_done() -> None:
        for _ in range(WAIT_ROUNDS):
            if ray.get(tools.metrics.remote())["speculative"]["pending"] >= 1:
                return
            time.sleep(0.05)

    with ThreadedServer() as srv:
        srv.plans = [
            _plan(_tool_call("c1", "grep", {"pattern": "class Scheduler"})),
            _plan(_tool_call("c2", "read_file", {"path": "pkg/scheduler.py"}), before=speculation_done),
            _plan(_sse({"role": "assistant", "content": "pkg/scheduler.py"}, "stop")),
        ]
        spec = AgentSpec(
            session_id="now",
            provider=ProviderSpec(kind="openai", model="m", base_url=srv.base_url, api_key="k"),
        )
        schemas = ray.get(tools.schemas.remote())
        agent = _remote(AgentActor).remote()
        ray.get(agent.open.remote(encode(spec), tools, predictor, schemas))
        chunks: list[Chunk] = []
        for ref in agent.run.options(num_returns="streaming").remote("now", "where is Scheduler?"):
            chunks += decode(ray.get(ref), list[Chunk])
        assert len(srv.requests) == 3

    results = [c.result for c in chunks if isinstance(c, ToolResultChunk)]
    assert [(r.name, r.cached) for r in results] == [("grep", False), ("read_file", True)]
    assert "class Scheduler" in results[1].content
    metrics = ray.get(tools.metrics.remote())
    m = metrics["speculative"]
    assert m["executed"] == 1 and m["hits"] == 1 and m["refused"] == 0
    # The same hints carried adaptive timeouts: both actions were seen 20 times, quickly, so
    # each got the floor (AgentSpec.timeout_floor_s, 5 s).
    assert metrics["adaptive_timeouts_s"] == {"grep": 5.0, "read_file": 5.0}
    # The speculative call is nowhere in the session's history.
    history = decode_history(ray.get(agent.history.remote("now")))
    ids = [c.id for m_ in history if isinstance(m_, AssistantMessage) for c in m_.tool_calls]
    assert ids == ["c1", "c2"]
    assert [m_.call_id for m_ in history if isinstance(m_, ToolMessage)] == ["c1", "c2"]
    for actor in (agent, tools, predictor):
        ray.kill(actor)
