"""Whole (non-streamed) responses: ``provider.complete()`` and ``decode_response`` on recorded bodies.

Every whole JSON response the shared conversations hold for a supported API (pydantic-ai's
cassettes: ``chat.completion`` objects from OpenAI and OpenAI-compatible hosts, Responses objects,
Anthropic Messages, Gemini / Vertex ``generateContent``) is served by a loopback HTTP server to
the provider's ``complete()``; its chunks must equal ``decode_response`` of the same bytes and
carry the text and tool calls a reference reader written here (plain ``json``) finds in the body.
Then: the same request recorded streamed and whole, and a streamed response against the
assistant turn the recording client sent back in its next request, must give the same tool calls
(and text); and the retries and typed errors of streams hold for whole responses too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from raygent.errors import ProviderError, ProviderHTTPError, RateLimited, ToolCallArgumentsError
from raygent.messages import (
    Done,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    UserMessage,
)
from raygent.providers import (
    AnthropicProvider,
    GeminiProvider,
    OpenAIChatProvider,
    OpenAIResponsesProvider,
    decode_response,
    decode_stream,
)
from raygent.providers import _http
from raygent.session import Session

from _http_server import (  # noqa: F401  (server is a fixture)
    DATA,
    LoopbackServer,
    drop_plan,
    json_plan,
    server,
    sse_plan,
    status_plan,
)

CONVERSATIONS = DATA / "http" / "pydantic-ai" / "conversations"
APIS = ["openai-chat", "openai-responses", "anthropic", "gemini"]


def api_of(uri: str) -> str | None:
    """The wire format of a recorded request, from its URL (None: not one raygent speaks)."""
    path = uri.split("?")[0]
    if path.endswith("/chat/completions"):
        return "openai-chat"
    if path.endswith("/responses"):
        return "openai-responses"
    if path.endswith("/v1/messages"):
        return "anthropic"
    if path.endswith(":generateContent") or path.endswith(":streamGenerateContent"):
        return "gemini"
    return None


def load_exchanges() -> list[tuple[str, list[dict[str, Any]]]]:
    if not CONVERSATIONS.is_dir():
        return []
    return [(p.name, json.loads(p.read_text())["exchanges"]) for p in sorted(CONVERSATIONS.glob("*.json"))]


EXCHANGES = load_exchanges()
WHOLE = [
    pytest.param(api_of(e["uri"]), json.dumps(e["response"]).encode(), id=f"{name[:-5]}#{i}")
    for name, exchanges in EXCHANGES
    for i, e in enumerate(exchanges)
    if e["method"] == "POST" and e["status"] == 200 and e["response_format"] == "json" and api_of(e["uri"])
]


def provider_for(api: str, srv: LoopbackServer, **kw: Any) -> Any:
    root = f"http://127.0.0.1:{srv.port}"
    if api == "openai-chat":
        return OpenAIChatProvider("gpt-test", base_url=root + "/v1", api_key="k", **kw)
    if api == "openai-responses":
        return OpenAIResponsesProvider("gpt-test", base_url=root + "/v1", api_key="k", **kw)
    if api == "anthropic":
        return AnthropicProvider("claude-test", base_url=root, api_key="k", **kw)
    return GeminiProvider("gemini-test", base_url=root + "/v1beta", api_key="k", **kw)


PATHS = {
    "openai-chat": "/v1/chat/completions",
    "openai-responses": "/v1/responses",
    "anthropic": "/v1/messages",
    "gemini": "/v1beta/models/gemini-test:generateContent",
}


# --- a reference reader of whole bodies, plain json, independent of the decoders ----------------


def reference(api: str, body: dict[str, Any]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The answer's text and its tool calls (name, arguments) read straight from the body."""
    text: list[str] = []
    calls: list[tuple[str, dict[str, Any]]] = []
    if api == "openai-chat":
        message = body["choices"][0]["message"]
        content = message.get("content")
        if isinstance(content, str):
            text.append(content)
        elif isinstance(content, list):
            text += [p["text"] for p in content if p.get("type") == "text"]
        text.append(message.get("refusal") or "")
        for c in message.get("tool_calls") or []:
            args = c["function"]["arguments"]
            calls.append((c["function"]["name"], json.loads(args) if isinstance(args, str) and args else args or {}))
    elif api == "openai-responses":
        for item in body["output"]:
            if item["type"] == "message":
                text += [p.get("text") or p.get("refusal") or "" for p in item["content"]]
            elif item["type"] == "function_call":
                calls.append((item["name"], json.loads(item["arguments"] or "{}")))
    elif api == "anthropic":
        for block in body["content"]:
            if block["type"] == "text":
                text.append(block["text"])
            elif block["type"] == "tool_use":
                calls.append((block["name"], block["input"]))
    else:
        for part in body["candidates"][0].get("content", {}).get("parts", []):
            if "text" in part and not part.get("thought"):
                text.append(part["text"])
            elif "functionCall" in part:
                calls.append((part["functionCall"]["name"], part["functionCall"].get("args") or {}))
    return "".join(text), calls


