"""The replay provider: plays recorded response streams as if a model were answering live.

A recording is a response body as the API sent it (``.sse``) or vercel/ai's ``.chunks.jsonl``
(one JSON payload per line, SSE framing removed; re-framed here as ``data: <line>\\n\\n``). It
goes through the same wire decoder the HTTP provider uses, one SSE event at a time, so the
chunks are exactly what :func:`~raygent.providers.decode_stream` gives for the same bytes.

Timing. No recording in ``../shared/data`` holds when each piece arrived: the cassettes and
fixtures store response bodies only (MANIFEST: "network chunk boundaries and timings were not
recorded"), the trajectories time tool runs (SWE-agent's ``execution_time``) rather than model
output, and no OpenHands event list (whose events carry a ``timestamp``) is among them. What
some streams do carry is the server's own measurement of the whole response: Groq's final chunk
has ``x_groq.usage`` with ``queue_time``, ``prompt_time`` and ``completion_time`` in seconds
(9 of the shared streams). ``timing="recorded"`` plays that: the queue and prompt time before
the first chunk, and the completion time spread over the text, reasoning and tool-argument
chunks in proportion to their characters -- the recorded total, not recorded gaps. Other
per-response clocks are not used: Responses ``created_at`` / ``completed_at`` count whole
seconds (most responses here finish within one), Bedrock's ``metrics.latencyMs`` is in a format
raygent does not decode. Otherwise timing is synthetic (``delay_ms``, ``tokens_per_s``).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from raygent.errors import ProviderError
from raygent.messages import Chunk, Message, ReasoningDelta, TextDelta, ToolCallDelta
from raygent.providers._sse import SSEDecoder

__all__ = ["ReplayProvider", "RecordedTiming", "NoRecordedTiming", "detect_api", "read_recording", "recorded_timing"]

# Decoder class of each wire format (imported lazily, as in ``decode_stream``).
_DECODER_CLASSES = {
    "openai-chat": ("raygent.providers._openai", "OpenAIChatDecoder"),
    "openai-responses": ("raygent.providers._responses", "OpenAIResponsesDecoder"),
    "anthropic": ("raygent.providers._anthropic", "AnthropicDecoder"),
    "gemini": ("raygent.providers._gemini", "GeminiDecoder"),
}
# Chars per token for synthetic timing: the usual rule of thumb for English text and code.
_CHARS_PER_TOKEN = 4.0
# One SSE event per piece: split after each blank line (LF, CRLF or CR line ends).
_EVENT_END = re.compile(rb"(?<=\n\n)|(?<=\r\n\r\n)|(?<=\r\r)")


def read_recording(path: str | os.PathLike[str]) -> bytes:
    """The response body of a recording, SSE-framed.

    Parameters
    ----------
    path : str or PathLike
        A ``.sse`` file (returned byte-exact) or a ``.chunks.jsonl`` file (each non-blank line
        re-framed as ``data: <line>\\n\\n``).

    Returns
    -------
    bytes
    """
    p = Path(path)
    raw = p.read_bytes()
    if p.name.endswith(".jsonl"):
        return b"".join(b"data: " + line + b"\n\n" for line in raw.splitlines() if line.strip())
    return raw


def detect_api(body: bytes) -> str:
    """The wire format of an SSE response body, from its first payloads.

    Parameters
    ----------
    body : bytes
        The body (only its first 64 KiB are looked at).

    Returns
    -------
    str
        ``"openai-chat"``, ``"openai-responses"``, ``"anthropic"`` or ``"gemini"``.

    Raises
    ------
    ValueError
        None of the four formats' markers was found.
    """
    head = body[:65536]
    if b'"type":"response.' in head.replace(b" ", b"") or b"event: response." in head:
        return "openai-responses"
    compact = head.replace(b" ", b"")
    if b'"type":"message_start"' in compact or b'"type":"content_block_' in compact:
        return "anthropic"
    if b'"candidates"' in head or b'"usageMetadata"' in head:
        return "gemini"
    if b'"choices"' in head or b"chat.completion.chunk" in head:
        return "openai-chat"
    raise ValueError("cannot tell the wire format of this recording; pass api=...")


def _new_decoder(api: str) -> Any:
    target = _DECODER_CLASSES.get(api)
    if target is None:
        raise ValueError(f"unknown api {api!r}; supported: {', '.join(sorted(_DECODER_CLASSES))}")
    import importlib

    return getattr(importlib.import_module(target[0]), target[1])()


def _chunk_chars(chunk: Chunk) -> int:
    if isinstance(chunk, (TextDelta, ReasoningDelta)):
        return len(chunk.text)
    if isinstance(chunk, ToolCallDelta):
        return len(chunk.arguments_delta)
    return 0


class NoRecordedTiming(ProviderError, ValueError):
    """``timing="recorded"`` was asked of a recording that carries no timing (see the module)."""


@dataclass(frozen=True, slots=True)
class RecordedTiming:
    """The server-measured timing of one recorded response.

    Attributes
    ----------
    first_chunk_s : float
        Seconds before the first token: queueing plus reading the prompt.
    generation_s : float
        Seconds spent generating the output.
    """

    first_chunk_s: float
    generation_s: float


def recorded_timing(body: bytes) -> RecordedTiming | None:
    """The timing a recorded SSE body carries, or None.

    Reads Groq's ``x_groq.usage`` (``queue_time`` + ``prompt_time`` before the first chunk,
    ``completion_time`` for the output; seconds, as the server measured them), the only
    sub-second per-response timing in the shared recordings.

    Parameters
    ----------
    body : bytes
        The SSE-framed body (see :func:`read_recording`).

    Returns
    -------
    RecordedTiming or None
        None when no payload carries it.
    """
    decoder = SSEDecoder()
    for event in decoder.feed(body) + decoder.finish():
        if '"x_groq"' not in event.data:
            continue
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            continue
        usage = (payload.get("x_groq") or {}).get("usage") if isinstance(payload, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("completion_time"), (int, float)):
            first = float(usage.get("queue_time") or 0.0) + float(usage.get("prompt_time") or 0.0)
            return RecordedTiming(first_chunk_s=max(0.0, first), generation_s=max(0.0, float(usage["completion_time"])))
    return None


def _content_chars(body: bytes, api: str) -> int:
    # Characters of output the recording streams before it ends (or breaks): what the recorded
    # generation time is shared out over.
    decoder, total = _new_decoder(api), 0
    try:
        for piece in _EVENT_END.split(body):
            total += sum(_chunk_chars(c) for c in decoder.feed(piece))
        total += sum(_chunk_chars(c) for c in decoder.finish())
    except ProviderError:
        pass
    return total


class _RecordedPace:
    # Waits from a RecordedTiming: the time to the first token before the first chunk, then the
    # generation time shared out by characters of output.
    __slots__ = ("_first_s", "_per_char_s")

    def __init__(self, timing: RecordedTiming, content_chars: int) -> None:
        self._first_s = timing.first_chunk_s
        self._per_char_s = timing.generation_s / content_chars if content_chars else 0.0

    def __call__(self, chunk: Chunk) -> float:
        wait, self._first_s = self._first_s + self._per_char_s * _chunk_chars(chunk), 0.0
        return wait


class ReplayProvider:
    """A :class:`~raygent.providers.Provider` that plays recorded streams, one per model turn.

    Parameters
    ----------
    files : path or sequence of paths
        Recordings (``.sse`` or ``.chunks.jsonl``); turn ``n`` of the provider's life plays
        ``files[n]``.
    api : str, optional
        The wire format (see :func:`~raygent.providers.decode_stream`); detected from each
        file's content when omitted.
    timing : {"synthetic", "recorded"}, default "synthetic"
        ``"synthetic"``: the pauses ``delay_ms`` and ``tokens_per_s`` ask for (none by default:
        chunks come as fast as they decode). ``"recorded"``: the server-measured timing the
        recording carries (see the module docstring for which recordings have it and what
        exactly is replayed); every file must carry it.
    delay_ms : float, default 0.0
        Synthetic timing: pause before each chunk (milliseconds).
    tokens_per_s : float, optional
        Synthetic timing: before a text, reasoning or tool-argument chunk, pause for its length
        in tokens (4 characters each) divided by this rate (tokens per second). Adds to
        ``delay_ms``.
    loop : bool, default False
        After the last file, start again from the first; otherwise one more turn raises
        :class:`IndexError`.
    sleep : callable, optional
        ``await sleep(seconds)``; default :func:`asyncio.sleep` (tests inject their own).

    Raises
    ------
    ValueError
        No files, a negative ``delay_ms``, a ``tokens_per_s`` that is not positive, an unknown
        ``timing``, or ``delay_ms`` / ``tokens_per_s`` given with ``timing="recorded"``.
    NoRecordedTiming
        ``timing="recorded"`` and a file carries no timing (the message names it); also a
        ``ValueError``.
    """

    def __init__(
        self,
        files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        api: str | None = None,
        timing: Literal["synthetic", "recorded"] = "synthetic",
        delay_ms: float = 0.0,
        tokens_per_s: float | None = None,
        loop: bool = False,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
        if not paths:
            raise ValueError("ReplayProvider needs at least one recording")
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
        if tokens_per_s is not None and not tokens_per_s > 0:
            raise ValueError(f"tokens_per_s must be > 0, got {tokens_per_s}")
        if api is not None and api not in _DECODER_CLASSES:
            raise ValueError(f"unknown api {api!r}; supported: {', '.join(sorted(_DECODER_CLASSES))}")
        if timing not in ("synthetic", "recorded"):
            raise ValueError(f"timing must be 'synthetic' or 'recorded', got {timing!r}")
        if timing == "recorded" and (delay_ms or tokens_per_s is not None):
            raise ValueError("delay_ms and tokens_per_s are synthetic timing; not with timing='recorded'")
        self.files = [Path(p) for p in paths]
        if timing == "recorded":
            for path in self.files:
                if recorded_timing(read_recording(path)) is None:
                    raise NoRecordedTiming(
                        f"{path} carries no timing (only Groq streams record it, in x_groq.usage); "
                        "use timing='synthetic' with delay_ms or tokens_per_s"
                    )
        self.api = api
        self.timing = timing
        self.delay_ms = float(delay_ms)
        self.tokens_per_s = tokens_per_s
        self.loop = loop
        self._sleep = sleep or asyncio.sleep
        self.turn = 0
        self.name = f"replay:{self.files[0].name}" + (f" (+{len(self.files) - 1})" if len(self.files) > 1 else "")

    def _synthetic_delay_s(self, chunk: Chunk) -> float:
        delay = self.delay_ms / 1000.0
        if self.tokens_per_s is not None:
            delay += _chunk_chars(chunk) / _CHARS_PER_TOKEN / self.tokens_per_s
        return delay

    def _pace(self, body: bytes, api: str) -> Callable[[Chunk], float] | None:
        if self.timing == "recorded":
            timing = recorded_timing(body)
            assert timing is not None  # every file was checked in __init__
            return _RecordedPace(timing, _content_chars(body, api))
        if self.delay_ms > 0 or self.tokens_per_s is not None:
            return self._synthetic_delay_s
        return None

    async def stream(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> AsyncIterator[Chunk]:
        """Play the next recording (``messages`` and ``tools`` are ignored).

        Raises
        ------
        IndexError
            Every recording has been played and ``loop`` is False.
        raygent.errors.ProviderError
            What the decoder raises for the recording (``StreamBroken`` for an error event).
        """
        if self.turn >= len(self.files) and not self.loop:
            raise IndexError(f"{self.name}: all {len(self.files)} recordings have been played")
        path = self.files[self.turn % len(self.files)]
        self.turn += 1
        body = read_recording(path)
        api = self.api or detect_api(body)
        pace = self._pace(body, api)
        decoder = _new_decoder(api)
        for piece in _EVENT_END.split(body):
            if not piece:
                continue
            for chunk in decoder.feed(piece):
                if pace is not None:
                    await self._sleep(pace(chunk))
                yield chunk
            if decoder.closed:
                return
        for chunk in decoder.finish():
            if pace is not None:
                await self._sleep(pace(chunk))
            yield chunk
