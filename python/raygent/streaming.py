"""The :class:`Stream` a caller reads: chunk kinds, batching options, collect, readers.

A stream is fed by *batches* of chunks (lists of :data:`~raygent.messages.Chunk`): across Ray an
``AgentActor`` coalesces chunks so that one Ray object carries many, and ``buffer_size`` /
``flush_interval_ms`` here are passed to it as the batch bounds. The caller sees single chunks,
filtered by kind, through whichever interface fits:

- ``for chunk in stream`` / ``async for chunk in stream``;
- :meth:`Stream.batches` for the batches as they arrived (after filtering);
- :meth:`Stream.collect` for the whole response at once (text, tool calls, results, usage);
- :meth:`Stream.as_reader` for a file-like object over the text (``read(n)``, ``readline()``).

The options follow AgenticGoKit's streaming guide (``BufferSize``, ``FlushInterval``,
``TextOnly``, ``IncludeMetadata`` / chunk kinds). A stream is read once: a second iteration
raises :class:`RuntimeError`.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
import msgspec

from raygent.messages import (
    ApprovalRequest,
    Chunk,
    Done,
    ReasoningDelta,
    StateChange,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    ToolOutputDelta,
    ToolResultChunk,
    Usage,
)

__all__ = ["Stream", "StreamResult", "CHUNK_KINDS", "DEFAULT_BUFFER_SIZE", "DEFAULT_FLUSH_INTERVAL_MS"]

# Chunk kind names (the msgpack/JSON tag of each chunk type) to their types.
CHUNK_KINDS: dict[str, type] = {
    "text_delta": TextDelta,
    "reasoning_delta": ReasoningDelta,
    "tool_call_start": ToolCallStart,
    "tool_call_delta": ToolCallDelta,
    "tool_call_end": ToolCallEnd,
    "usage": Usage,
    "done": Done,
    "error": StreamError,
    "tool_result": ToolResultChunk,
    "tool_output_delta": ToolOutputDelta,
    "state": StateChange,
    "approval_request": ApprovalRequest,
}

# Batch bounds across Ray (chunks per batch, and the longest a chunk waits in a batch, ms).
# Measured in benches/test_bench_streams.py (test_agent_actor_chunks_per_second) on the
# project's 2-core machine: one Ray object per chunk delivers about 2,050 chunks/s from an
# AgentActor to the driver (2,000 chunks in 975 ms, median of 3), batches of 64 about 130,000
# chunks/s (20,000 in 154 ms). 64 one-word deltas are about 1 KB of msgpack, far under Ray's
# 100 KiB inline limit. 20 ms keeps text visibly smooth (a 50 Hz refresh) when the model is
# slower than one batch per 20 ms.
DEFAULT_BUFFER_SIZE = 64
DEFAULT_FLUSH_INTERVAL_MS = 20.0


class StreamResult(msgspec.Struct):
    """What :meth:`Stream.collect` returns: the stream's content, gathered.

    Attributes
    ----------
    text : str
        Every text delta, joined (all model turns of the run).
    reasoning : str
        Every reasoning delta, joined.
    tool_calls : list of ToolCall
        Finished tool calls, in order.
    tool_results : list of ToolResult
        Tool results, in the order they finished.
    tool_output : dict of str to str
        Output streamed by running tools (:class:`~raygent.messages.ToolOutputDelta`), joined
        per call id; progress only, the results hold what the model saw.
    usage : Usage
        Tokens summed over the run's :class:`~raygent.messages.Usage` chunks (tokens).
    finish_reason : str or None
        Of the last :class:`~raygent.messages.Done`; None if none was seen.
    chunks : int
        Chunks read (after filtering).
    """

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = []
    tool_results: list[ToolResult] = []
    tool_output: dict[str, str] = {}
    usage: Usage = Usage()
    finish_reason: str | None = None
    chunks: int = 0


def _kind_types(include: Iterable[str | type] | None, text_only: bool) -> tuple[type, ...] | None:
    if text_only:
        return (TextDelta,)
    if include is None:
        return None
    types: list[type] = []
    for kind in include:
        if isinstance(kind, str):
            if kind not in CHUNK_KINDS:
                raise ValueError(f"unknown chunk kind {kind!r}; known: {', '.join(CHUNK_KINDS)}")
            types.append(CHUNK_KINDS[kind])
        elif kind in CHUNK_KINDS.values():
            types.append(kind)
        else:
            raise ValueError(f"{kind!r} is not a chunk type")
    return tuple(types)


class Stream:
    """Chunks of one run, read once, filtered by kind.

    Parameters
    ----------
    source : iterable or async iterable of list of Chunk
        The batches, in order. May support both protocols (the Ray source does); sync
        iteration needs ``__iter__``, async iteration ``__aiter__`` (or ``__iter__``).
    buffer_size : int, default 64
        Most chunks per batch the producer sends (chunks). Recorded here; the producer
        (``Agent.stream``) applies it.
    flush_interval_ms : float, default 20.0
        Longest a chunk waits in the producer's batch before it is sent (milliseconds);
        finished tool calls, tool results, tool output deltas (already coalesced by the tool
        pipeline), state changes and the end are sent at once.
    text_only : bool, default False
        Yield only :class:`~raygent.messages.TextDelta` chunks.
    include : iterable of str or type, optional
        Chunk kinds to yield, by tag (``"text_delta"``, ``"tool_call_end"``, ``"tool_result"``
        ..., see :data:`CHUNK_KINDS`) or type; default all. Ignored when ``text_only``.

    Raises
    ------
    ValueError
        ``buffer_size`` below 1, a negative ``flush_interval_ms``, an unknown kind.
    """

    def __init__(
        self,
        source: Iterable[list[Chunk]] | AsyncIterable[list[Chunk]],
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS,
        text_only: bool = False,
        include: Iterable[str | type] | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if flush_interval_ms < 0:
            raise ValueError(f"flush_interval_ms must be >= 0, got {flush_interval_ms}")
        self.buffer_size = int(buffer_size)
        self.flush_interval_ms = float(flush_interval_ms)
        self.text_only = text_only
        self._types = _kind_types(include, text_only)
        self._source = source
        self._started = False

    def _claim(self) -> None:
        if self._started:
            raise RuntimeError("a Stream is read once; this one has already been read")
        self._started = True

    def _keep(self, batch: list[Chunk]) -> list[Chunk]:
        types = self._types
        return batch if types is None else [c for c in batch if isinstance(c, types)]

    # --- sync ----------------------------------------------------------------------------------

    def batches(self) -> Iterator[list[Chunk]]:
        """The batches as they arrive, filtered (batches left empty by the filter are skipped).

        Raises
        ------
        RuntimeError
            The stream was already read.
        """
        self._claim()
        if not hasattr(self._source, "__iter__"):
            raise TypeError("this stream's source is async only: use `async for`")
        for batch in self._source:  # type: ignore[union-attr]
            kept = self._keep(batch)
            if kept:
                yield kept

    def __iter__(self) -> Iterator[Chunk]:
        for batch in self.batches():
            yield from batch

    def collect(self) -> StreamResult:
        """Read the rest of the stream and gather it (see :class:`StreamResult`).

        Raises
        ------
        raygent.errors.AgentError
            What the run raised; the chunks before it are lost to this call (iterate instead
            to keep them).
        """
        return _gather(iter(self))

    def as_reader(self) -> TextReader:
        """A read-only text file over the stream's text deltas (other chunks are skipped)."""
        return TextReader(c.text for c in self if isinstance(c, TextDelta))

    # --- async ---------------------------------------------------------------------------------

    async def abatches(self) -> AsyncIterator[list[Chunk]]:
        """Async :meth:`batches`."""
        self._claim()
        source = self._source
        if hasattr(source, "__aiter__"):
            async for batch in source:
                kept = self._keep(batch)
                if kept:
                    yield kept
        else:
            for batch in source:
                kept = self._keep(batch)
                if kept:
                    yield kept

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for batch in self.abatches():
            for chunk in batch:
                yield chunk

    async def acollect(self) -> StreamResult:
        """Async :meth:`collect`."""
        return _gather([c async for c in self])