def summary(chunks: list[Any]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    return (
        "".join(c.text for c in chunks if isinstance(c, TextDelta)),
        [(c.call.name, c.call.arguments) for c in chunks if isinstance(c, ToolCallEnd)],
    )


def without_random_ids(chunks: list[Any], body: bytes) -> list[Any]:
    """``chunks`` with call ids replaced by ``"?"`` where the body gave none and no response id
    to make one from, so raygent made a random one."""
    if b'"id"' in body or b'"responseId"' in body:
        return chunks
    out = []
    for c in chunks:
        if isinstance(c, (ToolCallStart, ToolCallDelta)):
            c = msgspec.structs.replace(c, id="?")
        elif isinstance(c, ToolCallEnd):
            c = ToolCallEnd(c.index, msgspec.structs.replace(c.call, id="?"))
        out.append(c)
    return out


def check_contract(chunks: list[Any]) -> None:
    """Whole-response chunk order: deltas, per call start / one delta / end, usage, done last."""
    assert isinstance(chunks[-1], Done) and not any(isinstance(c, Done) for c in chunks[:-1])
    assert sum(isinstance(c, Usage) for c in chunks) <= 1
    starts = [c for c in chunks if isinstance(c, ToolCallStart)]
    ends = [c for c in chunks if isinstance(c, ToolCallEnd)]
    assert [s.index for s in starts] == [e.index for e in ends] == list(range(len(starts)))
    assert [s.id for s in starts] == [e.call.id for e in ends] and all(s.id for s in starts)
    for end in ends:
        deltas = [c for c in chunks if isinstance(c, ToolCallDelta) and c.index == end.index]
        assert len(deltas) <= 1
        if deltas:
            assert json.loads(deltas[0].arguments_delta) == end.call.arguments


def test_selection_covers_every_format(shared_data):
    by_api = {api: sum(1 for p in WHOLE if p.values[0] == api) for api in APIS}
    assert all(n >= 50 for n in by_api.values()), by_api


@pytest.mark.parametrize("api,body", WHOLE)
async def test_recorded_whole_response_over_http(api, body, server):
    server.plans.append(json_plan(body, seed=len(body)))
    async with provider_for(api, server) as provider:
        chunks = await provider.complete([UserMessage("hi")], [{"name": "t", "description": "", "parameters": {}}])
    request = server.requests[0]
    assert request.path == PATHS[api]
    assert request.headers["accept"] == "application/json"
    if api != "gemini":
        assert request.json()["stream"] is False and "stream_options" not in request.json()
    assert without_random_ids(chunks, body) == without_random_ids(decode_response(api, body), body)
    check_contract(chunks)
    assert summary(chunks) == reference(api, json.loads(body))


# --- the same answer streamed and whole ---------------------------------------------------------

HISTORY_FIELD = {"openai-chat": "messages", "openai-responses": "input", "anthropic": "messages", "gemini": "contents"}


def pairs() -> list[Any]:
    """One request recorded both streamed and whole (two samples of the model, same request)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    out = []
    for name, exchanges in EXCHANGES:
        for i, e in enumerate(exchanges):
            api = api_of(e["uri"])
            if api is None or e["status"] != 200 or not isinstance(e["request"], dict):
                continue
            request = {k: v for k, v in e["request"].items() if k not in ("stream", "stream_options")}
            key = (api, json.dumps(request, sort_keys=True))
            other = seen.setdefault(key, {"name": name, "exchange": e})
            if other["exchange"]["response_format"] != e["response_format"]:
                sse, whole = sorted([other["exchange"], e], key=lambda x: x["response_format"] == "json")
                out.append(pytest.param(api, sse["response"].encode(), json.dumps(whole["response"]).encode(),
                                        id=name[:-5]))
    return out


PAIRS = pairs()


def test_pairs_exist(shared_data):
    assert len(PAIRS) >= 5


@pytest.mark.parametrize("api,streamed,whole", PAIRS)
def test_same_request_streamed_and_whole_makes_the_same_tool_calls(api, streamed, whole):
    from_stream = decode_stream(api, [streamed])
    from_body = decode_response(api, whole)
    # Two samples of the model: the calls it chose agree, the prose may be worded differently.
    assert summary(from_stream)[1] == summary(from_body)[1]
    assert from_stream[-1] == from_body[-1]


def continuations() -> list[Any]:
    """A streamed response and the assistant turn the recording client sent back next."""
    out = []
    for name, exchanges in EXCHANGES:
        for i, e in enumerate(exchanges[:-1]):
            api, nxt = api_of(e["uri"]), exchanges[i + 1]
            if api is None or e["response_format"] != "sse" or e["status"] != 200 or api_of(nxt["uri"]) != api:
                continue
            try:
                decode_stream(api, [e["response"].encode()])
            except ProviderError:
                continue  # a stream the server ended with an error: no turn went back
            out.append(pytest.param(api, e["response"].encode(), e["request"], nxt["request"], id=f"{name[:-5]}#{i}"))
    return out


CONTINUATIONS = continuations()


def whole_body_of_turn(api: str, before: dict[str, Any], after: dict[str, Any]) -> bytes:
    """The assistant turn between two recorded requests, wrapped as the format's whole response."""
    history, later = before[HISTORY_FIELD[api]], after[HISTORY_FIELD[api]]
    history = [history] if isinstance(history, str) else history
    if api == "openai-responses":
        items = []
        for item in later[len(history):]:
            if item.get("type") == "function_call_output" or item.get("role") == "user":
                break
            items.append(item)
        return json.dumps({"status": "completed", "output": items}).encode()
    turn = later[len(history)]
    if api == "openai-chat":
        return json.dumps({"choices": [{"index": 0, "message": turn, "finish_reason": "stop"}]}).encode()
    if api == "anthropic":
        content = turn["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        return json.dumps({"type": "message", "content": blocks, "stop_reason": "end_turn"}).encode()
    return json.dumps({"candidates": [{"content": turn, "finishReason": "STOP"}]}).encode()


# Where the recording client rewrote the turn before sending it back, and how.
REWRITTEN_TEXT = {
    # pydantic-ai sends Groq's reasoning back inside the text as <think>...</think>.
    "tests__models__cassettes__test_groq__test_tool_use_failed_error_streaming#1",
    # The cassette's next request carries ASCII quotes where the stream sent typographic ones.
    "tests__models__cassettes__test_openai_responses__test_openai_responses_phase_streamed_on_part_start#0",
}


# pydantic-ai of that cassette sent the item id (fc_...) back as call_id, not the call_id (call_...).
ITEM_ID_AS_CALL_ID = {"tests__models__cassettes__test_openai_responses__test_openai_responses_stream#0"}


def test_continuations_exist(shared_data):
    assert {p.values[0] for p in CONTINUATIONS} == set(APIS) and len(CONTINUATIONS) >= 30


@pytest.mark.parametrize("api,streamed,before,after", CONTINUATIONS)
def test_streamed_turn_equals_the_turn_sent_back(api, streamed, before, after, request):
    from_stream = decode_stream(api, [streamed])
    from_body = decode_response(api, whole_body_of_turn(api, before, after))
    assert summary(from_stream)[1] == summary(from_body)[1]
    if request.node.callspec.id not in REWRITTEN_TEXT:
        assert summary(from_stream)[0] == summary(from_body)[0]
    stream_ids = [c.call.id for c in from_stream if isinstance(c, ToolCallEnd)]
    body_ids = [c.call.id for c in from_body if isinstance(c, ToolCallEnd)]
    for stream_id, body_id in zip(stream_ids, body_ids, strict=True):
        # Ids the client made up itself (Gemini sends none; pydantic-ai prefixes some) are not in
        # the stream; every id that is in the stream must come out the same.
        if body_id.encode() in streamed and request.node.callspec.id not in ITEM_ID_AS_CALL_ID:
            assert stream_id == body_id


# --- decode_response on its own ---------------------------------------------------------------


def test_chat_completion_with_reasoning_refusal_and_calls():
    body = json.dumps({
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "reasoning_content": "think", "refusal": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "read", "arguments": '{"path":"x"}'}},
                {"type": "function", "function": {"name": "ls", "arguments": ""}},
            ]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }).encode()
    chunks = decode_response("openai-chat", body)
    assert chunks[0] == ReasoningDelta("think")
    assert [c for c in chunks if isinstance(c, ToolCallEnd)][0].call == ToolCall("a", "read", {"path": "x"})
    second = [c for c in chunks if isinstance(c, ToolCallEnd)][1].call
    assert second == ToolCall("call_chatcmpl-1_1", "ls", {})  # an id made from the response's
    assert chunks[-2:] == [Usage(3, 4), Done("tool_calls")]


