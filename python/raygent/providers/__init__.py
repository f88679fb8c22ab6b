"""Model providers: the :class:`Provider` protocol and its implementations.

Each provider translates one wire format into :mod:`raygent.messages` chunks at this edge.
:func:`decode_stream` runs the same decoders on recorded bytes, without I/O.
"""

from raygent.providers._base import Provider, decode_stream
from raygent.providers._openai import OpenAIChatDecoder, OpenAIChatProvider
from raygent.providers._scripted import ScriptedModel

__all__ = [
    "Provider",
    "OpenAIChatProvider",
    "OpenAIChatDecoder",
    "ScriptedModel",
    "decode_stream",
]
