"""Streams: chunk throughput against the vendor SDKs, added time to first token, and chunks per
second from an AgentActor to the driver.

Run: ``.venv/bin/python -m pytest benches/test_bench_streams.py`` (add ``--benchmark-disable -q``
for a quick check). Peers: ``openai`` and ``anthropic`` (the ``bench`` extra). Both sides read
the same recorded body from the same loopback HTTP server (a threaded ``http.server`` on
127.0.0.1 serving the recording for every POST).
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import SHARED_DATA, case
from raygent.messages import Chunk, Done, TextDelta, ToolCallEnd
from raygent.providers import AnthropicDecoder, OpenAIChatDecoder, OpenAIChatProvider, decode_stream

HTTP = SHARED_DATA / "http"
# The largest recording of each format (most chunks per request).
OPENAI_FILE = "pydantic-ai/streams/tests__models__cassettes__test_groq__test_groq_model_thinking_part_iter__i01.sse"
ANTHROPIC_FILE = "pydantic-ai/streams/tests__models__cassettes__test_anthropic__test_pause_turn_web_search_streaming_vcr__i00.sse"


def _body(rel: str) -> bytes:
    path = HTTP / rel
    if not path.is_file():
        pytest.skip(f"recording not found: {path}")
    return path.read_bytes()


class _Server:
    """Threaded HTTP/1.1 server on 127.0.0.1: every POST gets ``self.body`` as an SSE stream."""

    def __init__(self) -> None:
        outer = self
        self.body = b""

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


# --- chunk throughput: ours vs the SDKs, same bytes, same server ---------------------------------


def _ours_sync(client: httpx.Client, url: str, decoder_cls: type) -> list[Chunk]:
    decoder = decoder_cls()
    out: list[Chunk] = []
    with client.stream("POST", url, content=b"{}") as response:
        for piece in response.iter_bytes():
            out.extend(decoder.feed(piece))
    out.extend(decoder.finish())
    return out


def _transport_only(client: httpx.Client, url: str) -> int:
    # The floor every implementation here pays: the request and the body's bytes, no decoding.
    n = 0
    with client.stream("POST", url, content=b"{}") as response:
        for piece in response.iter_bytes():
            n += len(piece)
    return n


def _openai_sdk(client: object) -> tuple[str, int]:
    text, n = [], 0
    for event in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True):  # type: ignore[attr-defined]
        n += 1
        for choice in event.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
    return "".join(text), n


def _anthropic_sdk(client: object) -> tuple[str, int]:
    text, n = [], 0
    with client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}], stream=True) as events:  # type: ignore[attr-defined]
        for event in events:
            n += 1
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text.append(event.delta.text)
    return "".join(text), n


@pytest.mark.parametrize("impl", ["raygent", "openai"])
def test_openai_chat_stream_throughput(benchmark, server, impl):
    body = _body(OPENAI_FILE)
    server.body = body
    expected = decode_stream("openai-chat", [body])
    want_text = "".join(c.text for c in expected if isinstance(c, TextDelta))
    http_client = httpx.Client()
    case(benchmark, group=f"openai-chat stream over HTTP: {Path(OPENAI_FILE).name}", impl=impl, nbytes=len(body))
    if impl == "raygent":
        url = server.base_url + "/v1/chat/completions"
        assert _ours_sync(http_client, url, OpenAIChatDecoder) == expected
        benchmark(_ours_sync, http_client, url, OpenAIChatDecoder)
    else:
        openai = pytest.importorskip("openai")
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", http_client=http_client, max_retries=0)
        text, _ = _openai_sdk(client)
        assert text == want_text
        benchmark(_openai_sdk, client)
    http_client.close()


# "httpx" reads the body without decoding it: the transport both sides share, so the ratio the
# SDK can fall behind by is bounded by (SDK time) / (this floor).
@pytest.mark.parametrize("impl", ["raygent", "anthropic", "httpx"])
def test_anthropic_stream_throughput(benchmark, server, impl):
    body = _body(ANTHROPIC_FILE)
    server.body = body
    expected = decode_stream("anthropic", [body])
    want_text = "".join(c.text for c in expected if isinstance(c, TextDelta))
    http_client = httpx.Client()
    case(benchmark, group=f"anthropic stream over HTTP: {Path(ANTHROPIC_FILE).name}", impl=impl, nbytes=len(body))
    if impl == "raygent":
        url = server.base_url + "/v1/messages"
        assert _ours_sync(http_client, url, AnthropicDecoder) == expected
        benchmark(_ours_sync, http_client, url, AnthropicDecoder)
    elif impl == "httpx":
        url = server.base_url + "/v1/messages"
        assert _transport_only(http_client, url) == len(body)
        benchmark(_transport_only, http_client, url)
    else:
        anthropic = pytest.importorskip("anthropic")
        # anthropic 2.x ships its own httpx fork (httpx2) and takes no httpx client: its default.
        client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
        text, _ = _anthropic_sdk(client)
        assert text == want_text
        benchmark(_anthropic_sdk, client)
    http_client.close()


# --- time to first token: raygent's provider vs raw httpx -----------------------------------------

FIRST_TOKEN_BODY = (
    b'data: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


@pytest.mark.parametrize("impl", ["raygent", "httpx"])
def test_time_to_first_token(benchmark, server, impl):
    server.body = FIRST_TOKEN_BODY
    loop = asyncio.new_event_loop()
    case(benchmark, group="time to first token (loopback, openai-chat)", impl=impl, items=1)
    if impl == "raygent":
        provider = OpenAIChatProvider("m", base_url=server.base_url + "/v1", api_key="x")

        async def first() -> object:
            stream = provider.stream([], [])
            chunk = await stream.__anext__()
            await stream.aclose()
            return chunk

        assert loop.run_until_complete(first()) == TextDelta("Hello")
    else:
        client = httpx.AsyncClient()
        url = server.base_url + "/v1/chat/completions"

        async def first() -> object:
            async with client.stream("POST", url, content=b"{}") as response:
                async for piece in response.aiter_bytes():
                    return piece
            return None

        assert b"Hello" in loop.run_until_complete(first())
    benchmark(lambda: loop.run_until_complete(first()))
    loop.close()


# --- chunks per second from an AgentActor to the driver -------------------------------------------

N_CHUNKS = 20_000


class _Deltas:
    """Provider yielding ``n`` one-word text deltas, then done."""

    name = "bench-deltas"

    def __init__(self, n: int) -> None:
        self.n = n

    async def stream(self, messages: object, tools: object) -> AsyncIterator[Chunk]:
        for i in range(self.n):
            yield TextDelta("w ")
        yield Done("stop")


def _bench_agent_class():
    from raygent.actors import AgentActor, AgentSpec
    from raygent.messages import decode

    class BenchAgentActor(AgentActor):
        def __init__(self, spec: bytes, n: int) -> None:
            super().__init__()
            self.host(decode(spec, AgentSpec), None, None, []).session.provider = _Deltas(n)

    return BenchAgentActor


@pytest.fixture(scope="module")
def ray_here():
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
        started = True
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.parametrize("batch_size", [1, 64])
def test_agent_actor_chunks_per_second(benchmark, ray_here, batch_size):
    from raygent.actors import AgentSpec
    from raygent.messages import decode, encode
    from raygent.providers._spec import ProviderSpec
    from raygent.streaming import DEFAULT_BUFFER_SIZE, DEFAULT_FLUSH_INTERVAL_MS

    ray = ray_here
    import sys

    # The actor class lives in this test module, which Ray workers cannot import: ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    n = N_CHUNKS if batch_size > 1 else N_CHUNKS // 10  # one Ray object per chunk is slow
    spec = encode(AgentSpec(session_id="bench", provider=ProviderSpec(kind="scripted")))
    actor = ray.remote(num_cpus=0)(_bench_agent_class()).remote(spec, n)
    # batch_size 64 is the default flush setting; 1 is one Ray object per chunk.
    flush_chunks = DEFAULT_BUFFER_SIZE if batch_size > 1 else 1
    interval = DEFAULT_FLUSH_INTERVAL_MS if batch_size > 1 else 0.0

    def run() -> int:
        got = 0
        for ref in actor.run.options(num_returns="streaming").remote("bench", "go", None, flush_chunks, interval):
            got += sum(isinstance(c, TextDelta) for c in decode(ray.get(ref), list[Chunk]))
        return got

    assert run() == n
    case(benchmark, group="AgentActor -> driver chunks", impl="raygent", items=n)
    benchmark.extra_info["batch_size"] = batch_size
    benchmark.pedantic(run, rounds=3, iterations=1)
    ray.kill(actor)
