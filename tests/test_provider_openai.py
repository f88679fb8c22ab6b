"""OpenAI Chat Completions streaming: recorded real streams served by a real loopback HTTP server.

Every OpenAI-chat-format stream of ``../shared/data/http`` (as listed in STREAMS_INDEX.jsonl) is
served byte-exact, cut at seeded random boundaries, and what the provider yields is compared with
a whole-body reference decoding written here independently of the provider.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from raygent.errors import ProviderError, ProviderHTTPError, RateLimited, StreamBroken, ToolCallArgumentsError
from raygent.messages import (
    AssistantMessage,
    Done,
    ReasoningDelta,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolMessage,
    Usage,
    UserMessage,
)
from raygent.providers import OpenAIChatDecoder, OpenAIChatProvider, Provider, decode_stream
from raygent.providers._http import backoff_s as _backoff_s
from raygent.providers._http import retry_after_s as _retry_after_s

from _http_server import (  # noqa: F401  (server is a fixture)
    INDEX,
    LoopbackServer,
    body_of,
    drop_plan,
    load_index,
    random_cuts,
    seed_of,
    server,
    sse_plan,
    status_plan,
)


# --- the recorded streams -----------------------------------------------------------------------


def _load_rows() -> list[dict[str, Any]]:
    rows = load_index()
    return [r for r in rows if r["api"] == "openai.chat.completions" and r["unparseable_payloads"] == 0]


ROWS = _load_rows()


def _params(select: Callable[[dict[str, Any]], bool]) -> list[Any]:
    chosen = [pytest.param(r, id=Path(r["file"]).name) for r in ROWS if select(r)]
    if not chosen:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"stream data not found at {INDEX}"))]
    return chosen




@dataclass
class Expected:
    text: str = ""
    reasoning: str = ""
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> id, name, raw
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None
    error: str | None = None


def reference(body: bytes) -> Expected:
    """Whole-body decoding: blank-line blocks, json.loads, concatenation per tool-call index."""
    exp = Expected()
    for block in body.decode("utf-8").split("\n\n"):
        lines = block.split("\n")
        data = [ln[5:].removeprefix(" ") for ln in lines if ln.startswith("data:")]
        if not data:
            continue
        payload_text = "\n".join(data)
        if payload_text.strip() == "[DONE]":
            break
        payload = json.loads(payload_text)
        if "event: error" in lines or payload.get("error"):
            exp.error = json.dumps(payload)
            return exp
        usage = payload.get("usage") or (payload.get("x_groq") or {}).get("usage")
        if usage:
            exp.usage = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        for choice in payload.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            exp.reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            content = delta.get("content") or ""
            if isinstance(content, list):  # Mistral's typed parts
                for part in content:
                    if part["type"] == "text":
                        exp.text += part["text"]
                    elif part["type"] == "thinking":
                        exp.reasoning += "".join(p["text"] for p in part["thinking"])
                content = ""
            exp.text += content + (delta.get("refusal") or "")
            for tc in delta.get("tool_calls") or []:
                index = tc.get("index")
                if index is None:  # Mistral: whole calls without an index
                    ids = {c["id"]: i for i, c in exp.calls.items()}
                    index = ids.get(tc.get("id"), len(exp.calls))
                call = exp.calls.setdefault(index, {"id": "", "name": "", "raw": ""})
                call["id"] = call["id"] or tc.get("id") or ""
                fn = tc.get("function") or {}
                call["name"] = call["name"] or fn.get("name") or ""
                call["raw"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                exp.finish_reason = choice["finish_reason"]
    return exp


def _is_error_stream(row: dict[str, Any]) -> bool:
    # Groq's "event: error" streams and OpenRouter's mid-stream {"error": ...} payloads.
    return reference(body_of(row)).error is not None


STREAM_PARAMS = _params(lambda r: not _is_error_stream(r))
ERROR_STREAM_PARAMS = _params(_is_error_stream)


async def collect(provider: OpenAIChatProvider, messages=None, tools=()) -> list[Any]:
    async with asyncio.timeout(60):
        return [c async for c in provider.stream(messages or [UserMessage("hi")], list(tools))]


def make_provider(srv: LoopbackServer, **kw: Any) -> OpenAIChatProvider:
    kw.setdefault("api_key", "sk-test")
    return OpenAIChatProvider("gpt-test", base_url=srv.base_url, timeout_s=30, **kw)


# --- checks shared by the stream tests ------------------------------------------------------------


def check_against_reference(chunks: list[Any], exp: Expected) -> None:
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == exp.text
    assert "".join(c.text for c in chunks if isinstance(c, ReasoningDelta)) == exp.reasoning

    # Done exactly once and last; at most one Usage, right before it.
    assert [type(c) for c in chunks].count(Done) == 1 and isinstance(chunks[-1], Done)
    assert chunks[-1].finish_reason == (exp.finish_reason or "stop")
    usages = [c for c in chunks if isinstance(c, Usage)]
    if exp.usage is None:
        assert usages == []
    else:
        assert usages == [Usage(input_tokens=exp.usage[0], output_tokens=exp.usage[1])]
        assert chunks[-2] == usages[0]

    ends = [c for c in chunks if isinstance(c, ToolCallEnd)]
    assert [e.index for e in ends] == sorted(exp.calls), "one end per call, in index order"
    for end in ends:
        want = exp.calls[end.index]
        arguments = json.loads(want["raw"]) if want["raw"].strip() else {}
        assert end.call == ToolCall(id=want["id"], name=want["name"], arguments=arguments)

        # Start, then deltas, then end, all for this call.
        positions = [i for i, c in enumerate(chunks) if getattr(c, "index", None) == end.index
                     and isinstance(c, (ToolCallStart, ToolCallDelta, ToolCallEnd))]
        mine = [chunks[i] for i in positions]
        assert isinstance(mine[0], ToolCallStart) and mine[0].id == want["id"] and mine[0].name == want["name"]
        assert isinstance(mine[-1], ToolCallEnd)
        deltas = mine[1:-1]
        assert all(isinstance(d, ToolCallDelta) and d.id == want["id"] for d in deltas)
        assert "".join(d.arguments_delta for d in deltas) == want["raw"]
        if want["raw"].strip():
            assert deltas[-1].partial_arguments == arguments
        assert chunks.index(end) < len(chunks) - 1


def _has_args(row: dict[str, Any]) -> bool:
    return bool(row and row["tool_arg_streaming"])


def test_selection_covers_streamed_tool_arguments():
    if not ROWS:
        pytest.skip(f"stream data not found at {INDEX}")
    with_args = [r for r in ROWS if r["tool_arg_streaming"]]
    # All recorded OpenAI-chat streams with streamed tool arguments are in the selection.
    assert len(with_args) >= 40
    assert all(r["api"] == "openai.chat.completions" for r in ROWS)


@pytest.mark.parametrize("row", STREAM_PARAMS)
async def test_recorded_stream_over_http(row, server):
    body = body_of(row)
    exp = reference(body)
    assert exp.error is None
    if _has_args(row):
        assert exp.calls, "the index says this stream streams tool arguments"
    # Alternate the HTTP framing: chunked, or a body delimited by closing the connection.
    chunked = seed_of(row) % 2 == 0
    server.plans.append(sse_plan(body, seed=seed_of(row), chunked=chunked))
    async with make_provider(server) as provider:
        chunks = await collect(provider)
    check_against_reference(chunks, exp)

    # The pure decoder gives the same chunks for other random cuts of the same bytes.
    for k in range(3):
        assert decode_stream("openai-chat", random_cuts(body, seed_of(row) + k + 1, 40)) == chunks
    assert decode_stream("openai-chat", [body]) == chunks


@pytest.mark.parametrize("row", ERROR_STREAM_PARAMS)
async def test_recorded_error_event_raises_provider_error(row, server):
    body = body_of(row)
    exp = reference(body)
    assert exp.error is not None
    message = json.loads(exp.error)["error"]["message"]
    with pytest.raises(ProviderError, match="provider error in stream") as info:
        decode_stream("openai-chat", random_cuts(body, seed_of(row)))
    assert message[:40] in str(info.value)
    server.plans.append(sse_plan(body, seed=seed_of(row)))
    async with make_provider(server) as provider:
        with pytest.raises(ProviderError) as info:
            await collect(provider)
    assert message[:40] in str(info.value)


# --- synthetic streams for the edges --------------------------------------------------------------


def sse(*payloads: Any, done: bool = True) -> bytes:
    out = b"".join(b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + b"\n\n" for p in payloads)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}], **extra}


def tool_delta(index: int, arguments: str, id: str | None = None, name: str | None = None) -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id:
        fragment["id"] = id
        fragment["type"] = "function"
    if name:
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


TOOL_STREAM = sse(
    chunk({"role": "assistant", "content": "Let me look."}),
    tool_delta(0, "", id="call_a", name="read_file"),
    tool_delta(0, '{"path": "src/ma'),
    tool_delta(0, 'in.py", "lines": [1, '),
    tool_delta(0, "20]}"),
    tool_delta(1, "", id="call_b", name="grep"),
    tool_delta(1, '{"pattern": "def '),
    tool_delta(1, 'main"}'),
    chunk({}, "tool_calls"),
    {"id": "c1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 34}},
)


def test_parallel_tool_calls_end_as_soon_as_complete():
    chunks = decode_stream("openai-chat", [TOOL_STREAM])
    kinds = [type(c).__name__ for c in chunks]
    assert kinds == ["TextDelta", "ToolCallStart", "ToolCallDelta", "ToolCallDelta", "ToolCallDelta",
                     "ToolCallEnd", "ToolCallStart", "ToolCallDelta", "ToolCallDelta", "ToolCallEnd",
                     "Usage", "Done"]
    assert chunks[3].partial_arguments["path"] == "src/main.py"
    assert chunks[5] == ToolCallEnd(0, ToolCall("call_a", "read_file", {"path": "src/main.py", "lines": [1, 20]}))
    assert chunks[9].call == ToolCall("call_b", "grep", {"pattern": "def main"})
    assert chunks[-2:] == [Usage(12, 34), Done("tool_calls")]


def test_interleaved_calls_end_in_index_order():
    body = sse(
        tool_delta(0, "", id="a", name="f"),
        tool_delta(1, "", id="b", name="g"),
        tool_delta(1, "{}"),
        tool_delta(0, '{"x": 1'),
        tool_delta(0, "}"),
        chunk({}, "tool_calls"),
    )
    chunks = decode_stream("openai-chat", [body])
    ends = [c for c in chunks if isinstance(c, ToolCallEnd)]
    assert [e.call.id for e in ends] == ["a", "b"]
    # b was complete first but waited for a.
    assert chunks.index(ends[0]) == chunks.index(ends[1]) - 1


def test_empty_arguments_mean_empty_object_and_missing_id_is_made():
    body = sse({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "now"}}]}}]},
               chunk({}, "tool_calls"))
    chunks = decode_stream("openai-chat", [body])
    end = next(c for c in chunks if isinstance(c, ToolCallEnd))
    assert end.call.name == "now" and end.call.arguments == {} and end.call.id.startswith("call_")
    assert isinstance(chunks[0], ToolCallStart) and chunks[0].id == end.call.id


def test_arguments_as_object_and_before_name():
    def fragment(**f: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [f]})

    body = sse(
        fragment(index=0, id="x", function={"arguments": '{"a"'}),  # arguments before the name
        fragment(index=0, function={"name": "f", "arguments": ": 1}"}),
        fragment(index=1, id="y", function={"name": "g", "arguments": {"b": 2}}),  # an object
        chunk({}, "tool_calls"),
    )
    chunks = decode_stream("openai-chat", [body])
    assert [type(c).__name__ for c in chunks] == ["ToolCallStart", "ToolCallDelta", "ToolCallEnd",
                                                  "ToolCallStart", "ToolCallDelta", "ToolCallEnd", "Done"]
    assert chunks[1].arguments_delta == '{"a": 1}'
    assert chunks[2].call.arguments == {"a": 1} and chunks[5].call.arguments == {"b": 2}


def test_refusal_reasoning_other_choices_and_logprobs():
    body = sse(
        {"choices": [{"index": 0, "delta": {"reasoning_content": "think "}, "logprobs": {"content": []}}]},
        {"choices": [{"index": 1, "delta": {"content": "other choice"}}]},
        {"choices": [{"index": 0, "delta": {"reasoning": "more"}}]},
        {"choices": [{"index": 0, "delta": {"content": None, "refusal": "I can't."}}]},
        chunk({}, "stop"),
    )
    assert decode_stream("openai-chat", [body]) == [
        ReasoningDelta("think "), ReasoningDelta("more"), TextDelta("I can't."), Done("stop")]


def test_stream_without_done_and_without_finish_reason_ends_cleanly_for_text():
    assert decode_stream("openai-chat", [sse(chunk({"content": "hi"}), done=False)]) == [TextDelta("hi"), Done("stop")]


def test_stream_ending_inside_tool_call_is_broken():
    body = sse(chunk({"content": "x"}), tool_delta(0, '{"a": ', id="c", name="f"), done=False)
    with pytest.raises(StreamBroken) as info:
        decode_stream("openai-chat", [body])
    assert [type(c) for c in info.value.received] == [TextDelta, ToolCallStart, ToolCallDelta]


def test_empty_body_is_broken():
    with pytest.raises(StreamBroken, match="without any payload"):
        decode_stream("openai-chat", [b""])


def test_malformed_arguments_raise_typed_error():
    body = sse(tool_delta(0, '{"path": "a.py"', id="call_bad", name="read_file"), tool_delta(0, ' "x"}'))
    with pytest.raises(ToolCallArgumentsError) as info:
        decode_stream("openai-chat", random_cuts(body, 3))
    err = info.value
    assert (err.call_id, err.name) == ("call_bad", "read_file")
    assert err.raw == '{"path": "a.py" "x"}'
    assert err.offset == len('{"path": "a.py" ')


def test_truncated_arguments_at_finish_raise_typed_error():
    body = sse(tool_delta(0, '{"path": "a', id="call_t", name="read_file"), chunk({}, "length"))
    with pytest.raises(ToolCallArgumentsError) as info:
        decode_stream("openai-chat", [body])
    assert info.value.call_id == "call_t"


def test_arguments_that_are_not_an_object_raise_typed_error():
    body = sse(tool_delta(0, "[1, 2]", id="call_l", name="f"), chunk({}, "tool_calls"))
    with pytest.raises(ToolCallArgumentsError, match="not an object"):
        decode_stream("openai-chat", [body])


def test_non_json_payload_and_error_object():
    with pytest.raises(ProviderError, match="not JSON.*this is not json"):
        decode_stream("openai-chat", [sse(chunk({"content": "a"}), b"this is not json")])
    with pytest.raises(ProviderError, match="overloaded"):
        decode_stream("openai-chat", [sse({"error": {"message": "overloaded", "type": "server_error"}})])


def test_done_is_last_and_later_bytes_ignored():
    decoder = OpenAIChatDecoder()
    out = decoder.feed(sse(chunk({"content": "a"}, "stop")) + b"data: {garbage\n\n")
    assert out == [TextDelta("a"), Done("stop")]
    assert decoder.closed and decoder.finish() == [] and decoder.feed(b"data: x\n\n") == []


def test_unknown_api_names_supported():
    with pytest.raises(ValueError, match="openai-chat"):
        decode_stream("anthropic-messages", [b""])


# --- HTTP behaviour -------------------------------------------------------------------------------

SIMPLE = sse(chunk({"content": "ok"}, "stop"))


async def test_request_body_headers_and_protocol(server):
    server.plans.append(sse_plan(SIMPLE, seed=1))
    tools = [{"name": "read_file", "description": "Read a file.",
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]
    messages = [
        SystemMessage("be brief"),
        UserMessage("read a.py"),
        AssistantMessage("", [ToolCall("call_1", "read_file", {"path": "a.py"})]),
        ToolMessage("call_1", "read_file", "print(1)"),
    ]
    async with make_provider(server, temperature=0.2, headers={"X-Extra": "1"}) as provider:
        assert isinstance(provider, Provider) and provider.name == "openai:gpt-test"
        assert await collect(provider, messages, tools) == [TextDelta("ok"), Done("stop")]
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-extra"] == "1"
    body = request.json()
    assert body["model"] == "gpt-test" and body["stream"] is True and body["temperature"] == 0.2
    assert body["stream_options"] == {"include_usage": True}
    assert body["tools"] == [{"type": "function", "function": tools[0]}]
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "read a.py"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"a.py"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "print(1)"},
    ]


async def test_no_key_no_authorization_and_no_tools_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.plans.append(sse_plan(SIMPLE, seed=2))
    async with OpenAIChatProvider("local", base_url=server.base_url + "/") as provider:
        await collect(provider)
    (request,) = server.requests
    assert "authorization" not in request.headers
    assert "tools" not in request.json() and "temperature" not in request.json()


async def test_429_with_retry_after_zero_then_success(server):
    server.plans += [status_plan(429, b'{"error":{"message":"slow down"}}', {"Retry-After": "0"}),
                     sse_plan(SIMPLE, seed=3)]
    async with make_provider(server) as provider:
        assert await collect(provider) == [TextDelta("ok"), Done("stop")]
    assert len(server.requests) == 2


async def test_429_forever_raises_rate_limited_after_max_retries(server):
    server.plans.append(status_plan(429, b'{"error":{"message":"slow down"}}', {"Retry-After": "0"}))
    async with make_provider(server, max_retries=2) as provider:
        with pytest.raises(RateLimited) as info:
            await collect(provider)
    assert len(server.requests) == 3
    assert info.value.status == 429 and info.value.retry_after_s == 0
    assert "slow down" in str(info.value) and "slow down" in info.value.body


async def test_500_is_retried_with_backoff(server):
    # No Retry-After: the exponential backoff (about 0.25-0.5 s for the first retry) is used.
    server.plans += [status_plan(500, b"boom"), status_plan(503, b"busy", {"Retry-After": "0"}),
                     sse_plan(SIMPLE, seed=4)]
    async with make_provider(server) as provider:
        assert await collect(provider) == [TextDelta("ok"), Done("stop")]
    assert len(server.requests) == 3


async def test_500_forever_raises_http_error(server):
    server.plans.append(status_plan(502, b"bad gateway", {"Retry-After": "0"}))
    async with make_provider(server, max_retries=1) as provider:
        with pytest.raises(ProviderHTTPError) as info:
            await collect(provider)
    assert not isinstance(info.value, RateLimited)
    assert info.value.status == 502 and info.value.body == "bad gateway"
    assert len(server.requests) == 2


async def test_400_is_not_retried(server):
    server.plans.append(status_plan(400, b'{"error":{"message":"bad model"}}'))
    async with make_provider(server) as provider:
        with pytest.raises(ProviderHTTPError) as info:
            await collect(provider)
    assert info.value.status == 400 and "bad model" in str(info.value)
    assert len(server.requests) == 1


async def test_connection_dropped_inside_tool_call_raises_stream_broken(server):
    cut = TOOL_STREAM.index(b'in.py')  # inside the first call's arguments
    server.plans.append(drop_plan(TOOL_STREAM[:cut], seed=5))
    async with make_provider(server) as provider:
        with pytest.raises(StreamBroken) as info:
            await collect(provider)
    received = info.value.received
    assert received[0] == TextDelta("Let me look.")
    assert received[1] == ToolCallStart(0, "call_a", "read_file")
    # The open string's text so far is part of the partial value.
    assert isinstance(received[-1], ToolCallDelta) and received[-1].partial_arguments == {"path": "src/ma"}
    assert len(server.requests) == 1, "a stream that already yielded chunks is not retried"


async def test_close_delimited_body_ending_inside_tool_call_is_broken(server):
    cut = TOOL_STREAM.index(b'20]}')
    server.plans.append(sse_plan(TOOL_STREAM[:cut], seed=6, chunked=False))
    async with make_provider(server) as provider:
        with pytest.raises(StreamBroken) as info:
            await collect(provider)
    assert info.value.received[-1].partial_arguments["path"] == "src/main.py"


async def test_malformed_arguments_over_http(server):
    body = sse(tool_delta(0, '{"path": ]', id="call_m", name="read_file"))
    server.plans.append(sse_plan(body, seed=7))
    async with make_provider(server) as provider:
        with pytest.raises(ToolCallArgumentsError) as info:
            await collect(provider)
    assert info.value.call_id == "call_m" and info.value.offset == len('{"path": ')


async def test_connection_refused_is_retried_then_provider_error():
    # A port that was just free on loopback: nothing listens there.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = OpenAIChatProvider("m", base_url=f"http://127.0.0.1:{port}/v1", api_key="", max_retries=1)
    async with provider:
        with pytest.raises(ProviderError, match="ConnectError.*after 2 attempts"):
            await collect(provider)


async def test_custom_transport_is_used():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=SIMPLE, headers={"content-type": "text/event-stream"})

    async with OpenAIChatProvider("m", base_url="http://x/v1", api_key="k",
                                  transport=httpx.MockTransport(handler)) as provider:
        assert await collect(provider) == [TextDelta("ok"), Done("stop")]
    assert str(seen[0].url) == "http://x/v1/chat/completions"


def test_retry_after_parsing_and_cap():
    assert _retry_after_s(httpx.Headers({"retry-after": "3"})) == 3.0
    assert _retry_after_s(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    future = datetime.now(timezone.utc) + timedelta(seconds=120)
    assert 100 < _retry_after_s(httpx.Headers({"retry-after": format_datetime(future, usegmt=True)})) <= 120
    past = datetime.now(timezone.utc) - timedelta(seconds=120)
    assert _retry_after_s(httpx.Headers({"retry-after": format_datetime(past, usegmt=True)})) == 0.0
    assert _retry_after_s(httpx.Headers({"retry-after": "soon"})) is None
    assert _retry_after_s(httpx.Headers({})) is None
    assert _backoff_s(0, 3600.0) == 60.0
    assert _backoff_s(0, 0.0) == 0.0
    assert all(0.25 <= _backoff_s(0, None) <= 0.5 for _ in range(50))
    assert all(30 <= _backoff_s(30, None) <= 60 for _ in range(50))
