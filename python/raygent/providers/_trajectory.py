"""A provider that plays back the assistant turns of a recorded trajectory.

:class:`TrajectoryModel` is the model of ``raygent replay``: given the messages of a
:class:`~raygent.replay.Trajectory`, each model turn streams the recorded assistant message as
a real provider would (text deltas, tool-call start / argument deltas parsed as they arrive by
``raygent._native.JsonStream`` / end with the recorded id and arguments, usage, done).

It is a pure function of the conversation it is given: the recording is cut into *prompts*
(:func:`replay_plan`: each user message and the assistant turns that follow it), the prompt
is the number of user messages in the conversation, and the turn within it is the number of
assistant messages after the last user message. The recorded prompts are fed in order by the
caller (``raygent.replay_run``). When a prompt's recorded turns are used up while the
conversation still asks for a response (the recording ends, or the next user message follows
right after tool results), the model answers with an empty closing turn (``Done("stop")``),
which the caller reports as not recorded.

This differs from :class:`~raygent.providers.ReplayProvider`, which replays recorded wire
bytes through a provider's decoder; this one plays decoded messages and has no wire format.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import orjson

from raygent._native import JsonStream
from raygent.messages import (
    AssistantMessage,
    Chunk,
    Done,
    Message,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    UserMessage,
)

__all__ = ["TrajectoryModel", "ReplayPrompt", "replay_plan"]


class ReplayPrompt(msgspec.Struct, frozen=True):
    """One user prompt of a recording and the assistant turns that answered it.

    ``prompt`` is ``""`` for turns the recording gives no user message for (see
    :func:`replay_plan`); the caller then sends an empty prompt, so the conversation keeps one
    user message per prompt.
    """

    prompt: str
    turns: list[AssistantMessage]

    @property
    def needs_closing_turn(self) -> bool:
        """True when the recording gives no final answer to this prompt: its last recorded turn
        calls tools (or there is none), so the runtime asks once more and gets an empty turn."""
        return not self.turns or bool(self.turns[-1].tool_calls)


def replay_plan(messages: Sequence[Message]) -> list[ReplayPrompt]:
    """Cut a recorded conversation into prompts, each with its recorded assistant turns.

    System and tool messages are left out (the system prompt is the caller's to set; tool
    results are the tool runner's to give). Assistant turns recorded before any user message,
    or after a final answer with no user message between (aider records several answers in a
    row), start a prompt of their own whose text is ``""``.
    """
    plan: list[ReplayPrompt] = []
    for m in messages:
        if isinstance(m, UserMessage):
            plan.append(ReplayPrompt(m.content, []))
        elif isinstance(m, AssistantMessage):
            # A turn with no user message before it, or after a final answer (a turn without
            # tool calls ends the prompt in the runtime): sent after an empty prompt.
            if not plan or (plan[-1].turns and not plan[-1].turns[-1].tool_calls):
                plan.append(ReplayPrompt("", []))
            plan[-1].turns.append(m)
    return plan


class TrajectoryModel:
    """Offline provider playing the assistant turns of a recording (see module docs).

    Parameters
    ----------
    messages : sequence of Message
        The recorded conversation (``Trajectory.messages``).
    name : str, default "trajectory"
        Shown in output (``Provider.name``).
    text_delta_chars : int, default 24
        Size of each streamed text delta (characters).
    argument_delta_chars : int, default 16
        Size of each streamed tool-call arguments fragment (characters of JSON).
    """

    def __init__(
        self,
        messages: Sequence[Message],
        *,
        name: str = "trajectory",
        text_delta_chars: int = 24,
        argument_delta_chars: int = 16,
    ) -> None:
        if text_delta_chars < 1 or argument_delta_chars < 1:
            raise ValueError("text_delta_chars and argument_delta_chars must be at least 1")
        self.name = name
        self.plan = replay_plan(messages)
        self.text_delta_chars = text_delta_chars
        self.argument_delta_chars = argument_delta_chars

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], **options: Any) -> TrajectoryModel:
        """Load a trajectory file (:func:`raygent.replay.load_trajectory`) and play it.

        Raises
        ------
        raygent.errors.TrajectoryError
            The file is not a trajectory in a known format.
        """
        from raygent.replay import load_trajectory

        trajectory = load_trajectory(path)
        options.setdefault("name", f"trajectory:{os.fspath(path)}")
        return cls(trajectory.messages, **options)

    def turn_for(self, messages: Sequence[Message]) -> AssistantMessage | None:
        """The recorded turn answering ``messages``, or None when the prompt's turns are used up."""
        users = 0
        after_user = 0
        for m in messages:
            if isinstance(m, UserMessage):
                users += 1
                after_user = 0
            elif isinstance(m, AssistantMessage):
                after_user += 1
        prompt = max(users, 1) - 1
        if prompt >= len(self.plan):
            return None
        turns = self.plan[prompt].turns
        return turns[after_user] if after_user < len(turns) else None

    async def stream(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> AsyncIterator[Chunk]:
        for chunk in self._chunks(messages):
            yield chunk

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> list[Chunk]:
        return list(self._chunks(messages))

    def _chunks(self, messages: Sequence[Message]) -> list[Chunk]:
        turn = self.turn_for(messages)
        if turn is None:
            return [Usage(), Done("stop")]
        out: list[Chunk] = []
        text = turn.content
        for i in range(0, len(text), self.text_delta_chars):
            out.append(TextDelta(text[i : i + self.text_delta_chars]))
        for index, call in enumerate(turn.tool_calls):
            out.append(ToolCallStart(index=index, id=call.id, name=call.name))
            raw = orjson.dumps(call.arguments).decode()
            parser = JsonStream()
            step = self.argument_delta_chars
            for j in range(0, len(raw), step):
                piece = raw[j : j + step]
                parser.feed(piece)
                out.append(
                    ToolCallDelta(index=index, id=call.id, arguments_delta=piece, partial_arguments=parser.partial())
                )
            parser.finish()
            # The recorded arguments themselves, so the history equals the recording exactly.
            out.append(ToolCallEnd(index=index, call=ToolCall(call.id, call.name, call.arguments)))
        # The recordings carry no per-turn token counts; the usage chunk is sent, empty.
        out.append(Usage())
        out.append(Done("tool_calls" if turn.tool_calls else "stop"))
        return out