def test_anthropic_message_usage_counts_cached_prompt_tokens():
    body = json.dumps({
        "type": "message", "stop_reason": "tool_use",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "Hi"},
                    {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {"q": "x"}},
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}}],
        "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 7},
    }).encode()
    assert decode_response("anthropic", body) == [
        ReasoningDelta("hmm"), TextDelta("Hi"),
        ToolCallStart(0, "toolu_1", "read"),
        ToolCallDelta(0, "toolu_1", '{"path":"a"}', {"path": "a"}),
        ToolCallEnd(0, ToolCall("toolu_1", "read", {"path": "a"})),
        Usage(105, 7), Done("tool_use"),
    ]


def test_responses_incomplete_and_failed():
    incomplete = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "error": None,
                  "output": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}]},
                             {"type": "message", "content": [{"type": "output_text", "text": "par"}]}],
                  "usage": {"input_tokens": 1, "output_tokens": 2}}
    assert decode_response("openai-responses", json.dumps(incomplete).encode()) == [
        ReasoningDelta("plan"), TextDelta("par"), Usage(1, 2), Done("max_output_tokens")]
    failed = {"status": "failed", "error": {"code": "server_error", "message": "boom"}, "output": []}
    with pytest.raises(ProviderError, match="boom"):
        decode_response("openai-responses", json.dumps(failed).encode())


