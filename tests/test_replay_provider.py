"""ReplayProvider: recorded streams played as if live, through the same decoders."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from raygent.messages import Done, TextDelta, ToolCallDelta, ToolCallEnd, UserMessage
from raygent.providers import Provider, ReplayProvider, decode_stream
from raygent.providers._replay import detect_api, read_recording

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
INDEX = DATA / "http" / "STREAMS_INDEX.jsonl"
API_OF = {
    "openai.chat.completions": "openai-chat",
    "openai.responses": "openai-responses",
    "anthropic.messages": "anthropic",
    "gemini.generateContent": "gemini",
}


def _rows() -> list[dict]:
    if not INDEX.is_file():
        return []
    rows = [json.loads(line) for line in INDEX.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["api"] in API_OF and not r.get("unparseable_payloads")]


def _pick() -> list[dict]:
    # Per (api, framing), the first recording that has a tool call and the first that has none.
    picked: dict[tuple[str, str, bool], dict] = {}
    for r in _rows():
        key = (r["api"], r["framing"], bool(r.get("tool_arg_streaming")))
        picked.setdefault(key, r)
    return list(picked.values())


PICKED = _pick()
needs_data = pytest.mark.skipif(not PICKED, reason=f"recorded streams not found at {INDEX}")


def play(provider: ReplayProvider) -> list:
    async def go():
        return [c async for c in provider.stream([UserMessage("hi")], [])]

    return asyncio.run(go())


@needs_data
@pytest.mark.parametrize("row", PICKED, ids=[r["file"].rsplit("/", 1)[-1] for r in PICKED])
def test_replay_equals_whole_body_decode(row):
    path = DATA / "http" / row["file"]
    body = read_recording(path)
    api = API_OF[row["api"]]
    assert detect_api(body) == api
    expected = decode_stream(api, [body])
    assert play(ReplayProvider(path)) == expected  # api detected
    assert play(ReplayProvider(path, api=api)) == expected
    assert isinstance(expected[-1], Done)


@needs_data
def test_files_play_one_per_turn_then_stop():
    rows = PICKED[:3]
    paths = [DATA / "http" / r["file"] for r in rows]
    provider = ReplayProvider(paths)
    assert isinstance(provider, Provider)
    for path, row in zip(paths, rows):
        assert play(provider) == decode_stream(API_OF[row["api"]], [read_recording(path)])
    with pytest.raises(IndexError):
        play(provider)
    looping = ReplayProvider(paths[:1], loop=True)
    assert play(looping) == play(looping)


@needs_data
def test_synthetic_timing_sleeps_per_chunk():
    row = next(r for r in PICKED if r.get("tool_arg_streaming"))
    path = DATA / "http" / row["file"]
    waits: list[float] = []

    async def fake_sleep(s: float) -> None:
        waits.append(s)

    chunks = play(ReplayProvider(path, delay_ms=5.0, tokens_per_s=100.0, sleep=fake_sleep))
    assert len(waits) == len(chunks)
    for chunk, wait in zip(chunks, waits):
        if isinstance(chunk, TextDelta):
            assert wait == pytest.approx(0.005 + len(chunk.text) / 4 / 100.0)
        elif isinstance(chunk, ToolCallDelta):
            assert wait == pytest.approx(0.005 + len(chunk.arguments_delta) / 4 / 100.0)
        else:
            assert wait == pytest.approx(0.005)
    assert any(isinstance(c, ToolCallEnd) for c in chunks)


def test_chunks_jsonl_is_reframed(tmp_path):
    f = tmp_path / "x.chunks.jsonl"
    f.write_text(
        '{"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
        '{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n'
    )
    chunks = play(ReplayProvider(f))
    assert [c.text for c in chunks if isinstance(c, TextDelta)] == ["Hel", "lo"]
    assert chunks[-1] == Done("stop")


def test_bad_arguments_and_unknown_format(tmp_path):
    f = tmp_path / "x.sse"
    f.write_bytes(b"data: {\"hello\": 1}\n\n")
    with pytest.raises(ValueError, match="api="):
        play(ReplayProvider(f))
    with pytest.raises(ValueError):
        ReplayProvider([])
    with pytest.raises(ValueError):
        ReplayProvider(f, tokens_per_s=0)
    with pytest.raises(ValueError):
        ReplayProvider(f, api="bedrock")
