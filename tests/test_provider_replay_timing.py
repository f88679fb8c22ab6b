"""ReplayProvider(timing="recorded"): the server-measured timing some recordings carry.

Which recordings have it is found here independently of the provider (plain ``json`` over every
payload of every shared stream, looking for Groq's ``x_groq.usage``); the provider's waits are
observed through an injected ``sleep``, never measured on the clock.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest

from raygent.errors import RaygentError
from raygent.messages import ReasoningDelta, TextDelta, ToolCallDelta, UserMessage
from raygent.providers import NoRecordedTiming, ReplayProvider, decode_stream, recorded_timing
from raygent.providers._replay import detect_api, read_recording

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
INDEX = DATA / "http" / "STREAMS_INDEX.jsonl"


def groq_usage(path: Path) -> dict[str, Any] | None:
    """The last ``x_groq.usage`` with a completion time in the recording, read with plain json."""
    found = None
    for line in read_recording(path).decode().splitlines():
        if line.startswith("data:") and "x_groq" in line:
            try:
                payload = json.loads(line[5:])
            except ValueError:
                continue
            usage = payload.get("x_groq", {}).get("usage")
            if usage and "completion_time" in usage:
                found = usage
    return found


def rows() -> list[dict[str, Any]]:
    if not INDEX.is_file():
        return []
    return [json.loads(line) for line in INDEX.read_text().splitlines() if line.strip()]


ALL = [DATA / "http" / r["file"] for r in rows()]
TIMED = [p for p in ALL if groq_usage(p)]


def play(provider: ReplayProvider) -> list[Any]:
    async def go() -> list[Any]:
        return [c async for c in provider.stream([UserMessage("hi")], [])]

    return asyncio.run(go())


def test_recorded_timing_is_found_exactly_where_the_recording_has_it(shared_data):
    assert len(TIMED) >= 9
    for path in ALL:
        timing = recorded_timing(read_recording(path))
        usage = groq_usage(path)
        if usage is None:
            assert timing is None, path
        else:
            assert timing is not None, path
            assert math.isclose(timing.first_chunk_s, usage.get("queue_time", 0) + usage.get("prompt_time", 0))
            assert math.isclose(timing.generation_s, usage["completion_time"])


@pytest.mark.parametrize("path", TIMED, ids=[p.name for p in TIMED])
def test_recorded_timing_replays_the_server_times(path):
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    chunks = play(ReplayProvider(path, timing="recorded", sleep=fake_sleep))
    body = read_recording(path)
    assert chunks == decode_stream(detect_api(body), [body])
    usage = groq_usage(path)
    assert usage is not None
    first = usage.get("queue_time", 0) + usage.get("prompt_time", 0)
    assert len(waits) == len(chunks)
    # The time to the first token before the first chunk, the completion time over the rest.
    assert math.isclose(sum(waits), first + usage["completion_time"], rel_tol=1e-9)

    def chars(c: Any) -> int:
        if isinstance(c, (TextDelta, ReasoningDelta)):
            return len(c.text)
        return len(c.arguments_delta) if isinstance(c, ToolCallDelta) else 0

    total = sum(chars(c) for c in chunks)
    expected = [usage["completion_time"] * chars(c) / total for c in chunks]
    expected[0] += first
    assert all(math.isclose(w, e, rel_tol=1e-9, abs_tol=1e-12) for w, e in zip(waits, expected))


def test_recording_without_timing_is_refused_with_its_name(shared_data):
    untimed = next(p for p in ALL if p not in TIMED)
    with pytest.raises(NoRecordedTiming, match=untimed.name) as info:
        ReplayProvider([TIMED[0], untimed], timing="recorded")
    assert isinstance(info.value, RaygentError) and isinstance(info.value, ValueError)


def test_recorded_timing_excludes_synthetic_settings(shared_data):
    with pytest.raises(ValueError, match="synthetic"):
        ReplayProvider(TIMED[0], timing="recorded", delay_ms=5)
    with pytest.raises(ValueError, match="timing"):
        ReplayProvider(TIMED[0], timing="wallclock")  # type: ignore[arg-type]
