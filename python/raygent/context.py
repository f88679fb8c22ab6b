"""Conversation history and the window of it that fits the model's token budget.

The full history is append-only and is never trimmed; :meth:`Context.window` is a view of it
that fits ``budget_tokens``. The window always keeps the system prompt and the newest unit (the
current prompt or the open tool round) and drops whole units from the oldest end, where a unit is
a user message, an assistant message without tool calls, or an assistant message with tool calls
together with its tool results, so a tool call is never separated from its result.

Token counts are an estimate: ``ceil(chars / 4) + 4`` per message (the rule of thumb in OpenAI's
tokenizer guide: about four characters of English per token, plus a few tokens of per-message
framing). Counts are computed once per message and cached.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import orjson

from raygent.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage

__all__ = ["Context", "estimate_tokens"]

_MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(msg: Message) -> int:
    """Estimated tokens of one message: ``ceil(chars / 4) + 4``.

    Tool calls count their name and their arguments serialized as JSON.
    """
    chars = len(msg.content)
    if isinstance(msg, AssistantMessage):
        for call in msg.tool_calls:
            chars += len(call.name) + len(orjson.dumps(call.arguments))
    elif isinstance(msg, ToolMessage):
        chars += len(msg.name)
    return math.ceil(chars / 4) + _MESSAGE_OVERHEAD_TOKENS


class Context:
    """History plus a token budget.

    Parameters
    ----------
    system_prompt : str or None
        Kept at the start of every window.
    budget_tokens : int, default 32_000
        Tokens the window may use (estimated; see module docs).

    Raises
    ------
    ValueError
        From :meth:`append` when a second system message is appended, or a tool result answers
        no pending tool call (the history is unchanged).
    """

    def __init__(self, *, system_prompt: str | None = None, budget_tokens: int = 32_000) -> None:
        if budget_tokens <= 0:
            raise ValueError(f"budget_tokens must be positive, got {budget_tokens}")
        self.budget_tokens = budget_tokens
        self._history: list[Message] = []
        self._tokens: list[int] = []
        # Unit boundaries: index in _history where each unit starts (system excluded).
        self._unit_starts: list[int] = []
        self._pending_calls: set[str] = set()
        if system_prompt is not None:
            self.append(SystemMessage(system_prompt))

    @property
    def history(self) -> list[Message]:
        """Every message appended, in order (a copy)."""
        return list(self._history)

    @property
    def pending_tool_calls(self) -> frozenset[str]:
        """Ids of tool calls of the open round that have no result yet."""
        return frozenset(self._pending_calls)

    def extend(self, messages: Iterable[Message]) -> None:
        for m in messages:
            self.append(m)

    def append(self, msg: Message) -> None:
        if isinstance(msg, SystemMessage):
            if self._history:
                raise ValueError("the system prompt must be the first message, and only one")
        elif isinstance(msg, ToolMessage):
            if msg.call_id not in self._pending_calls:
                raise ValueError(f"tool result for unknown or already answered call {msg.call_id!r}")
            self._pending_calls.discard(msg.call_id)
        else:
            if isinstance(msg, UserMessage) and self._pending_calls:
                # Providers reject a history where a tool call has no result, so the caller
                # must answer (or cancel) every call before the next prompt.
                raise ValueError(
                    f"tool calls {sorted(self._pending_calls)} have no result yet"
                )
            self._unit_starts.append(len(self._history))
            if isinstance(msg, AssistantMessage):
                self._pending_calls = {c.id for c in msg.tool_calls}
        self._history.append(msg)
        self._tokens.append(estimate_tokens(msg))

    def total_tokens(self) -> int:
        """Estimated tokens of the whole history."""
        return sum(self._tokens)

    def window(self) -> list[Message]:
        """The newest messages that fit ``budget_tokens``: a new list, history untouched.

        Always contains the system prompt (if any) and the newest unit, even when those alone
        exceed the budget; older units are dropped whole, oldest first.
        """
        has_system = bool(self._history) and isinstance(self._history[0], SystemMessage)
        used = self._tokens[0] if has_system else 0
        first_kept = len(self._history)
        for i in range(len(self._unit_starts) - 1, -1, -1):
            start = self._unit_starts[i]
            cost = sum(self._tokens[start:first_kept])
            is_newest = first_kept == len(self._history)
            if not is_newest and used + cost > self.budget_tokens:
                break
            used += cost
            first_kept = start
        head = self._history[:1] if has_system else []
        return head + self._history[first_kept:]

    def window_tokens(self) -> int:
        return sum(estimate_tokens(m) for m in self.window())
