"""One agent session: the turn loop over a provider, a tool runner, a context and a state machine.

This is the core that ``AgentActor`` wraps; it knows nothing of Ray. A run of one prompt::

    Idle -> ProcessingPrompt -> GeneratingResponse -> (ExecutingTools -> GeneratingResponse)* -> Idle

The provider's chunks are passed through to the caller as they arrive, followed by a
:class:`~raygent.messages.ToolResultChunk` for each finished tool call and a
:class:`~raygent.messages.StateChange` for each transition.

What survives a failure: the history only ever receives complete units (the user prompt, a
finished assistant message, and for every tool call of it a result), so after a provider error
or a lost tool runner the history is still one a provider accepts, and the next prompt goes on
from it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence

import msgspec

from raygent.context import Context
from raygent.errors import AgentError, ProviderError, RateLimited
from raygent.messages import (
    AssistantMessage,
    Chunk,
    StateChange,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallEnd,
    ToolMessage,
    ToolResult,
    ToolResultChunk,
    Usage,
    UserMessage,
)
from raygent.providers import Provider
from raygent.state import AgentState, StateMachine

__all__ = ["Session", "SessionStats", "DEFAULT_SYSTEM_PROMPT", "ToolRunner"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a coding agent working in a repository on the user's machine. Use the tools to "
    "inspect and change files and to run commands; paths are relative to the workspace root. "
    "When the task is done, answer concisely with what you found or changed."
)

ToolRunner = Callable[[list[ToolCall]], AsyncIterator[ToolResult]]


class SessionStats(msgspec.Struct):
    """Totals over the session's life: model turns, tool calls, tokens (as the provider reported)."""

    prompts: int = 0
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Session:
    """The turn loop of one conversation.

    Parameters
    ----------
    provider : Provider
        Streams the model's responses.
    run_tools : callable
        ``run_tools(calls) -> async iterator of ToolResult``: runs one turn's tool calls and
        yields each result as it finishes (``ToolPipeline.run_turn`` or a Ray actor's stream).
    tool_schemas : sequence of dict
        ``{"name", "description", "parameters"}`` of every tool offered to the model.
    system_prompt : str
        The first message of the history.
    budget_tokens : int, default 32_000
        Token budget of the window sent to the model (see :class:`~raygent.context.Context`).
    max_turns : int, default 24
        Model responses allowed for one prompt before the run stops with ``max_turns``.
    stream : bool, default True
        False asks the provider for whole responses: its ``complete(messages, tools) ->
        list[Chunk]`` when it has one, else its stream gathered before anything is passed on.
        The history and the tool calls are the same either way; only the chunking differs.
    """

    def __init__(
        self,
        *,
        provider: Provider,
        run_tools: ToolRunner,
        tool_schemas: Sequence[dict],
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        budget_tokens: int = 32_000,
        max_turns: int = 24,
        stream: bool = True,
    ) -> None:
        self.provider = provider
        self.stream = stream
        self.run_tools = run_tools
        self.tool_schemas = list(tool_schemas)
        self.max_turns = max_turns
        self.context = Context(system_prompt=system_prompt, budget_tokens=budget_tokens)
        self.machine = StateMachine()
        self.stats = SessionStats()

    @property
    def state(self) -> AgentState:
        return self.machine.state

    def _to(self, target: AgentState, trigger: str, error_kind: str | None = None) -> StateChange:
        t = self.machine.to(target, trigger, error_kind=error_kind)
        return StateChange(source=t.source.value, target=t.target.value, trigger=trigger)

    async def run(self, prompt: str) -> AsyncIterator[Chunk]:
        """Run one prompt to its answer, yielding every chunk as it happens.

        Raises
        ------
        AgentError
            ``kind="provider_error"`` (or ``"rate_limit"``) when the provider fails,
            ``"tool_runner_failed"`` when the tool runner dies mid-turn, ``"max_turns"`` when
            the model keeps calling tools past ``max_turns``, ``"shutdown"`` after
            :meth:`shutdown`. The state is then ``Error`` (``Shutdown`` for the last) and the
            history keeps every completed unit.
        """
        if self.state is AgentState.SHUTDOWN:
            raise AgentError("the session is shut down", kind="shutdown")
        yield self._to(AgentState.PROCESSING_PROMPT, "prompt")
        self.context.append(UserMessage(prompt))
        self.stats.prompts += 1
        for turn in range(self.max_turns):
            yield self._to(
                AgentState.GENERATING_RESPONSE, "tool results ready" if turn else "prompt added"
            )
            text: list[str] = []
            calls: list[ToolCall] = []
            try:
                async for chunk in self._respond():
                    if isinstance(chunk, TextDelta):
                        text.append(chunk.text)
                    elif isinstance(chunk, ToolCallEnd):
                        calls.append(chunk.call)
                    elif isinstance(chunk, Usage):
                        self.stats.input_tokens += chunk.input_tokens
                        self.stats.output_tokens += chunk.output_tokens
                    yield chunk
            except ProviderError as e:
                kind = "rate_limit" if isinstance(e, RateLimited) else "provider_error"
                yield self._to(AgentState.ERROR, f"provider failed: {type(e).__name__}", kind)
                yield StreamError(kind=kind, message=str(e))
                raise AgentError(f"{self.provider.name}: {e}", kind=kind) from e
            self.stats.turns += 1
            self.context.append(AssistantMessage(content="".join(text), tool_calls=calls))
            if not calls:
                yield self._to(AgentState.IDLE, "response complete")
                return
            yield self._to(AgentState.EXECUTING_TOOLS, f"{len(calls)} tool call(s)")
            async for chunk in self._execute(calls):
                yield chunk
        yield self._to(AgentState.ERROR, "turn limit", "max_turns")
        raise AgentError(
            f"the model was still calling tools after {self.max_turns} turns", kind="max_turns"
        )

    async def _respond(self) -> AsyncIterator[Chunk]:
        window = self.context.window()
        if self.stream:
            async for chunk in self.provider.stream(window, self.tool_schemas):
                yield chunk
            return
        complete = getattr(self.provider, "complete", None)
        if complete is not None:
            chunks = await complete(window, self.tool_schemas)
        else:
            chunks = [c async for c in self.provider.stream(window, self.tool_schemas)]
        for chunk in chunks:
            yield chunk

    async def _execute(self, calls: list[ToolCall]) -> AsyncIterator[Chunk]:
        results: dict[str, ToolResult] = {}
        failure: BaseException | None = None
        try:
            async for result in self.run_tools(calls):
                results[result.call_id] = result
                yield ToolResultChunk(result)
        except Exception as e:  # the runner (an actor) died: answer every call anyway
            failure = e
        for call in calls:
            r = results.get(call.id)
            if r is None:
                r = ToolResult(
                    call_id=call.id,
                    name=call.name,
                    content=f"interrupted: the tool runner failed before this call finished ({failure})",
                    is_error=True,
                    error_kind="interrupted",
                )
            self.stats.tool_calls += 1
            self.stats.tool_errors += r.is_error
            self.context.append(ToolMessage.from_result(r))
        if failure is not None:
            yield self._to(AgentState.ERROR, "tool runner failed", "tool_runner_failed")
            raise AgentError(f"tool runner failed: {failure}", kind="tool_runner_failed") from failure

    def shutdown(self) -> None:
        if self.state is not AgentState.SHUTDOWN:
            self.machine.to(AgentState.SHUTDOWN, "shutdown")
