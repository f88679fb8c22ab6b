"""One agent session: the turn loop over a provider, a tool runner, a context and a state machine.

This is the core that ``AgentActor`` wraps; it knows nothing of Ray. A run of one prompt::

    Idle -> ProcessingPrompt -> GeneratingResponse -> (ExecutingTools -> GeneratingResponse)* -> Idle

The provider's chunks are passed through to the caller as they arrive, followed by the
:class:`~raygent.messages.ToolOutputDelta` chunks of running tools (progress only, never in the
history), a :class:`~raygent.messages.ToolResultChunk` for each finished tool call and a
:class:`~raygent.messages.StateChange` for each transition.

Tool-call policy: with a :class:`~raygent.policy.Policy`, each call of a turn is first decided
``allow`` (runs), ``deny`` (answered at once with an error result of kind ``"denied"``) or
``prompt``: the session moves to ``WaitingForUser``, yields an
:class:`~raygent.messages.ApprovalRequest` per such call, and waits until :meth:`Session.approve`
or :meth:`Session.deny` answers each (or ``approval_timeout_s`` passes: denied). Then it moves
back to ``ExecutingTools`` and runs what was allowed or approved, in the model's order.

:meth:`Session.cancel` stops the run in progress: running tool calls are cancelled through the
``cancel_tools`` hook (their results come back as errors of kind ``cancelled``), calls waiting
for approval or not started are answered ``cancelled`` without running, a response being
streamed stops at the provider's next chunk, and the run ends in ``Idle`` (trigger
``"cancelled"``) with every call of the history answered, ready for the next prompt.

What survives a failure: the history only ever receives complete units (the user prompt, a
finished assistant message, and for every tool call of it a result), so after a provider error
or a lost tool runner the history is still one a provider accepts, and the next prompt goes on
from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import msgspec

from raygent.context import Context
from raygent.errors import AgentError, ApprovalError, ProviderError, RateLimited, ToolDenied
from raygent.messages import (
    ApprovalRequest,
    AssistantMessage,
    Chunk,
    Message,
    StateChange,
    StreamError,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallEnd,
    ToolMessage,
    ToolOutputDelta,
    ToolResult,
    ToolResultChunk,
    Usage,
    UserMessage,
)
from raygent.policy import Policy
from raygent.providers import Provider
from raygent.state import AgentState, StateMachine

__all__ = ["Session", "SessionStats", "DEFAULT_SYSTEM_PROMPT", "ToolRunner"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a coding agent working in a repository on the user's machine. Use the tools to "
    "inspect and change files and to run commands; paths are relative to the workspace root. "
    "When the task is done, answer concisely with what you found or changed."
)

ToolRunner = Callable[[list[ToolCall]], AsyncIterator[ToolResult | ToolOutputDelta]]


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
        ``run_tools(calls) -> async iterator of ToolResult or ToolOutputDelta``: runs one
        turn's tool calls and yields each result as it finishes, and optionally the calls'
        output while they run (``ToolPipeline.run_turn`` / ``stream_turn`` or a Ray actor's
        stream). Deltas go to the caller, never into the history.
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
    policy : Policy, optional
        Decides each tool call before it runs (see :mod:`raygent.policy`); None runs every call.
    approval_timeout_s : float, optional
        How long a ``prompt`` call waits for :meth:`approve` / :meth:`deny` before it is denied
        (seconds); None waits for as long as it takes.
    compact_threshold : float or None, default 0.9
        Before each model response, when the conversation not yet summarized costs more than
        this fraction of ``budget_tokens``, the oldest turns are summarized by ``provider``
        (:meth:`~raygent.context.Context.compact`, down to half the budget) and the window
        shows the summary in their place. When the provider fails or returns no text, the
        window falls back to trimming (oldest turns left out), and the run goes on. ``None``
        never compacts. Either way the full history is kept: ``context.history`` returns
        every message as appended; the window is only a view.
    on_generate : callable, optional
        ``on_generate()``, called as each model response starts (after the prompt is added,
        and after each round of tool results), before the provider is asked. A hint hook:
        ``AgentActor`` uses it to start speculative execution of predicted calls while the
        model thinks. It must return at once (schedule work, never wait); what it raises
        propagates.
    cancel_tools : callable, optional
        ``cancel_tools() -> awaitable``: cancels the tool calls ``run_tools`` is running now
        (``ToolActor.cancel`` of the current turn), which then yield their results as errors
        of kind ``cancelled``. Without it :meth:`cancel` lets running calls finish and stops
        the run after them.
    on_append : callable, optional
        ``on_append(seq, message)``, called as each message enters the history, with its index
        in ``context.history`` (the system prompt is 0) and before the session acts on it: the
        prompt before the model is asked, an assistant message before its tool calls run, a
        tool result before the next model call. The checkpoint hook: ``AgentActor`` writes
        the message to its :class:`~raygent.store.SessionStore`. It must be synchronous; what
        it raises propagates and ends the run (the message stays in the in-memory history).
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
        policy: Policy | None = None,
        approval_timeout_s: float | None = None,
        compact_threshold: float | None = 0.9,
        on_generate: Callable[[], None] | None = None,
        cancel_tools: Callable[[], Awaitable[Any]] | None = None,
        on_append: Callable[[int, Message], None] | None = None,
    ) -> None:
        self.provider = provider
        self.cancel_tools = cancel_tools
        self._running = False
        self._cancel_requested = False
        self.stream = stream
        self.run_tools = run_tools
        self.tool_schemas = list(tool_schemas)
        self.max_turns = max_turns
        self.compact = compact_threshold is not None
        self.on_generate = on_generate
        self.on_append = on_append
        self.context = Context(
            system_prompt=system_prompt,
            budget_tokens=budget_tokens,
            compact_threshold=compact_threshold if compact_threshold is not None else 1.0,
        )
        self.machine = StateMachine()
        self.stats = SessionStats()
        self.policy = policy
        self.approval_timeout_s = approval_timeout_s
        # call id -> future answered by approve (None) or deny ((message for the model, reason))
        self._pending: dict[str, asyncio.Future[tuple[str, str] | None]] = {}

    def _append(self, msg: Message) -> None:
        self.context.append(msg)
        if self.on_append is not None:
            self.on_append(len(self.context.history) - 1, msg)

    def restore(self, messages: Sequence[Message]) -> None:
        """Rebuild the history from stored ``messages`` (as ``context.history`` had them, system
        prompt first), without calling ``on_append``: they are stored already.

        Raises
        ------
        ValueError
            The history is not empty past its system prompt, or ``messages`` is not a history
            :class:`~raygent.context.Context` accepts (a tool result answering no call); the
            session is then left part-restored and must be discarded.
        """
        if len(self.context.history) > 1:
            raise ValueError("restore needs a fresh session (only its system prompt)")
        rest = list(messages[1:]) if messages and isinstance(messages[0], SystemMessage) else list(messages)
        self.context.extend(rest)

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
            :meth:`shutdown` (also when it comes while calls wait for approval). The state is then ``Error`` (``Shutdown`` for the last) and the
            history keeps every completed unit.
        """
        if self.state is AgentState.SHUTDOWN:
            raise AgentError("the session is shut down", kind="shutdown")
        # aclosing: a reader that leaves closes the whole chain at once (see _execute).
        async with contextlib.aclosing(self._drive(self._run(prompt))) as chunks:
            async for chunk in chunks:
                yield chunk

    async def resume(self, rerun: Callable[[ToolCall], bool]) -> AsyncIterator[Chunk]:
        """Finish the run that a restored history (:meth:`restore`) was in the middle of.

        Where the history stops says where the run was: after the prompt or after a round of
        tool results, the model is asked for its next response; after an assistant message
        whose tool calls have no result (the process died while they ran), each such call is
        run again when ``rerun(call)`` is true (read-only tools), and otherwise answered with
        an error result of kind ``"interrupted"`` telling the model it may have run partly
        and was not repeated; then the run goes on as :meth:`run` does. A history that ends
        with a final answer (or only the system prompt) had no run in flight: nothing is
        yielded.

        Raises
        ------
        AgentError
            As :meth:`run`.
        """
        if self.state is AgentState.SHUTDOWN:
            raise AgentError("the session is shut down", kind="shutdown")
        async with contextlib.aclosing(self._drive(self._resume(rerun))) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _drive(self, run: AsyncGenerator[Chunk, None]) -> AsyncGenerator[Chunk, None]:
        self._running = True
        self._cancel_requested = False
        try:
            async for chunk in run:
                yield chunk
        finally:
            self._running = False
            await run.aclose()

    async def _run(self, prompt: str) -> AsyncGenerator[Chunk, None]:
        yield self._to(AgentState.PROCESSING_PROMPT, "prompt")
        self._append(UserMessage(prompt))
        self.stats.prompts += 1
        async with contextlib.aclosing(self._turns("prompt added")) as turns:
            async for chunk in turns:
                yield chunk

    async def _resume(self, rerun: Callable[[ToolCall], bool]) -> AsyncGenerator[Chunk, None]:
        history = self.context.history
        last = history[-1]
        if isinstance(last, SystemMessage) or (isinstance(last, AssistantMessage) and not last.tool_calls):
            return
        yield self._to(AgentState.PROCESSING_PROMPT, "resumed")
        pending = self.context.pending_tool_calls
        first_trigger = "prompt added" if isinstance(last, UserMessage) else "tool results ready"
        if pending:
            assistant = next(m for m in reversed(history) if isinstance(m, AssistantMessage))
            calls = [c for c in assistant.tool_calls if c.id in pending]
            yield self._to(AgentState.GENERATING_RESPONSE, "resumed after a response with tool calls")
            yield self._to(AgentState.EXECUTING_TOOLS, f"{len(calls)} interrupted tool call(s)")
            again = [c for c in calls if rerun(c)]
            for call in calls:
                if call not in again:
                    r = _interrupted(
                        call,
                        "the agent's process stopped while this call ran, so it may have run partly "
                        "or completely; it was not run again: check its effects before repeating it",
                    )
                    self._record(r)
                    yield ToolResultChunk(r)
            if again:
                async with contextlib.aclosing(self._execute(again)) as execute:
                    async for chunk in execute:
                        yield chunk
            if self._cancel_requested:
                yield self._to(AgentState.IDLE, "cancelled")
                return
        async with contextlib.aclosing(self._turns(first_trigger)) as turns:
            async for chunk in turns:
                yield chunk

    async def _turns(self, first_trigger: str) -> AsyncGenerator[Chunk, None]:
        for turn in range(self.max_turns):
            yield self._to(
                AgentState.GENERATING_RESPONSE, "tool results ready" if turn else first_trigger
            )
            text: list[str] = []
            calls: list[ToolCall] = []
            response = self._respond()
            try:
                async for chunk in response:
                    if self._cancel_requested:
                        break  # the aclose below closes the provider's stream
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
            finally:
                await response.aclose()
            self.stats.turns += 1
            self._append(AssistantMessage(content="".join(text), tool_calls=calls))
            if self._cancel_requested:
                # Calls the model finished before the cancel are answered without running, so
                # the history stays one a provider accepts.
                for call in calls:
                    result = _cancelled(call, "the run was cancelled before this call started")
                    self._record(result)
                    yield ToolResultChunk(result)
                yield self._to(AgentState.IDLE, "cancelled")
                return
            if not calls:
                yield self._to(AgentState.IDLE, "response complete")
                return
            yield self._to(AgentState.EXECUTING_TOOLS, f"{len(calls)} tool call(s)")
            # aclosing: a reader that stops mid-turn closes the inner generators at once, so
            # their cleanup (answering every call in the history) runs before this returns.
            async with contextlib.aclosing(self._execute(calls)) as execute:
                async for chunk in execute:
                    yield chunk
            if self._cancel_requested:
                yield self._to(AgentState.IDLE, "cancelled")
                return
        yield self._to(AgentState.ERROR, "turn limit", "max_turns")
        raise AgentError(
            f"the model was still calling tools after {self.max_turns} turns", kind="max_turns"
        )

    async def _respond(self) -> AsyncGenerator[Chunk, None]:
        if self.on_generate is not None:
            self.on_generate()
        if self.compact and self.context.needs_compaction():
            # A failed summary is counted in context.compaction_failures; the window then
            # trims instead, so the turn goes on either way.
            await self.context.compact(self.provider)
        window = self.context.window()
        if self.stream:
            stream = self.provider.stream(window, self.tool_schemas)
            try:
                async for chunk in stream:
                    yield chunk
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            return
        complete = getattr(self.provider, "complete", None)
        if complete is not None:
            chunks = await complete(window, self.tool_schemas)
        else:
            chunks = [c async for c in self.provider.stream(window, self.tool_schemas)]
        for chunk in chunks:
            yield chunk

    def may_speculate(self, tool: str, arguments: dict[str, Any]) -> bool:
        """Whether a predicted call may run before the model asks for it: only when the
        policy would run it without asking (always, without a policy). The tool runner still
        refuses any tool that is not read-only."""
        if self.policy is None:
            return True
        return self.policy.decide(ToolCall("speculative", tool, arguments)).decision == "allow"

    async def _execute(self, calls: list[ToolCall]) -> AsyncGenerator[Chunk, None]:
        results: dict[str, ToolResult] = {}
        failure: BaseException | None = None
        if self.policy is not None:
            async with contextlib.aclosing(self._screen(calls, results)) as screen:
                async for chunk in screen:
                    yield chunk
        # None run once the run is cancelled: the loop below answers them as cancelled.
        runnable = [] if self._cancel_requested else [c for c in calls if c.id not in results]
        try:
            if runnable:
                async for item in self.run_tools(runnable):
                    if isinstance(item, ToolOutputDelta):
                        yield item
                        continue
                    results[item.call_id] = item
                    yield ToolResultChunk(item)
        except Exception as e:  # the runner (an actor) died: answer every call anyway
            failure = e
        for call in calls:
            r = results.get(call.id)
            if r is None and failure is None and self._cancel_requested:
                r = _cancelled(call, "the run was cancelled before this call started")
                yield ToolResultChunk(r)
            elif r is None:
                why = f"failed ({failure})" if failure is not None else "ended without its result"
                r = _interrupted(call, f"the tool runner {why} before this call finished")
            self._record(r)
        if failure is not None:
            yield self._to(AgentState.ERROR, "tool runner failed", "tool_runner_failed")
            raise AgentError(f"tool runner failed: {failure}", kind="tool_runner_failed") from failure
        if self.state is AgentState.SHUTDOWN:
            raise AgentError("the session was shut down while tool calls waited for approval", kind="shutdown")

    async def _screen(
        self, calls: list[ToolCall], results: dict[str, ToolResult]
    ) -> AsyncGenerator[Chunk, None]:
        """Apply the policy: denied calls get their result in ``results``; ``prompt`` calls wait."""
        assert self.policy is not None
        asked = []
        for call in calls:
            verdict = self.policy.decide(call)
            if verdict.decision == "deny":
                why = f"policy rule {verdict.rule}" + (f": {verdict.reason}" if verdict.reason else "")
                results[call.id] = _denied(call, f"denied by {why}", verdict.reason)
                yield ToolResultChunk(results[call.id])
            elif verdict.decision == "prompt":
                asked.append((call, verdict))
        if not asked:
            return
        loop = asyncio.get_running_loop()
        futures = {call.id: loop.create_future() for call, _ in asked}
        self._pending.update(futures)
        try:
            yield self._to(AgentState.WAITING_FOR_USER, f"{len(asked)} tool call(s) need approval")
            for call, verdict in asked:
                yield ApprovalRequest(call=call, rule=verdict.rule, reason=verdict.reason)
            await asyncio.wait(futures.values(), timeout=self.approval_timeout_s)
        except BaseException:
            # The run was cancelled or its reader went away while waiting: every call of the
            # turn still gets a result, so the history stays one a provider accepts.
            for call in calls:
                r = results.get(call.id) or _interrupted(call, "the run ended while tool calls waited for approval")
                self._append(ToolMessage.from_result(r))
            raise
        finally:
            for call_id in futures:
                self._pending.pop(call_id, None)
        if self.state is not AgentState.SHUTDOWN:
            yield self._to(AgentState.EXECUTING_TOOLS, "approvals answered")
        for call, _ in asked:
            future = futures[call.id]
            if future.done():
                answer = future.result()
            else:
                future.cancel()
                why = f"no answer within {self.approval_timeout_s} s"
                answer = (f"denied: {why}", why)
            if answer is not None:
                results[call.id] = _denied(call, *answer)
                yield ToolResultChunk(results[call.id])

    @property
    def pending_approvals(self) -> list[str]:
        """Ids of the tool calls waiting for :meth:`approve` / :meth:`deny`, in request order."""
        return [call_id for call_id, f in self._pending.items() if not f.done()]

    def approve(self, call_id: str) -> None:
        """Let a call that waits for approval run.

        Raises
        ------
        ApprovalError
            ``call_id`` is not waiting (unknown, already answered, or its run ended).
        """
        self._answer(call_id, None)

    def deny(self, call_id: str, reason: str = "") -> None:
        """Refuse a call that waits for approval; the model gets a ``"denied"`` error result
        (``"denied by the user: <reason>"``) and the run goes on.

        Raises
        ------
        ApprovalError
            ``call_id`` is not waiting (unknown, already answered, or its run ended).
        """
        self._answer(call_id, ("denied by the user" + (f": {reason}" if reason else ""), reason))

    def _answer(self, call_id: str, answer: tuple[str, str] | None) -> None:
        future = self._pending.get(call_id)
        if future is None or future.done():
            raise ApprovalError(call_id, self.pending_approvals)
        future.set_result(answer)

    def _record(self, result: ToolResult) -> None:
        self.stats.tool_calls += 1
        self.stats.tool_errors += result.is_error
        self._append(ToolMessage.from_result(result))

    async def cancel(self) -> bool:
        """Stop the run in progress (see the module docs); the next prompt may follow at once.

        Running tool calls are cancelled through ``cancel_tools`` (subprocesses are killed with
        their children) and come back as error results of kind ``"cancelled"``; calls waiting
        for approval or not started are answered the same way without running; a response
        being streamed stops at its next chunk (the text so far and the calls it finished stay
        in the history). The run's stream then ends with a transition to ``Idle`` triggered by
        ``"cancelled"``.

        Returns
        -------
        bool
            True if a run was in progress, False if there was nothing to cancel.
        """
        if not self._running:
            return False
        self._cancel_requested = True
        # Waiting calls are released as if approved: nothing runs once the run is cancelled,
        # so they reach the "cancelled" answer of every call not run (_execute).
        for call_id in self.pending_approvals:
            self._answer(call_id, None)
        if self.state is AgentState.EXECUTING_TOOLS and self.cancel_tools is not None:
            await self.cancel_tools()
        return True

    def shutdown(self) -> None:
        if self.state is not AgentState.SHUTDOWN:
            self.machine.to(AgentState.SHUTDOWN, "shutdown")
        for call_id in self.pending_approvals:
            self._answer(call_id, ("denied: the session was shut down", "the session was shut down"))


def _denied(call: ToolCall, message: str, reason: str) -> ToolResult:
    err = ToolDenied(message, tool=call.name, call_id=call.id, reason=reason)
    return ToolResult(
        call_id=call.id, name=call.name, content=str(err), is_error=True, error_kind=err.kind, attempts=0
    )


def _interrupted(call: ToolCall, why: str) -> ToolResult:
    return ToolResult(
        call_id=call.id, name=call.name, content=f"interrupted: {why}", is_error=True,
        error_kind="interrupted", attempts=0,
    )


def _cancelled(call: ToolCall, why: str) -> ToolResult:
    return ToolResult(
        call_id=call.id, name=call.name, content=f"cancelled: {why}", is_error=True,
        error_kind="cancelled", attempts=0,
    )
