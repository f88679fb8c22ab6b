"""The agent's state machine: states, the legal transition table and a bounded history.

The turn follows the engine of VT Code that this project generalizes::

    Idle -> ProcessingPrompt -> GeneratingResponse -> (ExecutingTools -> GeneratingResponse)* -> Idle

with ``WaitingForUser`` (a tool call needs approval), ``Error`` (recoverable: the next prompt
starts over from it) and ``Shutdown`` (terminal). Every transition is recorded with its trigger
and a timestamp in a history bounded to ``history_size`` entries.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from typing import NamedTuple

from raygent.errors import InvalidTransition

__all__ = ["AgentState", "Transition", "StateMachine", "TRANSITIONS"]


class AgentState(str, enum.Enum):
    IDLE = "Idle"
    PROCESSING_PROMPT = "ProcessingPrompt"
    GENERATING_RESPONSE = "GeneratingResponse"
    EXECUTING_TOOLS = "ExecutingTools"
    WAITING_FOR_USER = "WaitingForUser"
    ERROR = "Error"
    SHUTDOWN = "Shutdown"


S = AgentState

# Read as: from this state, these are the states one step can reach. Error and Shutdown are
# reachable from every live state because a provider failure or a shutdown request can arrive
# at any point of a turn.
TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    S.IDLE: frozenset({S.PROCESSING_PROMPT, S.SHUTDOWN}),
    S.PROCESSING_PROMPT: frozenset({S.GENERATING_RESPONSE, S.ERROR, S.SHUTDOWN}),
    S.GENERATING_RESPONSE: frozenset({S.EXECUTING_TOOLS, S.IDLE, S.ERROR, S.SHUTDOWN}),
    # Idle: a cancelled run ends once its tools have answered (Session.cancel).
    S.EXECUTING_TOOLS: frozenset(
        {S.GENERATING_RESPONSE, S.WAITING_FOR_USER, S.IDLE, S.ERROR, S.SHUTDOWN}
    ),
    S.WAITING_FOR_USER: frozenset({S.EXECUTING_TOOLS, S.ERROR, S.SHUTDOWN}),
    # Recovery: the error is recorded, then the agent accepts the next prompt.
    S.ERROR: frozenset({S.IDLE, S.PROCESSING_PROMPT, S.SHUTDOWN}),
    S.SHUTDOWN: frozenset(),
}


class Transition(NamedTuple):
    """One recorded transition; ``at`` is wall-clock time in seconds since the epoch."""

    source: AgentState
    target: AgentState
    trigger: str
    at: float


class StateMachine:
    """The current :class:`AgentState` and the transitions that led to it.

    Parameters
    ----------
    history_size : int, default 256
        Transitions kept; older ones are dropped first.

    Attributes
    ----------
    error_kind : str or None
        While in ``Error``: what failed (``provider_error``, ``tool_timeout``, ``rate_limit`` ...).
    """

    def __init__(self, *, history_size: int = 256) -> None:
        self.state = AgentState.IDLE
        self.error_kind: str | None = None
        self.history: deque[Transition] = deque(maxlen=history_size)

    def can(self, target: AgentState) -> bool:
        return target in TRANSITIONS[self.state]

    def to(self, target: AgentState, trigger: str, *, error_kind: str | None = None) -> Transition:
        """Move to ``target``.

        Raises
        ------
        InvalidTransition
            If the table does not allow ``self.state -> target``; the state is unchanged.
        """
        if not self.can(target):
            raise InvalidTransition(self.state.value, target.value, trigger)
        t = Transition(self.state, target, trigger, time.time())
        self.state = target
        self.error_kind = error_kind if target is AgentState.ERROR else None
        self.history.append(t)
        return t
