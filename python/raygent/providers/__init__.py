"""Model providers: the :class:`Provider` protocol and its implementations.

Each provider translates one wire format into :mod:`raygent.messages` chunks at this edge:
OpenAI Chat Completions, OpenAI Responses, Anthropic Messages and Gemini
``streamGenerateContent``, each over plain httpx (no vendor SDK), plus the offline scripted
model and the replay of recorded streams (:class:`ReplayProvider`). :func:`decode_stream` and
:func:`decode_response` run the same decoders on recorded bytes (streamed and whole responses),
without I/O.
"""

from raygent.providers._anthropic import AnthropicDecoder, AnthropicProvider
from raygent.providers._base import Provider, decode_response, decode_stream
from raygent.providers._gemini import GeminiDecoder, GeminiProvider
from raygent.providers._openai import OpenAIChatDecoder, OpenAIChatProvider
from raygent.providers._responses import OpenAIResponsesDecoder, OpenAIResponsesProvider
from raygent.providers._ratelimit import RateLimits
from raygent.providers._replay import NoRecordedTiming, RecordedTiming, ReplayProvider, recorded_timing
from raygent.providers._scripted import ScriptedModel

__all__ = [
    "Provider",
    "OpenAIChatProvider",
    "OpenAIChatDecoder",
    "OpenAIResponsesProvider",
    "OpenAIResponsesDecoder",
    "AnthropicProvider",
    "AnthropicDecoder",
    "GeminiProvider",
    "GeminiDecoder",
    "ScriptedModel",
    "ReplayProvider",
    "RecordedTiming",
    "NoRecordedTiming",
    "recorded_timing",
    "RateLimits",
    "decode_stream",
    "decode_response",
]
