"""Conversation history and the window of it that fits the model's token budget.

The full history is append-only and is never trimmed, elided or summarized: :attr:`Context.history`
returns every message exactly as appended, and an optional append-only JSONL file
(``log_path``) keeps a durable copy. :meth:`Context.window` is a *view* of it that fits
``budget_tokens``, built by this policy:

1. **Units.** The history after the system prompt is cut into units: a user message, an
   assistant message without tool calls, or an assistant message with tool calls together with
   all its tool results. Units are kept or dropped whole, so a tool call is never separated
   from its result.
2. **Always kept:** the system prompt, every pinned unit (:meth:`Context.pin`, or
   ``append(msg, pinned=True)``), and the newest unit (the current prompt or the open tool
   round), even when these alone exceed the budget.
3. **Elision.** Once the whole history no longer fits ``budget_tokens``, a tool result longer
   than ``elide_over_chars`` characters is shown with its head and tail (``elide_keep_chars``
   characters each) around a marker ``[... N bytes elided ...]`` (N = UTF-8 bytes left out);
   the history keeps the full text. While everything fits, the model sees every output whole:
   cutting a search result the model is about to act on costs more than the tokens it saves.
4. **Summary.** After :meth:`Context.compact`, the units it summarized are replaced in the
   window by one user message holding the provider's summary (when it fits beside the
   always-kept units).
5. **Fill.** Remaining units are added newest first while they fit; the first one that does
   not fit stops the fill, so the window is a contiguous suffix of the conversation plus the
   always-kept parts, in history order.

Token counts are exact when the model's tokenizer is available offline (``tiktoken`` installed
*and* its encoding file already cached locally; see :func:`token_counter`), otherwise the
estimate ``ceil(chars / 4) + 4`` per message (the rule of thumb in OpenAI's tokenizer guide:
about four characters of English per token, plus a few tokens of per-message framing). Counts
are computed once per message and cached.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from raygent.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    TextDelta,
    ToolMessage,
    UserMessage,
)

__all__ = [
    "Context",
    "TokenCounter",
    "estimate_tokens",
    "elide_middle",
    "token_counter",
    "SUMMARY_PREFIX",
]

_MESSAGE_OVERHEAD_TOKENS = 4

TokenCounter = Callable[[Message], int]
"""Tokens of one message (content, tool-call names and JSON arguments, per-message framing)."""

SUMMARY_PREFIX = "[Summary of the earlier conversation]\n"
"""First line of the user message that stands for summarized units in the window."""

_SUMMARY_INSTRUCTION = (
    "You compact an agent's conversation. Summarize the transcript below for the agent that "
    "will continue it: the task, decisions taken, files and identifiers involved, tool results "
    "that still matter, and open questions. Be concise; write plain text."
)


def _message_text(msg: Message) -> str:
    """Everything of a message that costs tokens besides framing, as one string."""
    if isinstance(msg, AssistantMessage) and msg.tool_calls:
        parts = [msg.content]
        for call in msg.tool_calls:
            parts.append(call.name)
            parts.append(orjson.dumps(call.arguments).decode())
        return "".join(parts)
    if isinstance(msg, ToolMessage):
        return msg.content + msg.name
    return msg.content


def estimate_tokens(msg: Message) -> int:
    """Estimated tokens of one message: ``ceil(chars / 4) + 4``.

    Tool calls count their name and their arguments serialized as JSON; tool results count
    their tool name.
    """
    chars = len(msg.content)
    if isinstance(msg, AssistantMessage):
        for call in msg.tool_calls:
            chars += len(call.name) + len(orjson.dumps(call.arguments))
    elif isinstance(msg, ToolMessage):
        chars += len(msg.name)
    return math.ceil(chars / 4) + _MESSAGE_OVERHEAD_TOKENS


# tiktoken downloads encoding files on first use and caches them under the SHA-1 of the URL.
_TIKTOKEN_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def _tiktoken_cache_dirs() -> list[Path]:
    dirs = [os.environ.get("TIKTOKEN_CACHE_DIR"), os.environ.get("DATA_GYM_CACHE_DIR")]
    out = [Path(d) for d in dirs if d]
    out.append(Path(tempfile.gettempdir()) / "data-gym-cache")
    return out


def _encoding_name(model: str | None) -> str:
    m = (model or "").lower()
    if any(m.startswith(p) for p in ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4")):
        return "o200k_base"
    return "cl100k_base"


def token_counter(model: str | None = None) -> tuple[TokenCounter, bool]:
    """The best offline token counter for ``model``.

    Exact counting uses ``tiktoken`` only when it is installed *and* the encoding file is
    already in its local cache (``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR`` or
    ``<tmp>/data-gym-cache``): tiktoken would otherwise fetch it from the network, which a
    runtime must not depend on. OpenAI models map to ``o200k_base`` (GPT-4o and later) or
    ``cl100k_base``; other models' tokenizers differ, and ``cl100k_base`` is then only an
    approximation, still closer than the character estimate.

    Parameters
    ----------
    model : str or None
        Model name, e.g. ``"gpt-4o-mini"``.

    Returns
    -------
    (counter, exact) : (callable, bool)
        ``counter(msg) -> tokens``; ``exact`` is False when the counter is
        :func:`estimate_tokens`.
    """
    try:
        import tiktoken  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return estimate_tokens, False
    name = _encoding_name(model)
    key = hashlib.sha1(_TIKTOKEN_URLS[name].encode()).hexdigest()
    if not any((d / key).is_file() for d in _tiktoken_cache_dirs()):
        return estimate_tokens, False
    try:
        enc = tiktoken.get_encoding(name)
    except Exception:  # a corrupt cache file, or anything else: the estimate still works
        return estimate_tokens, False

    def count(msg: Message) -> int:
        return len(enc.encode(_message_text(msg), disallowed_special=())) + _MESSAGE_OVERHEAD_TOKENS

    return count, True


def elide_middle(text: str, *, keep_chars: int) -> tuple[str, int]:
    """Keep ``keep_chars`` characters at each end of ``text`` around a marker.

    Returns
    -------
    (text, elided_bytes) : (str, int)
        The shortened text with ``"\\n[... N bytes elided ...]\\n"`` in the middle, and N, the
        UTF-8 size of what was left out; ``(text, 0)`` when nothing would be saved.
    """
    if len(text) <= 2 * keep_chars:
        return text, 0
    middle = text[keep_chars : len(text) - keep_chars]
    n = len(middle.encode("utf-8", "surrogatepass"))
    return f"{text[:keep_chars]}\n[... {n} bytes elided ...]\n{text[len(text) - keep_chars:]}", n


_MESSAGE_CODEC = msgspec.json.Decoder(Message)


class Context:
    """History plus a token budget (see the module docs for the window policy).

    Parameters
    ----------
    system_prompt : str or None
        Kept at the start of every window.
    budget_tokens : int, default 32_000
        Tokens the window may use.
    count_tokens : callable or None
        ``count_tokens(msg) -> int``; default: :func:`token_counter` for ``model`` (exact when
        its tokenizer is available offline, else :func:`estimate_tokens`).
    model : str or None
        Model whose tokenizer to look for when ``count_tokens`` is not given.
    elide_over_chars : int, default 8_000
        Tool results longer than this (characters) are elided in the middle in the window.
    elide_keep_chars : int, default 2_000
        Characters kept at each end of an elided tool result.
    compact_threshold : float, default 0.9
        :meth:`needs_compaction` is true when the whole conversation (elided) costs more than
        this fraction of ``budget_tokens``.
    log_path : str or os.PathLike or None
        Append-only JSONL file: one message per line, written as it is appended (read back
        with :meth:`load_history`).

    Raises
    ------
    ValueError
        From :meth:`append` when a second system message is appended, or a tool result answers
        no pending tool call (the history is unchanged).
    """

    def __init__(
        self,
        *,
        system_prompt: str | None = None,
        budget_tokens: int = 32_000,
        count_tokens: TokenCounter | None = None,
        model: str | None = None,
        elide_over_chars: int = 8_000,
        elide_keep_chars: int = 2_000,
        compact_threshold: float = 0.9,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if budget_tokens <= 0:
            raise ValueError(f"budget_tokens must be positive, got {budget_tokens}")
        if not 0 < compact_threshold <= 1:
            raise ValueError(f"compact_threshold must be in (0, 1], got {compact_threshold}")
        if elide_keep_chars < 0 or elide_over_chars < 2 * elide_keep_chars:
            raise ValueError("need 0 <= 2 * elide_keep_chars <= elide_over_chars")
        self.budget_tokens = budget_tokens
        if count_tokens is None:
            count_tokens, self.exact_tokens = token_counter(model)
        else:
            self.exact_tokens = True
        self._count = count_tokens
        self.elide_over_chars = elide_over_chars
        self.elide_keep_chars = elide_keep_chars
        self.compact_threshold = compact_threshold
        self._history: list[Message] = []
        self._tokens: list[int] = []
        self._total_tokens = 0
        # Window form of each message (elided tool output) and its tokens, built lazily.
        self._views: dict[int, tuple[Message, int]] = {}
        # Unit boundaries: index in _history where each unit starts (system excluded).
        self._unit_starts: list[int] = []
        self._pinned: set[int] = set()  # unit indices
        self._pending_calls: set[str] = set()
        # Summary of units [0, _summary_upto) that are not pinned, and its message/tokens.
        self._summary: tuple[Message, int] | None = None
        self._summary_upto = 0
        self.compactions = 0
        self.compaction_failures = 0
        self._log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115
        if system_prompt is not None:
            self.append(SystemMessage(system_prompt))

    # --- history ------------------------------------------------------------------------------

    @property
    def history(self) -> list[Message]:
        """Every message appended, in order, as appended (a copy)."""
        return list(self._history)

    @property
    def pending_tool_calls(self) -> frozenset[str]:
        """Ids of tool calls of the open round that have no result yet."""
        return frozenset(self._pending_calls)

    @property
    def summary(self) -> str | None:
        """The text of the latest compaction summary, if any."""
        return None if self._summary is None else self._summary[0].content[len(SUMMARY_PREFIX) :]

    def extend(self, messages: Iterable[Message]) -> None:
        for m in messages:
            self.append(m)

    def append(self, msg: Message, *, pinned: bool = False) -> None:
        """Append one message to the history.

        Parameters
        ----------
        msg : Message
        pinned : bool, default False
            Pin the unit this message starts or belongs to (see :meth:`pin`).
        """
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
        self._tokens.append(self._count(msg))
        self._total_tokens += self._tokens[-1]
        if pinned and self._unit_starts:
            self._pinned.add(len(self._unit_starts) - 1)
        if self._log is not None:
            self._log.write(msgspec.json.encode(msg) + b"\n")
            self._log.flush()

    def pin(self, index: int) -> None:
        """Always keep (verbatim, never summarized) the unit holding history message ``index``.

        Raises
        ------
        IndexError
            If ``index`` is out of range.
        ValueError
            If it is the system prompt (always kept anyway).
        """
        if not -len(self._history) <= index < len(self._history):
            raise IndexError(f"no message {index} in a history of {len(self._history)}")
        index %= len(self._history)
        unit = self._unit_of(index)
        if unit < 0:
            raise ValueError("the system prompt is always kept; it needs no pin")
        self._pinned.add(unit)

    @property
    def pinned(self) -> list[int]:
        """History indices of the first message of every pinned unit."""
        return [self._unit_starts[u] for u in sorted(self._pinned)]

    def close(self) -> None:
        """Close the JSONL log, if any."""
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def load_history(path: str | os.PathLike[str]) -> list[Message]:
        """Read back a ``log_path`` file written by a context: the full history, in order."""
        with open(path, "rb") as f:
            return [_MESSAGE_CODEC.decode(line) for line in f if line.strip()]

    def total_tokens(self) -> int:
        """Tokens of the whole history, unelided."""
        return self._total_tokens

    # --- window -------------------------------------------------------------------------------

    def _unit_of(self, index: int) -> int:
        lo, hi = 0, len(self._unit_starts) - 1
        found = -1
        while lo <= hi:
            mid = (lo + hi) // 2
            if self._unit_starts[mid] <= index:
                found, lo = mid, mid + 1
            else:
                hi = mid - 1
        return found

    def _unit_range(self, u: int) -> range:
        end = self._unit_starts[u + 1] if u + 1 < len(self._unit_starts) else len(self._history)
        return range(self._unit_starts[u], end)

    def _view(self, i: int) -> tuple[Message, int]:
        """The window form of message ``i`` and its tokens (cached)."""
        msg = self._history[i]
        if self._total_tokens <= self.budget_tokens:
            return msg, self._tokens[i]
        cached = self._views.get(i)
        if cached is not None:
            return cached
        out = (msg, self._tokens[i])
        if isinstance(msg, ToolMessage) and len(msg.content) > self.elide_over_chars:
            text, n = elide_middle(msg.content, keep_chars=self.elide_keep_chars)
            if n:
                short = ToolMessage(msg.call_id, msg.name, text, msg.is_error)
                out = (short, self._count(short))
        self._views[i] = out
        return out

    def _unit_cost(self, u: int) -> int:
        return sum(self._view(i)[1] for i in self._unit_range(u))

    def _system_cost(self) -> int:
        return self._tokens[0] if self._history and isinstance(self._history[0], SystemMessage) else 0

    def _plan(self) -> tuple[list[int], bool]:
        """Units in the window (sorted) and whether the summary is in it."""
        n = len(self._unit_starts)
        if n == 0:
            return [], False
        newest = n - 1
        keep = set(self._pinned) | {newest}
        used = self._system_cost() + sum(self._unit_cost(u) for u in keep)
        with_summary = False
        if self._summary is not None and used + self._summary[1] <= self.budget_tokens:
            used += self._summary[1]
            with_summary = True
        for u in range(newest - 1, self._summary_upto - 1, -1):
            if u in keep:
                continue
            cost = self._unit_cost(u)
            if used + cost > self.budget_tokens:
                break
            used += cost
            keep.add(u)
        return sorted(keep), with_summary

    def window(self) -> list[Message]:
        """The view of the history sent to the model: a new list, history untouched.

        See the module docs for the policy. Tool results over ``elide_over_chars`` appear
        elided; units covered by a compaction summary appear as one summary user message.
        """
        units, with_summary = self._plan()
        out: list[Message] = []
        if self._history and isinstance(self._history[0], SystemMessage):
            out.append(self._history[0])
        placed = not with_summary
        for u in units:
            if not placed and u >= self._summary_upto:
                assert self._summary is not None
                out.append(self._summary[0])
                placed = True
            out.extend(self._view(i)[0] for i in self._unit_range(u))
        if not placed:
            assert self._summary is not None
            out.append(self._summary[0])
        return out

    def window_tokens(self) -> int:
        """Tokens of :meth:`window` (with the same counter as the budget)."""
        units, with_summary = self._plan()
        total = self._system_cost() + sum(self._unit_cost(u) for u in units)
        return total + (self._summary[1] if with_summary and self._summary else 0)

    def floor_tokens(self) -> int:
        """Tokens of what the window always keeps: system prompt, pinned units, newest unit.

        The window fits the budget whenever this does.
        """
        if not self._unit_starts:
            return self._system_cost()
        keep = set(self._pinned) | {len(self._unit_starts) - 1}
        return self._system_cost() + sum(self._unit_cost(u) for u in keep)

    # --- compaction ---------------------------------------------------------------------------

    def _live_cost(self) -> int:
        """Tokens of everything not yet summarized (elided), plus the summary."""
        cost = self._system_cost() + (self._summary[1] if self._summary else 0)
        for u in range(len(self._unit_starts)):
            if u >= self._summary_upto or u in self._pinned:
                cost += self._unit_cost(u)
        return cost

    def needs_compaction(self) -> bool:
        """True when the unsummarized conversation costs over ``compact_threshold`` of the budget."""
        return self._live_cost() > self.compact_threshold * self.budget_tokens

    async def compact(self, provider: Any, *, force: bool = False, target: float = 0.5) -> bool:
        """Summarize the oldest turns with ``provider``, keeping the summary in the window.

        Chooses the oldest unsummarized, unpinned units (never the newest) whose removal brings
        the conversation down to ``target`` of the budget, asks the provider for a summary of
        them (and of the previous summary, if any), and from then on shows that summary in
        their place in the window. The history is not changed.

        Parameters
        ----------
        provider : Provider
            Any object with ``stream(messages, tools)`` yielding :mod:`raygent.messages`
            chunks; called with no tools.
        force : bool, default False
            Compact even when :meth:`needs_compaction` is false.
        target : float, default 0.5
            Fraction of ``budget_tokens`` the conversation should cost afterwards.

        Returns
        -------
        bool
            True when a summary was made. False when nothing needed or could be summarized, or
            the provider failed (raised, or returned no text): the window then falls back to
            trimming, as without compaction (``compaction_failures`` counts these).
        """
        if not force and not self.needs_compaction():
            return False
        n = len(self._unit_starts)
        excess = self._live_cost() - target * self.budget_tokens
        chosen: list[int] = []
        upto = self._summary_upto
        for u in range(self._summary_upto, n - 1):
            if excess <= 0 and chosen:
                break
            upto = u + 1
            if u in self._pinned:
                continue
            chosen.append(u)
            excess -= self._unit_cost(u)
        if not chosen:
            return False
        transcript = self._render(chosen)
        prompt: list[Message] = [SystemMessage(_SUMMARY_INSTRUCTION), UserMessage(transcript)]
        try:
            parts = [c.text async for c in provider.stream(prompt, []) if isinstance(c, TextDelta)]
        except Exception:
            self.compaction_failures += 1
            return False
        text = "".join(parts).strip()
        if not text:
            self.compaction_failures += 1
            return False
        msg = UserMessage(SUMMARY_PREFIX + text)
        self._summary = (msg, self._count(msg))
        self._summary_upto = upto
        self.compactions += 1
        return True

    def _render(self, units: list[int]) -> str:
        lines: list[str] = []
        if self._summary is not None:
            lines.append(self._summary[0].content)
        for u in units:
            for i in self._unit_range(u):
                m = self._view(i)[0]
                if isinstance(m, AssistantMessage):
                    calls = "".join(
                        f"\n  -> {c.name}({orjson.dumps(c.arguments).decode()})" for c in m.tool_calls
                    )
                    lines.append(f"assistant: {m.content}{calls}")
                elif isinstance(m, ToolMessage):
                    lines.append(f"tool {m.name}{' (error)' if m.is_error else ''}: {m.content}")
                else:
                    lines.append(f"user: {m.content}")
        return "\n".join(lines)