def _gather(chunks: Iterable[Chunk]) -> StreamResult:
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    results: list[ToolResult] = []
    output: dict[str, list[str]] = {}
    tokens_in = tokens_out = n = 0
    finish: str | None = None
    for c in chunks:
        n += 1
        if isinstance(c, TextDelta):
            text.append(c.text)
        elif isinstance(c, ReasoningDelta):
            reasoning.append(c.text)
        elif isinstance(c, ToolCallEnd):
            calls.append(c.call)
        elif isinstance(c, ToolResultChunk):
            results.append(c.result)
        elif isinstance(c, ToolOutputDelta):
            output.setdefault(c.call_id, []).append(c.text)
        elif isinstance(c, Usage):
            tokens_in += c.input_tokens
            tokens_out += c.output_tokens
        elif isinstance(c, Done):
            finish = c.finish_reason
    return StreamResult(
        text="".join(text),
        reasoning="".join(reasoning),
        tool_calls=calls,
        tool_results=results,
        tool_output={k: "".join(v) for k, v in output.items()},
        usage=Usage(tokens_in, tokens_out),
        finish_reason=finish,
        chunks=n,
    )


class TextReader(io.TextIOBase):
    """A read-only, non-seekable text file over an iterator of text pieces.

    Parameters
    ----------
    pieces : iterator of str
        Consumed lazily: ``read(n)`` pulls pieces only until it has ``n`` characters.
    """

    def __init__(self, pieces: Iterator[str]) -> None:
        super().__init__()
        self._pieces = pieces
        self._buf = ""
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self, want: int | None = None, until: str | None = None) -> None:
        # Pull pieces until the buffer holds `want` characters / contains `until`, or EOF.
        while not self._eof:
            if want is not None and len(self._buf) >= want:
                return
            if until is not None and until in self._buf:
                return
            try:
                self._buf += next(self._pieces)
            except StopIteration:
                self._eof = True

    def read(self, size: int | None = -1) -> str:
        """Up to ``size`` characters (all that remain when ``size`` is None or negative);
        ``""`` at the end of the stream."""
        self._checkClosed()
        if size is None or size < 0:
            self._fill()
            out, self._buf = self._buf, ""
            return out
        self._fill(want=size)
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        """The next line with its ``"\\n"`` (the last line may lack it), at most ``size``
        characters when ``size`` is given; ``""`` at the end."""
        self._checkClosed()
        limit = None if size is None or size < 0 else size
        self._fill(want=limit, until="\n")
        end = self._buf.find("\n")
        cut = len(self._buf) if end < 0 else end + 1
        if limit is not None:
            cut = min(cut, limit)
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return out

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return self

    def __next__(self) -> str:  # type: ignore[override]
        line = self.readline()
        if not line:
            raise StopIteration
        return line
