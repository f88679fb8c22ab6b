"""The request side shared by the wire formats: raygent messages in the shape every API wants.

Two families: the OpenAI APIs keep the system prompt inline and one item per message
(:func:`inline_items`); Anthropic
and Gemini take the system prompt apart and want the turns to alternate between two roles, so
consecutive messages of one role (an assistant's tool calls, then several tool results) are
merged into one turn (:func:`alternating_turns`). Each format module supplies only its per-message parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from raygent.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage

__all__ = [
    "alternating_turns",
    "inline_items",
    "arguments_json",
    "not_a_message",
    "parameters_of",
]

_EMPTY_OBJECT_SCHEMA = {"type": "object", "properties": {}}


def not_a_message(message: object) -> TypeError:
    """The error for an object in the conversation that is not a raygent message."""
    return TypeError(f"not a raygent message: {type(message).__name__}")


def arguments_json(arguments: dict[str, Any]) -> str:
    """Tool-call arguments as the JSON text the OpenAI APIs carry in ``arguments``."""
    return orjson.dumps(arguments).decode()


def parameters_of(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool schema's ``parameters`` JSON Schema; an empty object schema when it has none
    (Anthropic and Gemini require one)."""
    return tool.get("parameters") or dict(_EMPTY_OBJECT_SCHEMA)


def alternating_turns(
    messages: Sequence[Message],
    parts_of: Callable[[UserMessage | AssistantMessage | ToolMessage], tuple[str, list[dict[str, Any]]]],
    *,
    parts_key: str,
) -> tuple[str, list[dict[str, Any]]]:
    """Pull out the system texts and merge consecutive same-role messages into one turn.

    Parameters
    ----------
    messages : sequence of Message
        The conversation, oldest first.
    parts_of : callable
        ``(message) -> (role, parts)`` for a user, assistant or tool message; a message with no
        parts (an assistant turn with neither text nor calls) is left out.
    parts_key : str
        The key of a turn's parts: ``"content"`` (Anthropic) or ``"parts"`` (Gemini).

    Returns
    -------
    (str, list of dict)
        The ``SystemMessage`` texts joined with a blank line (``""`` if none), and the turns
        ``{"role": role, parts_key: [...]}`` with no two neighbours of the same role.

    Raises
    ------
    TypeError
        For an object that is not a raygent message.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            system.append(message.content)
            continue
        if not isinstance(message, (UserMessage, AssistantMessage, ToolMessage)):
            raise not_a_message(message)
        role, parts = parts_of(message)
        if not parts:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1][parts_key].extend(parts)
        else:
            turns.append({"role": role, parts_key: parts})
    return "\n\n".join(system), turns


def inline_items(
    messages: Sequence[Message],
    assistant_items: Callable[[AssistantMessage], list[dict[str, Any]]],
    tool_item: Callable[[ToolMessage], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The OpenAI family's list: system and user messages inline as ``{"role", "content"}``, the
    assistant's turns and tool results in the format's own items, in conversation order.

    Raises
    ------
    TypeError
        For an object that is not a raygent message.
    """
    items: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            items.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            items.append({"role": "user", "content": message.content})
        elif isinstance(message, AssistantMessage):
            items += assistant_items(message)
        elif isinstance(message, ToolMessage):
            items.append(tool_item(message))
        else:
            raise not_a_message(message)
    return items
