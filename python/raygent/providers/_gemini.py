"""Google Gemini ``streamGenerateContent?alt=sse``: the wire decoder and the HTTP provider.

The wire format followed is the Gemini API reference, "Generating content ->
models.streamGenerateContent" with ``alt=sse``: each SSE ``data:`` is one
``GenerateContentResponse`` (``candidates[].content.parts[]``, ``finishReason``,
``usageMetadata``, ``promptFeedback``), and the body simply ends after the last one (no end
marker). Vertex AI's ``streamFunctionCallArguments`` extension is decoded too: a call opened by
``functionCall: {name, willContinue: true}``, continued by ``functionCall.partialArgs`` entries
(``{jsonPath, stringValue | numberValue | boolValue | nullValue | ..., willContinue}``), and
closed by a ``functionCall`` without ``willContinue``.

Decisions where the format leaves room (each found in recorded streams):

- Only the first candidate (``index`` 0 or absent) is decoded.
- ``text`` parts become :class:`TextDelta`, or :class:`ReasoningDelta` with ``thought: true``;
  ``thoughtSignature``, ``executableCode``, ``codeExecutionResult``, ``inlineData`` and the
  server-side ``toolCall`` / ``toolResponse`` parts are ignored.
- A whole ``functionCall {name, args}`` gives ``ToolCallStart``, one ``ToolCallDelta`` (the
  arguments serialized as JSON) and ``ToolCallEnd``. Streamed ``partialArgs`` are serialized as
  JSON text as they come (``{"location":"Bos`` ... ``ton"}``) and fed to the incremental parser,
  so deltas carry live partial arguments exactly as in the other formats; the paths must arrive
  in document order (they do: Vertex streams the object front to back), otherwise
  :class:`ProviderError`.
- Gemini rarely gives call ids: a missing one is made from the response id,
  ``"rg_<responseId>_<n>"`` (the same bytes give the same ids), and such ids are not sent back
  in requests. Calls are numbered 0, 1, ... in order.
- ``Usage``: ``input_tokens = promptTokenCount``, ``output_tokens = candidatesTokenCount +
  thoughtsTokenCount`` (both are billed as output); the last report wins (each chunk repeats the
  running totals).
- :class:`Done` comes at the end of the body with ``finishReason`` as given (``STOP``,
  ``MAX_TOKENS``, ``SAFETY`` ...) or ``promptFeedback.blockReason`` for a blocked prompt. A body
  that ends without either raises :class:`StreamBroken`; a ``{"error": {...}}`` payload too.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from raygent.errors import ProviderError
from raygent.messages import (
    AssistantMessage,
    Chunk,
    Done,
    Message,
    ReasoningDelta,
    TextDelta,
    ToolMessage,
    Usage,
    UserMessage,
)
from raygent.providers._convert import alternating_turns, parameters_of
from raygent.providers._http import HTTPStreamProvider
from raygent.providers._wire import (
    PAYLOAD_PREVIEW_CHARS,
    SSEJsonDecoder,
    ToolCallState,
    load_response,
    response_error,
    stream_error,
)

__all__ = [
    "GeminiDecoder",
    "GeminiProvider",
    "to_gemini_request",
    "decode_gemini",
    "decode_gemini_response",
    "SYNTHETIC_ID_PREFIX",
]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
SYNTHETIC_ID_PREFIX = "rg_"

# One step of a JSONPath as Gemini writes it: .name, [3], ['name'] or ["name"].
_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]|\[\"((?:[^\"\\]|\\.)*)\"\]")
_VALUE_FIELDS = ("stringValue", "numberValue", "boolValue", "nullValue", "structValue", "listValue")


def _parse_path(path: str) -> list[str | int]:
    if not path.startswith("$"):
        raise ProviderError(f"partialArgs jsonPath {path!r} does not start with '$'")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        match = _PATH_STEP.match(path, pos)
        if match is None:
            raise ProviderError(f"partialArgs jsonPath {path!r} not understood at character {pos}")
        name, number, single, double = match.groups()
        if number is not None:
            steps.append(int(number))
        else:
            steps.append(name if name is not None else (single if single is not None else double))
        pos = match.end()
    if not steps:
        raise ProviderError("partialArgs jsonPath '$' names no member")
    return steps


class _Frame:
    __slots__ = ("key", "is_array", "count", "keys")

    def __init__(self, key: str | int | None, is_array: bool) -> None:
        self.key = key
        self.is_array = is_array
        self.count = 0
        self.keys: set[str] = set()


class PartialArgsWriter:
    """Serialize Vertex ``partialArgs`` (JSONPath assignments, in document order) as JSON text.

    Each :meth:`apply` returns the text that extends the document so far, so the pieces
    concatenate to one JSON object once :meth:`close` has added the closing brackets.

    Raises
    ------
    ProviderError
        A path that goes back into a member already closed, or an unreadable path.
    """

    __slots__ = ("_frames", "_open_string")

    def __init__(self) -> None:
        self._frames: list[_Frame] = []
        self._open_string: list[str | int] | None = None

    def apply(self, entry: dict[str, Any]) -> str:
        """Text for one ``partialArgs`` entry (``jsonPath``, one value field, ``willContinue``)."""
        path = _parse_path(str(entry.get("jsonPath") or ""))
        more = bool(entry.get("willContinue"))
        text: list[str] = []
        if not self._frames:
            self._frames.append(_Frame(None, False))
            text.append("{")
        if self._open_string is not None:
            if path == self._open_string and "stringValue" in entry:
                text.append(_escaped(str(entry["stringValue"])))
                if not more:
                    text.append('"')
                    self._open_string = None
                return "".join(text)
            text.append('"')
            self._open_string = None
        parents, leaf = path[:-1], path[-1]
        # Keep the open containers that are a prefix of this path; close the others.
        depth = 0
        while depth < len(parents) and depth + 1 < len(self._frames) and self._frames[depth + 1].key == parents[depth]:
            depth += 1
        while len(self._frames) > depth + 1:
            text.append("]" if self._frames.pop().is_array else "}")
        for i in range(depth, len(parents)):
            text.append(self._member(self._frames[-1], parents[i], entry))
            child_is_array = isinstance(path[i + 1], int)
            text.append("[" if child_is_array else "{")
            self._frames.append(_Frame(parents[i], child_is_array))
        text.append(self._member(self._frames[-1], leaf, entry))
        if "stringValue" in entry:
            text.append('"' + _escaped(str(entry["stringValue"])))
            if more:
                self._open_string = path
            else:
                text.append('"')
        else:
            text.append(orjson.dumps(_value(entry)).decode())
        return "".join(text)

    def close(self) -> str:
        """The text that closes the open string and every open container ("" if none)."""
        text = ['"'] if self._open_string is not None else []
        self._open_string = None
        while self._frames:
            text.append("]" if self._frames.pop().is_array else "}")
        return "".join(text)

    @staticmethod
    def _member(frame: _Frame, step: str | int, entry: dict[str, Any]) -> str:
        sep = "," if frame.count else ""
        if frame.is_array:
            if not isinstance(step, int) or step != frame.count:
                raise ProviderError(f"partialArgs out of document order at {entry.get('jsonPath')!r}")
            frame.count += 1
            return sep
        if not isinstance(step, str) or step in frame.keys:
            raise ProviderError(f"partialArgs out of document order at {entry.get('jsonPath')!r}")
        frame.keys.add(step)
        frame.count += 1
        return sep + orjson.dumps(step).decode() + ":"


def _escaped(text: str) -> str:
    return orjson.dumps(text).decode()[1:-1]


def _value(entry: dict[str, Any]) -> Any:
    if "numberValue" in entry:
        return entry["numberValue"]
    if "boolValue" in entry:
        return bool(entry["boolValue"])
    if "structValue" in entry:
        return entry["structValue"]
    if "listValue" in entry:
        value = entry["listValue"]
        return value.get("values", []) if isinstance(value, dict) else value
    if "nullValue" in entry:
        return None
    raise ProviderError(f"partialArgs entry without a value: {entry!r}")


class GeminiDecoder(SSEJsonDecoder):
    """Decode a Gemini ``streamGenerateContent?alt=sse`` body into raygent chunks.

    A pure, synchronous state machine: bytes in (cut anywhere), chunks out; the same bytes give
    the same chunks (and the same made-up call ids) for every chunking. See the module docstring.

    Attributes
    ----------
    received : list of Chunk
        Every chunk decoded so far, in order.

    Examples
    --------
    >>> d = GeminiDecoder()
    >>> d.feed(b'data: {"candidates":[{"content":{"parts":[{"text":"Hi"}]},"finishReason":"STOP"}]}\\r\\n\\r\\n')
    [TextDelta(text='Hi')]
    >>> d.finish()
    [Done(finish_reason='STOP')]
    """

    __slots__ = ("_calls", "_open", "_writer", "_finish_reason", "_usage", "_response_id")

    def __init__(self) -> None:
        super().__init__()
        self._calls: list[ToolCallState] = []
        self._open: ToolCallState | None = None
        self._writer: PartialArgsWriter | None = None
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self._response_id = ""

    def _payload(self, payload: dict[str, Any], event: str, out: list[Chunk]) -> None:
        if payload.get("error") or event == "error":
            raise stream_error(payload.get("error") or payload, self.received + out)
        if not self._response_id and isinstance(payload.get("responseId"), str):
            self._response_id = payload["responseId"]
        for candidate in payload.get("candidates") or ():
            if not isinstance(candidate, dict) or candidate.get("index", 0) != 0:
                continue
            content = candidate.get("content") or {}
            for part in content.get("parts") or ():
                if isinstance(part, dict):
                    self._part(part, out)
            if candidate.get("finishReason"):
                self._finish_reason = str(candidate["finishReason"])
            break
        feedback = payload.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self._finish_reason = str(feedback["blockReason"])
        usage = payload.get("usageMetadata")
        if isinstance(usage, dict) and ("promptTokenCount" in usage or "candidatesTokenCount" in usage):
            self._usage = Usage(
                input_tokens=int(usage.get("promptTokenCount") or 0),
                output_tokens=int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0),
            )

    def _part(self, part: dict[str, Any], out: list[Chunk]) -> None:
        text = part.get("text")
        if isinstance(text, str):
            if text:
                out.append(ReasoningDelta(text) if part.get("thought") else TextDelta(text))
            return
        call = part.get("functionCall")
        if not isinstance(call, dict):
            return
        more = bool(call.get("willContinue"))
        if self._open is not None and call.get("name") and not call.get("partialArgs"):
            self._end_open(out)  # a new call begins: the open one is complete
        if self._open is not None:
            for entry in call.get("partialArgs") or ():
                if isinstance(entry, dict):
                    self._open.add(self._writer_here().apply(entry), out)
            if not more:
                self._end_open(out)
            return
        name = call.get("name")
        if not name:
            if call.get("partialArgs"):
                raise ProviderError("functionCall.partialArgs outside of an open function call")
            return  # the empty closing functionCall of a stream already ended
        state = self._new_call(str(name), call.get("id"), out)
        if more:
            self._open = state
            self._writer = PartialArgsWriter()
            for entry in call.get("partialArgs") or ():
                if isinstance(entry, dict):
                    state.add(self._writer.apply(entry), out)
            return
        args = call.get("args")
        state.add(orjson.dumps(args if isinstance(args, dict) else {}).decode(), out)
        state.end(out)

    def _writer_here(self) -> PartialArgsWriter:
        assert self._writer is not None
        return self._writer

    def _new_call(self, name: str, call_id: Any, out: list[Chunk]) -> ToolCallState:
        index = len(self._calls)
        if not call_id:
            call_id = (f"{SYNTHETIC_ID_PREFIX}{self._response_id}_{index}" if self._response_id
                       else f"{SYNTHETIC_ID_PREFIX}{uuid.uuid4().hex[:24]}")
        state = ToolCallState(index, id=str(call_id), name=name)
        self._calls.append(state)
        state.start(out)
        return state

    def _end_open(self, out: list[Chunk]) -> None:
        if self._open is None:
            return
        state, writer = self._open, self._writer_here()
        self._open = self._writer = None
        state.add(writer.close(), out)
        state.end(out)

    def _end_of_body(self, out: list[Chunk]) -> None:
        if self._finish_reason is None:
            raise self._broken("stream ended without finishReason", out)
        self._end_open(out)
        if self._usage is not None:
            out.append(self._usage)
        out.append(Done(finish_reason=self._finish_reason))
        self._closed = True


def decode_gemini(chunks: Iterable[bytes]) -> list[Chunk]:
    """Decode a whole Gemini ``alt=sse`` stream given as byte pieces (see ``decode_stream``)."""
    return GeminiDecoder.decode_all(chunks)


def decode_gemini_response(body: bytes) -> list[Chunk]:
    """Decode a whole ``:generateContent`` response into raygent chunks.

    One ``GenerateContentResponse``, read as the only event of a stream, so every decision of
    :class:`GeminiDecoder` holds (first candidate, thought parts, made-up call ids, usage,
    ``finishReason`` or ``promptFeedback.blockReason``).

    Parameters
    ----------
    body : bytes
        The response body.

    Returns
    -------
    list of Chunk
        :class:`~raygent.messages.Done` last.

    Raises
    ------
    ProviderError
        The body is not a JSON object, carries an ``error`` object, or has neither a
        ``finishReason`` nor a ``blockReason``.
    """
    payload = load_response(body)
    if payload.get("error"):
        raise response_error(payload["error"])
    decoder = GeminiDecoder()
    out: list[Chunk] = []
    decoder._payload(payload, "", out)
    if decoder._finish_reason is None:
        raise ProviderError(f"Gemini response without finishReason: {body[:PAYLOAD_PREVIEW_CHARS]!r}")
    decoder._end_of_body(out)
    return out


# --- request --------------------------------------------------------------------------------


def to_gemini_request(messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Convert raygent messages and tool schemas to ``contents``, ``systemInstruction``, ``tools``.

    Parameters
    ----------
    messages : sequence of Message
        ``SystemMessage`` texts are joined into ``systemInstruction``; ``UserMessage`` is a
        ``user`` text part; ``AssistantMessage`` a ``model`` turn with a text part and one
        ``functionCall`` part per call (ids made by raygent are not sent back); ``ToolMessage``
        a ``functionResponse`` part (``response: {"content": text}``, or ``{"error": text}``)
        in a ``user`` turn. Consecutive turns of one role are merged.
    tools : sequence of dict
        ``{"name", "description", "parameters"}`` schemas, sent as ``functionDeclarations``
        with the JSON Schema in ``parametersJsonSchema``.

    Returns
    -------
    dict
        ``{"contents": [...]}`` plus ``systemInstruction`` and ``tools`` when there are any.

    Raises
    ------
    TypeError
        For an object that is not a raygent message.
    """
    system, contents = alternating_turns(messages, _parts_of, parts_key="parts")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": t["name"], "description": t.get("description", ""), "parametersJsonSchema": parameters_of(t)}
            for t in tools]}]
    return body


