"""The ``Provider`` protocol: the one seam between raygent and a model API."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from raygent.messages import Chunk, Message

__all__ = ["Provider", "decode_stream", "decode_response"]


@runtime_checkable
class Provider(Protocol):
    """A model that streams one response for a conversation and a set of tools.

    Implementations translate their wire format into :mod:`raygent.messages` chunks at this
    edge; nothing past a provider knows a wire format.

    Attributes
    ----------
    name : str
        Shown in output and logs, ``"<kind>:<model>"``, e.g. ``"openai:gpt-4o-mini"``.

    Notes
    -----
    The chunk contract of :meth:`stream`:

    - :class:`~raygent.messages.TextDelta` and :class:`~raygent.messages.ReasoningDelta` in
      the order the model produced them;
    - for each tool call: one ``ToolCallStart``, zero or more ``ToolCallDelta``, one
      ``ToolCallEnd`` whose ``call.arguments`` is the parsed JSON object. Ends come in index
      order, as soon as a call is complete and at the latest when the response finishes;
    - at most one :class:`~raygent.messages.Usage`;
    - exactly one :class:`~raygent.messages.Done`, last.

    Errors are raised, never yielded, as :class:`~raygent.errors.ProviderError` subclasses:
    ``ProviderHTTPError`` / ``RateLimited`` for HTTP failures after retries, ``StreamBroken``
    (with the chunks received so far) when a response breaks off midway,
    ``ToolCallArgumentsError`` for tool-call arguments that are not a JSON object.

    A provider may also have ``async complete(messages, tools) -> list[Chunk]``: the whole
    response at once, in the same vocabulary with whole pieces (``Session(stream=False)`` calls
    it when present). The HTTP providers post the request without streaming and decode the
    JSON answer with :func:`decode_response`.
    """

    name: str

    def stream(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> AsyncIterator[Chunk]:
        """Stream the model's response to ``messages``.

        Parameters
        ----------
        messages : sequence of Message
            The conversation so far, oldest first.
        tools : sequence of dict
            Tool schemas the model may call, each ``{"name": str, "description": str,
            "parameters": <JSON Schema object>}``; empty for none.

        Returns
        -------
        AsyncIterator[Chunk]
            The response's chunks, per the contract above.

        Raises
        ------
        raygent.errors.ProviderError
            Or a subclass, as described above.
        """
        ...


# Wire formats decode_stream and decode_response know, each mapped to its module and the names of
# its pure decoders (stream, whole response); imported on first use so that importing the
# protocol does not import every provider.
_DECODERS = {
    "openai-chat": ("raygent.providers._openai", "decode_openai_chat", "decode_openai_chat_response"),
    "openai-responses": ("raygent.providers._responses", "decode_openai_responses",
                         "decode_openai_responses_response"),
    "anthropic": ("raygent.providers._anthropic", "decode_anthropic", "decode_anthropic_response"),
    "gemini": ("raygent.providers._gemini", "decode_gemini", "decode_gemini_response"),
}


def _decoder(api: str, which: int) -> Callable[[Any], list[Chunk]]:
    target = _DECODERS.get(api)
    if target is None:
        raise ValueError(f"unknown api {api!r}; supported: {', '.join(sorted(_DECODERS))}")
    decode: Callable[[Any], list[Chunk]] = getattr(importlib.import_module(target[0]), target[which])
    return decode


def decode_stream(api: str, chunks: Iterable[bytes]) -> list[Chunk]:
    """Decode a recorded streamed response body into raygent chunks, without any I/O.

    The same decoder the HTTP provider uses, so a recorded body (or one cut into arbitrary
    pieces) gives exactly the chunks the provider would have yielded.

    Parameters
    ----------
    api : str
        The wire format, SSE-framed as served:

        - ``"openai-chat"``: OpenAI Chat Completions with ``stream: true``
          (:class:`~raygent.providers.OpenAIChatDecoder`);
        - ``"openai-responses"``: OpenAI Responses with ``stream: true``
          (:class:`~raygent.providers.OpenAIResponsesDecoder`);
        - ``"anthropic"``: Anthropic Messages with ``stream: true``
          (:class:`~raygent.providers.AnthropicDecoder`);
        - ``"gemini"``: Gemini ``streamGenerateContent?alt=sse``
          (:class:`~raygent.providers.GeminiDecoder`).
    chunks : iterable of bytes
        The response body, cut anywhere, in order.

    Returns
    -------
    list of Chunk
        The chunks per the :class:`Provider` contract, :class:`~raygent.messages.Done` last.

    Raises
    ------
    ValueError
        For an unknown ``api`` (the message names the supported ones).
    raygent.errors.ProviderError
        Or a subclass, exactly as the provider would raise it (``StreamBroken``,
        ``ToolCallArgumentsError`` ...).
    """
    return _decoder(api, 1)(chunks)


def decode_response(api: str, body: bytes) -> list[Chunk]:
    """Decode a whole (non-streamed) JSON response body into raygent chunks, without any I/O.

    The decoder :meth:`complete` of the HTTP providers uses. The chunks follow the
    :class:`Provider` contract with whole pieces: one text or reasoning delta per part, per tool
    call a ``ToolCallStart``, one ``ToolCallDelta`` (the whole arguments) and a
    ``ToolCallEnd``, then ``Usage`` and ``Done``. The text, tool calls (ids, names, arguments),
    usage and finish reason are those :func:`decode_stream` gives for the same response streamed.

    Parameters
    ----------
    api : str
        The wire format: ``"openai-chat"`` (a ``chat.completion`` object), ``"openai-responses"``
        (a Response object), ``"anthropic"`` (a Message object) or ``"gemini"`` (a
        ``GenerateContentResponse`` from ``:generateContent``).
    body : bytes
        The whole response body.

    Returns
    -------
    list of Chunk
        :class:`~raygent.messages.Done` last.

    Raises
    ------
    ValueError
        For an unknown ``api`` (the message names the supported ones).
    raygent.errors.ProviderError
        A body that is not the format's JSON object or that carries an error object;
        ``ToolCallArgumentsError`` for tool-call arguments that are not a JSON object.
    """
    return _decoder(api, 2)(body)
