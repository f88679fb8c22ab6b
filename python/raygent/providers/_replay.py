"""The replay provider: plays recorded response streams as if a model were answering live.

A recording is a response body as the API sent it (``.sse``) or vercel/ai's ``.chunks.jsonl``
(one JSON payload per line, SSE framing removed; re-framed here as ``data: <line>\\n\\n``). It
goes through the same wire decoder the HTTP provider uses, one SSE event at a time, so the
chunks are exactly what :func:`~raygent.providers.decode_stream` gives for the same bytes.

Timing is synthetic: the shared recordings carry no timestamps, so "recorded timing" can only
come from the caller (``delay_ms`` per chunk or a ``tokens_per_s`` rate); with neither, the
chunks come as fast as they decode.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from raygent.messages import Chunk, Message, ReasoningDelta, TextDelta, ToolCallDelta

__all__ = ["ReplayProvider", "detect_api", "read_recording"]

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


def _chunk_tokens(chunk: Chunk) -> float:
    if isinstance(chunk, (TextDelta, ReasoningDelta)):
        return len(chunk.text) / _CHARS_PER_TOKEN
    if isinstance(chunk, ToolCallDelta):
        return len(chunk.arguments_delta) / _CHARS_PER_TOKEN
    return 0.0


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
    delay_ms : float, default 0.0
        Pause before each chunk (milliseconds).
    tokens_per_s : float, optional
        Synthetic generation rate: before a text, reasoning or tool-argument chunk, pause for
        its length in tokens (4 characters each) divided by this rate (tokens per second).
        Adds to ``delay_ms``.
    loop : bool, default False
        After the last file, start again from the first; otherwise one more turn raises
        :class:`IndexError`.
    sleep : callable, optional
        ``await sleep(seconds)``; default :func:`asyncio.sleep` (tests inject their own).

    Raises
    ------
    ValueError
        No files, a negative ``delay_ms``, or a ``tokens_per_s`` that is not positive.
    """

    def __init__(
        self,
        files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        api: str | None = None,
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
        self.files = [Path(p) for p in paths]
        self.api = api
        self.delay_ms = float(delay_ms)
        self.tokens_per_s = tokens_per_s
        self.loop = loop
        self._sleep = sleep or asyncio.sleep
        self.turn = 0
        self.name = f"replay:{self.files[0].name}" + (f" (+{len(self.files) - 1})" if len(self.files) > 1 else "")

    def _delay_s(self, chunk: Chunk) -> float:
        delay = self.delay_ms / 1000.0
        if self.tokens_per_s is not None:
            delay += _chunk_tokens(chunk) / self.tokens_per_s
        return delay

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
        decoder = _new_decoder(self.api or detect_api(body))
        timed = self.delay_ms > 0 or self.tokens_per_s is not None
        for piece in _EVENT_END.split(body):
            if not piece:
                continue
            for chunk in decoder.feed(piece):
                if timed:
                    await self._sleep(self._delay_s(chunk))
                yield chunk
            if decoder.closed:
                return
        for chunk in decoder.finish():
            if timed:
                await self._sleep(self._delay_s(chunk))
            yield chunk
