import msgspec
import pytest

from raygent.messages import (
    AssistantMessage,
    Chunk,
    Done,
    Message,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolMessage,
    ToolResult,
    UserMessage,
    decode,
    encode,
)

MESSAGES = [
    SystemMessage("be brief"),
    UserMessage("héllo ✓"),
    AssistantMessage("", [ToolCall("call_1", "grep", {"pattern": "x", "n": [1, 2.5, None]})]),
    ToolMessage("call_1", "grep", "a.py:1: x", is_error=False),
]
CHUNKS = [
    TextDelta("Hi"),
    ToolCallDelta(0, "call_1", '{"pa', {"pa": None}),
    ToolCallEnd(0, ToolCall("call_1", "grep", {"pattern": "x"})),
    Done("tool_calls"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_message_round_trip_keeps_type(msg):
    assert decode(encode(msg)) == msg
    assert type(decode(encode(msg))) is type(msg)


def test_chunk_batches_and_history_round_trip():
    assert decode(encode(CHUNKS), list[Chunk]) == CHUNKS
    assert decode(encode(MESSAGES), list[Message]) == MESSAGES
    r = ToolResult("c", "grep", "out", is_error=True, error_kind="timeout", duration_ms=1.5)
    assert decode(memoryview(encode(r)), ToolResult) == r


def test_decode_rejects_unknown_tag():
    data = msgspec.msgpack.encode({"type": "nonsense", "content": "x"})
    with pytest.raises(msgspec.ValidationError):
        decode(data)


def test_encode_is_plain_msgspec_msgpack():
    # The codec is msgspec's encoder as is (the buffer pool lost to it in benches/test_bench_pool.py),
    # so any msgpack reader can decode what raygent sends.
    for m in MESSAGES + CHUNKS:
        assert encode(m) == msgspec.msgpack.encode(m)


def test_errors_keep_their_context_through_pickling():
    import pickle

    from raygent.errors import AgentError, RateLimited, StreamBroken, ToolTimeout

    for err in (
        AgentError("boom", kind="max_turns"),
        RateLimited("slow down", body="{}", retry_after_s=2.0),
        StreamBroken("cut", received=[TextDelta("a")]),
        ToolTimeout("late", tool="run_command", timeout_s=1.5),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert back.__dict__ == err.__dict__