def _parts_of(message: UserMessage | AssistantMessage | ToolMessage) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(message, UserMessage):
        return "user", [{"text": message.content}]
    if isinstance(message, AssistantMessage):
        parts: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
        for c in message.tool_calls:
            call: dict[str, Any] = {"name": c.name, "args": c.arguments}
            if not c.id.startswith(SYNTHETIC_ID_PREFIX):
                call["id"] = c.id
            parts.append({"functionCall": call})
        return "model", parts
    response: dict[str, Any] = {"name": message.name,
                                "response": {"error" if message.is_error else "content": message.content}}
    if not message.call_id.startswith(SYNTHETIC_ID_PREFIX):
        response["id"] = message.call_id
    return "user", [{"functionResponse": response}]


class GeminiProvider(HTTPStreamProvider):
    """A Gemini model behind ``POST {base_url}/models/{model}:streamGenerateContent?alt=sse``.

    Parameters
    ----------
    model : str
        The model id, e.g. ``"gemini-2.5-flash"`` (a leading ``models/`` is accepted).
    base_url : str, optional
        API root including the version. Default: ``$GEMINI_BASE_URL`` or
        ``https://generativelanguage.googleapis.com/v1beta``.
    api_key : str, optional
        Sent as ``x-goog-api-key``. Default: ``$GEMINI_API_KEY``, else ``$GOOGLE_API_KEY``;
        empty sends no key (e.g. a proxy, or Vertex with an ``Authorization`` header in
        ``headers``).
    headers : dict, optional
        Extra request headers (added after the defaults, so they can override them).
    temperature : float, optional
        ``generationConfig.temperature``; omitted when None.
    max_output_tokens : int, optional
        ``generationConfig.maxOutputTokens``; omitted when None.
    timeout_s : float, default 600
        Seconds allowed for the request and for each read of the stream (connect: 30 s at most).
    max_retries : int, default 2
        Retries for HTTP 429, 5xx and connection failures, waiting ``Retry-After`` or an
        exponential backoff with jitter, each wait at most 60 s; only before any chunk.
    transport : httpx.AsyncBaseTransport, optional
        Custom transport (proxies, tests).

    Attributes
    ----------
    name : str
        ``"gemini:<model>"``.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        timeout_s: float = 600,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        model = model.removeprefix("models/")
        if api_key is None:
            api_key = os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or ""
        all_headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if api_key:
            all_headers["x-goog-api-key"] = api_key
        all_headers.update(headers or {})
        super().__init__(
            model, name=f"gemini:{model}",
            base_url=base_url or os.environ.get("GEMINI_BASE_URL") or DEFAULT_BASE_URL,
            headers=all_headers, timeout_s=timeout_s, max_retries=max_retries, transport=transport,
        )
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], *, stream: bool = True
    ) -> dict[str, Any]:
        """The JSON body :meth:`stream` or :meth:`complete` posts (the same: the URL says
        which): ``contents`` and, when given, ``systemInstruction``, ``tools`` and
        ``generationConfig``."""
        body = to_gemini_request(messages, tools)
        config: dict[str, Any] = {}
        if self.temperature is not None:
            config["temperature"] = self.temperature
        if self.max_output_tokens is not None:
            config["maxOutputTokens"] = self.max_output_tokens
        if config:
            body["generationConfig"] = config
        return body

    decoder = GeminiDecoder

    def decode_response(self, body: bytes) -> list[Chunk]:
        return decode_gemini_response(body)

    def stream_url(self) -> str:
        return f"{self.base_url}/models/{quote(self.model, safe='')}:streamGenerateContent?alt=sse"

    def complete_url(self) -> str:
        return f"{self.base_url}/models/{quote(self.model, safe='')}:generateContent"

