"""The one message vocabulary of raygent, and its msgpack codec.

Conversation messages (:data:`Message`) and stream chunks (:data:`Chunk`) are msgspec Structs in
tagged unions (tag field ``"type"``), so any of them encodes to msgpack and decodes back to the
right type without a schema on the wire. Providers translate their wire formats into these types
at the edge; nothing past a provider knows a wire format.

Between Ray actors messages travel as msgpack ``bytes`` (see :func:`encode` / :func:`decode`):
measured on the project's 2-core machine, Ray pickling a 2 KB Struct costs about 26 µs against
about 0.6 µs for msgspec's msgpack bytes.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec


__all__ = [
    "ToolCall",
    "ToolResult",
    "SystemMessage",
    "UserMessage",
    "AssistantMessage",
    "ToolMessage",
    "Message",
    "TextDelta",
    "ReasoningDelta",
    "ToolCallStart",
    "ToolCallDelta",
    "ToolCallEnd",
    "Usage",
    "Done",
    "StreamError",
    "ToolResultChunk",
    "ToolOutputDelta",
    "StateChange",
    "ApprovalRequest",
    "Chunk",
    "ToolStreamItem",
    "encode",
    "decode",
    "to_builtins",
]


class ToolCall(msgspec.Struct, frozen=True):
    """One tool call the model asked for.

    ``id`` is the provider's call id (``call_...``, ``toolu_...``) or one raygent made;
    ``arguments`` is the parsed JSON object of the call's arguments.
    """

    id: str
    name: str
    arguments: dict[str, Any] = {}


class ToolResult(msgspec.Struct, frozen=True):
    """The outcome of one tool call, as the model will see it.

    Attributes
    ----------
    call_id, name : str
        The :class:`ToolCall` this answers.
    content : str
        The tool's output with ANSI control sequences stripped (or the error text).
    is_error : bool
        True when the call failed; ``error_kind`` then names why (``"timeout"``, ``"sandbox"``,
        ``"bad_arguments"``, ``"not_found"``, ``"error"``, ``"denied"`` for a call the policy or
        the person asked refused).
    duration_ms : float
        Wall time of the call in milliseconds.
    attempts : int
        Times the tool ran for this call: 1, more after retries, 0 when it did not run (a cache
        hit, a shared in-flight call, an open circuit breaker, a cancelled queued call).
    cached : bool
        True when the content came from the result cache or from an identical call in flight.
    spooled_path : str or None
        For an output too large for the context: the workspace-relative file holding it whole
        (``content`` then has its head and tail around a marker).
    queued_ms : float
        Milliseconds the call waited in the tool pipeline's queue for a slot, over all its
        attempts (0 when a slot was free, and for a result it did not run for).
    queue_depth : int
        Calls waiting in that queue, this one included, when it was queued (the largest over
        its attempts; 0 when it did not wait).
    """

    call_id: str
    name: str
    content: str
    is_error: bool = False
    error_kind: str | None = None
    duration_ms: float = 0.0
    attempts: int = 1
    cached: bool = False
    spooled_path: str | None = None
    queued_ms: float = 0.0
    queue_depth: int = 0


# --- conversation messages ----------------------------------------------------------------------


class SystemMessage(msgspec.Struct, tag="system", frozen=True):
    content: str


class UserMessage(msgspec.Struct, tag="user", frozen=True):
    content: str


class AssistantMessage(msgspec.Struct, tag="assistant", frozen=True):
    content: str = ""
    tool_calls: list[ToolCall] = []


class ToolMessage(msgspec.Struct, tag="tool", frozen=True):
    """A tool result in the conversation (role ``tool`` in OpenAI terms)."""

    call_id: str
    name: str
    content: str
    is_error: bool = False

    @classmethod
    def from_result(cls, result: ToolResult) -> ToolMessage:
        return cls(
            call_id=result.call_id, name=result.name, content=result.content, is_error=result.is_error
        )


Message = Union[SystemMessage, UserMessage, AssistantMessage, ToolMessage]

# --- stream chunks ------------------------------------------------------------------------------


class TextDelta(msgspec.Struct, tag="text_delta", frozen=True):
    """Assistant text appended to the current turn."""

    text: str


class ReasoningDelta(msgspec.Struct, tag="reasoning_delta", frozen=True):
    """Reasoning text (models that expose it); never part of the answer."""

    text: str


class ToolCallStart(msgspec.Struct, tag="tool_call_start", frozen=True):
    """The model began a tool call; ``index`` orders parallel calls of one turn."""

    index: int
    id: str
    name: str


class ToolCallDelta(msgspec.Struct, tag="tool_call_delta", frozen=True):
    """A piece of a tool call's JSON arguments.

    ``arguments_delta`` is the raw text the provider sent; ``partial_arguments`` is the best
    value parsed so far by the incremental parser (``raygent._native.JsonStream.partial``).
    """

    index: int
    id: str
    arguments_delta: str
    partial_arguments: Any = None


class ToolCallEnd(msgspec.Struct, tag="tool_call_end", frozen=True):
    """A tool call is complete; ``call.arguments`` is the final parsed object."""

    index: int
    call: ToolCall


class Usage(msgspec.Struct, tag="usage", frozen=True):
    """Token usage reported by the provider (tokens)."""

    input_tokens: int = 0
    output_tokens: int = 0


class Done(msgspec.Struct, tag="done", frozen=True):
    """End of one model response; ``finish_reason`` as the provider gave it (``stop``, ``tool_calls``)."""

    finish_reason: str = "stop"


class StreamError(msgspec.Struct, tag="error", frozen=True):
    """An error reported inside a stream (``kind`` is ``provider_error``, ``rate_limit`` ...)."""

    kind: str
    message: str


class ToolResultChunk(msgspec.Struct, tag="tool_result", frozen=True):
    """A tool call finished (runtime event, sent to the caller of ``Agent.stream``)."""

    result: ToolResult


class ToolOutputDelta(msgspec.Struct, tag="tool_output_delta", frozen=True):
    """Output a tool produced while it runs (runtime event, for progress display).

    Sent to the caller of ``Agent.stream`` as the tool's output arrives, ANSI-stripped and
    coalesced by the pipeline (see :class:`~raygent.pipeline.ToolPipeline`,
    ``output_delta_max_bytes`` and ``output_delta_interval_ms``). Never part of the history:
    the model sees only the call's final :class:`ToolResult`, which is the same whether or not
    its output was streamed.

    Attributes
    ----------
    call_id, name : str
        The :class:`ToolCall` producing the output.
    text : str
        The next piece of output. When a tool writes faster than one delta per interval can
        carry, the delta starts with a ``[... N bytes of output not streamed ...]`` line.
    """

    call_id: str
    name: str
    text: str


class StateChange(msgspec.Struct, tag="state", frozen=True):
    """The agent's state machine moved (runtime event)."""

    source: str
    target: str
    trigger: str