def test_gemini_blocked_prompt_and_missing_finish_reason():
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    assert decode_response("gemini", json.dumps(blocked).encode()) == [Usage(4, 0), Done("SAFETY")]
    with pytest.raises(ProviderError, match="finishReason"):
        decode_response("gemini", b'{"candidates":[{"content":{"parts":[{"text":"x"}]}}]}')


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("body,match", [
    (b"<html>502</html>", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"error": {"message": "model overloaded", "type": "overloaded_error"}}', "model overloaded"),
])
def test_bad_whole_bodies_raise_typed_errors(api, body, match):
    with pytest.raises(ProviderError, match=match):
        decode_response(api, body)


def test_tool_arguments_that_are_not_an_object():
    body = json.dumps({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": '}}]}}]}).encode()
    with pytest.raises(ToolCallArgumentsError) as info:
        decode_response("openai-chat", body)
    assert info.value.call_id == "a" and info.value.raw == '{"x": '


def test_unknown_api():
    with pytest.raises(ValueError, match="openai-chat"):
        decode_response("cohere", b"{}")


# --- retries and errors of complete() against the loopback server -------------------------------

SIMPLE = {
    "openai-chat": b'{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}',
    "openai-responses": b'{"status":"completed","output":[{"type":"message","content":[{"type":"output_text",'
                        b'"text":"ok"}]}]}',
    "anthropic": b'{"type":"message","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn"}',
    "gemini": b'{"candidates":[{"content":{"parts":[{"text":"ok"}]},"finishReason":"STOP"}]}',
}


@pytest.fixture
def waits(monkeypatch):
    """Record the provider's waits between attempts instead of sleeping them."""
    seen: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        seen.append(seconds)

    monkeypatch.setattr(_http, "sleep", fake_sleep)
    return seen


async def complete(provider: Any) -> list[Any]:
    return await provider.complete([UserMessage("hi")], [])


@pytest.mark.parametrize("api", APIS)
async def test_429_then_500_then_success(api, server, waits):
    server.plans += [status_plan(429, b'{"error":{"message":"slow down"}}', {"Retry-After": "7"}),
                     status_plan(503, b"busy"), json_plan(SIMPLE[api], seed=1)]
    async with provider_for(api, server) as provider:
        chunks = await complete(provider)
    assert summary(chunks)[0] == "ok" and len(server.requests) == 3
    assert waits[0] == 7.0 and 0.5 <= waits[1] <= 1.0  # the hint, then backoff 1 s * [0.5, 1]


@pytest.mark.parametrize("api", APIS)
async def test_429_forever_raises_rate_limited(api, server, waits):
    server.plans.append(status_plan(429, b'{"error":{"message":"slow down"}}', {"Retry-After": "2"}))
    async with provider_for(api, server, max_retries=1) as provider:
        with pytest.raises(RateLimited) as info:
            await complete(provider)
    assert info.value.retry_after_s == 2.0 and len(server.requests) == 2


@pytest.mark.parametrize("api", APIS)
async def test_400_is_not_retried(api, server, waits):
    server.plans.append(status_plan(400, b'{"error":{"message":"bad model"}}'))
    async with provider_for(api, server) as provider:
        with pytest.raises(ProviderHTTPError, match="bad model"):
            await complete(provider)
    assert len(server.requests) == 1 and waits == []


@pytest.mark.parametrize("api", APIS)
async def test_body_cut_off_midway_is_retried(api, server, waits):
    # Nothing of a whole response reaches the caller before it is complete, so a connection
    # that drops inside the body is safe to retry (a stream would raise StreamBroken instead).
    server.plans += [drop_plan(SIMPLE[api][:20], seed=2), json_plan(SIMPLE[api], seed=3)]
    async with provider_for(api, server) as provider:
        chunks = await complete(provider)
    assert summary(chunks)[0] == "ok" and len(server.requests) == 2 and len(waits) == 1


@pytest.mark.parametrize("api", APIS)
async def test_body_cut_off_on_the_last_attempt_raises(api, server, waits):
    server.plans.append(drop_plan(SIMPLE[api][:20], seed=2))
    async with provider_for(api, server, max_retries=0) as provider:
        with pytest.raises(ProviderError, match="after 1 attempts"):
            await complete(provider)


@pytest.mark.parametrize("api", APIS)
async def test_error_object_in_a_200_body_is_not_retried(api, server, waits):
    server.plans.append(json_plan(b'{"error":{"message":"context too long","code":"context_length"}}', seed=1))
    async with provider_for(api, server) as provider:
        with pytest.raises(ProviderError, match="context too long"):
            await complete(provider)
    assert len(server.requests) == 1


async def test_caller_accept_header_is_kept(server):
    server.plans.append(json_plan(SIMPLE["anthropic"], seed=1))
    async with provider_for("anthropic", server, headers={"Accept": "application/vnd.custom+json"}) as provider:
        await complete(provider)
    assert server.requests[0].headers["accept"] == "application/vnd.custom+json"


# --- a session without streaming calls complete() ----------------------------------------------


def test_session_without_streaming_posts_whole_requests(tmp_path, shared_data):
    answer = next(p.values[1] for p in WHOLE if p.values[0] == "anthropic"
                  and not reference("anthropic", json.loads(p.values[1]))[1]
                  and reference("anthropic", json.loads(p.values[1]))[0])

    async def no_tools(calls):
        raise AssertionError(f"no tool calls expected, got {calls}")
        yield  # pragma: no cover

    async def go(stream: bool) -> tuple[list[Any], dict[str, Any], Any]:
        srv = LoopbackServer()
        await srv.start()
        try:
            srv.plans.append(json_plan(answer, seed=9) if not stream else
                             sse_plan(_as_stream(json.loads(answer)), seed=9))
            async with provider_for("anthropic", srv) as provider:
                session = Session(provider=provider, run_tools=no_tools, tool_schemas=[], stream=stream)
                chunks = [c async for c in session.run("hello")]
            return chunks, srv.requests[0].json(), session.context.history
        finally:
            await srv.stop()

    whole_chunks, whole_request, whole_history = asyncio.run(go(False))
    streamed_chunks, streamed_request, streamed_history = asyncio.run(go(True))
    assert whole_request["stream"] is False and streamed_request["stream"] is True
    assert whole_request["messages"] == streamed_request["messages"]
    assert whole_history == streamed_history
    assert whole_history[-1].content == reference("anthropic", json.loads(answer))[0]


def _as_stream(message: dict[str, Any]) -> bytes:
    """A Messages object re-sent as the event stream the API would have sent for it."""
    events = [{"type": "message_start", "message": {**message, "content": []}}]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            events += [{"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                       {"type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": block["text"]}}]
        else:
            events.append({"type": "content_block_start", "index": i, "content_block": block})
        events.append({"type": "content_block_stop", "index": i})
    events += [{"type": "message_delta", "delta": {"stop_reason": message["stop_reason"]},
                "usage": message.get("usage", {})},
               {"type": "message_stop"}]
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)

