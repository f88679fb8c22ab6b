"""The raygent error hierarchy: one base class, typed errors that carry their context.

Every error a caller can see derives from :class:`RaygentError`. Errors that travel to the model
as a tool result (a refused path, a timeout) keep a short ``kind`` string so the runtime can
record them in the conversation without losing the history.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RaygentError",
    "ToolError",
    "ToolNotFound",
    "ToolArgumentError",
    "ToolTimeout",
    "SandboxViolation",
    "ProviderError",
    "ProviderHTTPError",
    "RateLimited",
    "StreamBroken",
    "ToolCallArgumentsError",
    "InvalidTransition",
    "AgentError",
    "TrajectoryError",
    "RetryableToolError",
    "PolicyError",
    "ToolDenied",
    "ApprovalError",
    "TransportError",
    "StoreError",
    "SequenceGap",
    "StoreConflict",
    "WorkflowError",
    "ConfigError",
    "SessionNotOpen",
]


class RaygentError(Exception):
    """Base class of every error raised by raygent."""

    # Errors cross Ray (an actor raises, the driver catches) by pickling. The default pickling
    # calls ``cls(*args)``, which loses keyword-only context such as ``kind`` or ``status``;
    # rebuilding from the instance dict keeps every attribute.
    def __reduce__(self):  # type: ignore[override]
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[RaygentError], args: tuple, state: dict) -> RaygentError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class ToolError(RaygentError):
    """A tool call failed; ``kind`` names the failure for the model and for metrics.

    Parameters
    ----------
    message : str
        What went wrong, in words the model can act on.
    tool : str
        The tool's name.
    kind : str
        Machine-readable kind: ``"error"``, ``"not_found"``, ``"bad_arguments"``, ``"timeout"``,
        ``"sandbox"``, ``"denied"``.
    """

    kind = "error"

    def __init__(self, message: str, *, tool: str = "", kind: str | None = None) -> None:
        super().__init__(message)
        self.tool = tool
        if kind is not None:
            self.kind = kind


class ToolNotFound(ToolError):
    """The model called a tool that is not registered."""

    kind = "not_found"


class ToolArgumentError(ToolError):
    """A tool call's arguments are malformed JSON or do not match the tool's signature."""

    kind = "bad_arguments"


class ToolTimeout(ToolError):
    """A tool ran past its timeout; its process group was killed."""

    kind = "timeout"

    def __init__(self, message: str, *, tool: str = "", timeout_s: float = 0.0) -> None:
        super().__init__(message, tool=tool)
        self.timeout_s = timeout_s


class SandboxViolation(ToolError):
    """A path resolved outside the workspace (``..``, absolute path or symlink); nothing was touched."""

    kind = "sandbox"

    def __init__(self, message: str, *, tool: str = "", path: str = "") -> None:
        super().__init__(message, tool=tool)
        self.path = path


class ProviderError(RaygentError):
    """The model provider failed (transport, protocol or API error)."""


class ProviderHTTPError(ProviderError):
    """The provider answered with an HTTP error status.

    Attributes
    ----------
    status : int
        The HTTP status code.
    body : str
        The response body (at most 2,000 characters), for the error message the API gave.
    """

    def __init__(self, message: str, *, status: int, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class RateLimited(ProviderHTTPError):
    """HTTP 429 after the last retry; ``retry_after_s`` is the server's hint, if it gave one."""

    def __init__(
        self, message: str, *, status: int = 429, body: str = "", retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after_s = retry_after_s


class StreamBroken(ProviderError):
    """A streamed response ended or failed midway.

    Attributes
    ----------
    received : list
        The chunks decoded before the break (``raygent.messages`` chunk structs), so the caller
        keeps what had arrived.
    """

    def __init__(self, message: str, *, received: list | None = None) -> None:
        super().__init__(message)
        self.received = list(received or [])


class ToolCallArgumentsError(ProviderError):
    """The model streamed tool-call arguments that are not a JSON object.

    Raised by a provider while decoding, so a call is never run with arguments it cannot have
    meant; the runtime can hand ``raw`` back to the model to correct itself.

    Attributes
    ----------
    call_id, name : str
        The tool call (``name`` is ``""`` if the call's name had not arrived).
    raw : str
        The arguments text received for this call up to the error.
    offset : int
        Byte offset into the (UTF-8) arguments text where it stopped being valid JSON, as
        reported by ``raygent._native.JsonStreamError.offset``.
    """

    def __init__(self, message: str, *, call_id: str, name: str, raw: str, offset: int) -> None:
        super().__init__(message)
        self.call_id = call_id
        self.name = name
        self.raw = raw
        self.offset = offset


class InvalidTransition(RaygentError):
    """An agent state transition that the transition table does not allow."""

    def __init__(self, source: str, target: str, trigger: str) -> None:
        super().__init__(f"illegal transition {source} -> {target} (trigger: {trigger})")
        self.source = source
        self.target = target
        self.trigger = trigger


class AgentError(RaygentError):
    """A run failed; ``kind`` says why (``provider_error``, ``max_turns``, ``actor_died`` ...)."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class TrajectoryError(RaygentError, ValueError):
    """A recorded trajectory could not be read: unknown format or broken content.

    Raised by :func:`raygent.replay.load_trajectory`; the message names the file and what was
    wrong (``"invalid JSON at line 3 column 7: ..."``, ``"unrecognized structure ..."``,
    ``"missing field 'history'"``).

    Attributes
    ----------
    path : str
        The file that was read.
    reason : str
        What was wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class RetryableToolError(ToolError):
    """A transient tool failure (a busy resource, a flaky network): the pipeline may retry it.

    Raise it from a tool whose call is safe to repeat. ``ToolPipeline`` retries such a call with
    exponential backoff and jitter (at most ``max_retries`` times, 2 by default); any other
    ``ToolError`` is returned to the model at once.
    """

    retryable = True


class PolicyError(RaygentError, ValueError):
    """A tool policy could not be built: a bad TOML file or a bad rule.

    The message names the file (or ``Policy`` for one built in Python) and the problem,
    ``"<file>: commands.\\"rm *\\": decision must be one of allow, prompt, deny, got 'block'"``.

    Attributes
    ----------
    source : str
        The policy file's path, or ``"Policy"``.
    reason : str
        What was wrong.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ToolDenied(ToolError):
    """A tool call was refused before it ran: by the policy (``deny``) or by the person asked.

    The model receives it as an error result (``error_kind="denied"``); the history stays whole
    and the session goes on.

    Attributes
    ----------
    call_id : str
        The refused call.
    reason : str
        Why, as given by the rule or the person.
    """

    kind = "denied"

    def __init__(self, message: str, *, tool: str = "", call_id: str = "", reason: str = "") -> None:
        super().__init__(message, tool=tool)
        self.call_id = call_id
        self.reason = reason


class ApprovalError(RaygentError, LookupError):
    """``approve`` / ``deny`` named a call that is not waiting for approval.

    Attributes
    ----------
    call_id : str
        The call named.
    pending : list of str
        The calls that are waiting, when this was raised.
    """

    def __init__(self, call_id: str, pending: list[str]) -> None:
        waiting = ", ".join(pending) if pending else "none"
        super().__init__(f"tool call {call_id!r} is not waiting for approval (waiting: {waiting})")
        self.call_id = call_id
        self.pending = list(pending)


class TransportError(RaygentError, ValueError):
    """A message could not be packed, batched or unpacked for the trip between actors.

    Attributes
    ----------
    path : tuple
        Field names and list indexes from the message root to the value at fault (``()`` when
        the message as a whole is at fault).
    """

    def __init__(self, message: str, *, path: tuple = ()) -> None:
        super().__init__(message)
        self.path = tuple(path)


class StoreError(RaygentError):
    """A session store could not read or write (the database's own error is the ``__cause__``).

    Attributes
    ----------
    session_id : str
        The session concerned (``""`` for store-wide operations).
    """

    def __init__(self, message: str, *, session_id: str = "") -> None:
        super().__init__(message)
        self.session_id = session_id


class SequenceGap(StoreError):
    """An append would leave a hole in a session's message sequence; nothing was written.

    Attributes
    ----------
    expected : int
        The next sequence number the session can take.
    got : int
        The first sequence number of the refused append.
    """

    def __init__(self, message: str, *, session_id: str, expected: int, got: int) -> None:
        super().__init__(message, session_id=session_id)
        self.expected = expected
        self.got = got


class StoreConflict(StoreError):
    """A replayed append brought different bytes for a sequence number already stored.

    Nothing of the append was written; the stored history is unchanged.

    Attributes
    ----------
    seq : int
        The sequence number whose stored message differs.
    """

    def __init__(self, message: str, *, session_id: str, seq: int) -> None:
        super().__init__(message, session_id=session_id)
        self.seq = seq


class WorkflowError(RaygentError):
    """A workflow failed: a step raised, or the graph was refused before anything ran.

    Nothing completed is lost: ``refs`` holds the Ray object reference of every step that
    finished before the failure, and ``results`` fetches their values.

    Attributes
    ----------
    step : str
        The step that failed (for a refused graph: a step of the cycle, or the step with a
        bad dependency).
    refs : dict of str to ray.ObjectRef
        The output of each step that completed, by step name (empty for a refused graph).
    cycle : list of str
        For a refused graph with a cycle: the steps around it, first repeated at the end
        (``["a", "b", "a"]``); else empty.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str,
        refs: dict[str, Any] | None = None,
        cycle: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.refs = dict(refs or {})
        self.cycle = list(cycle or [])

    @property
    def results(self) -> dict[str, Any]:
        """The values of the steps that completed, by step name (fetched from Ray)."""
        import ray  # errors.py must import without Ray; only this accessor needs it

        return dict(zip(self.refs, ray.get(list(self.refs.values())), strict=True))


class ConfigError(RaygentError, ValueError):
    """A runtime setting given to :func:`raygent.init` is not usable.

    Attributes
    ----------
    setting : str
        The argument at fault (``"agent_actor_options"`` ...).
    """

    def __init__(self, message: str, *, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class SessionNotOpen(AgentError, LookupError):
    """A call named a session that the agent actor it reached does not hold: never opened
    there, closed, or the actor restarted since (a restart forgets every session in memory).

    :class:`raygent.Agent` answers it by opening the session again (restored from its store)
    and retrying once; a session without a store cannot come back, and this is raised.

    Attributes
    ----------
    session_id : str
        The session named.
    pid : int
        The process id of the agent actor that was asked (0 when unknown).
    """

    def __init__(self, session_id: str, *, pid: int = 0) -> None:
        super().__init__(
            f"session {session_id!r} is not open on this agent actor (pid {pid}): it was closed, "
            "never opened here, or the actor restarted",
            kind="not_open",
        )
        self.session_id = session_id
        self.pid = pid