class ApprovalRequest(msgspec.Struct, tag="approval_request", frozen=True):
    """A tool call waits for a person's decision (runtime event; the policy said ``prompt``).

    The run is paused in ``WaitingForUser`` until ``approve(call.id)`` or
    ``deny(call.id, reason)`` is called on the session (``Agent.approve`` / ``Agent.deny``).
    ``rule`` is the policy rule that asked (``'commands."*"'``, ``"tools.write_file"``), and
    ``reason`` its reason, if any.
    """

    call: ToolCall
    rule: str = ""
    reason: str = ""


Chunk = Union[
    TextDelta,
    ReasoningDelta,
    ToolCallStart,
    ToolCallDelta,
    ToolCallEnd,
    Usage,
    Done,
    StreamError,
    ToolResultChunk,
    ToolOutputDelta,
    StateChange,
    ApprovalRequest,
]

#: What a tool actor streams back for one turn: output deltas while calls run, and one
#: :class:`ToolResultChunk` per call when it finishes (a call's deltas all come before its result).
ToolStreamItem = Union[ToolOutputDelta, ToolResultChunk]

# --- codec --------------------------------------------------------------------------------------

_ENCODER = msgspec.msgpack.Encoder()
_DECODERS: dict[Any, msgspec.msgpack.Decoder] = {}


def encode(obj: Any) -> bytes:
    """Encode a message, chunk, tool call or result (or a list of them) to msgpack bytes.

    Plain ``msgspec.msgpack.Encoder.encode``: it writes straight into the ``bytes`` it returns.
    Pooled ``bytearray`` buffers (:class:`raygent._native.BufferPool` + ``Encoder.encode_into``
    + ``bytes(buf)``, this function's former body) were measured against it and lost at every
    size, so they are not used here. Best of 5 on the 2-core machine, µs per encode, plain vs
    pooled (``benches/test_bench_pool.py``): 54 B text delta 0.13 vs 0.48; 2 KB tool call
    0.3-0.5 vs 1.15; 64 KB tool result 1.7 vs 4.2; 4 MB tool result 110 vs 256. The copy out
    of the buffer costs more than the allocation it saves, and each pooled buffer keeps about
    1.5x its largest recent message allocated on top of the copy.
    """
    return _ENCODER.encode(obj)


def decode(data: bytes | memoryview, type: Any = Message) -> Any:
    """Decode msgpack bytes made by :func:`encode`.

    Parameters
    ----------
    data : bytes or memoryview
        The encoded value.
    type : type, default Message
        What to decode: :data:`Message`, :data:`Chunk`, ``list[Chunk]``, :class:`ToolResult` ...

    Raises
    ------
    msgspec.ValidationError
        If the bytes are not a value of ``type``.
    """
    decoder = _DECODERS.get(type)
    if decoder is None:
        decoder = _DECODERS[type] = msgspec.msgpack.Decoder(type)
    return decoder.decode(data)


def to_builtins(obj: Any) -> Any:
    """Plain dicts/lists of a message or chunk, with its ``type`` tag (for JSON output)."""
    return msgspec.to_builtins(obj)
