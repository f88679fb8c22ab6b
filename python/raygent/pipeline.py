"""The asyncio tool pipeline: concurrency limit, per-call timeout, parallel read-only calls.

The calls of one assistant turn are split into steps that keep the model's order where it
matters: consecutive read-only calls form one step and run concurrently; a mutating call is a
step of its own and starts only after every call before it has finished, so a read after a write
always sees the write and two writes never race.

Every result leaves the pipeline as a :class:`~raygent.messages.ToolResult`; a failure (unknown
tool, bad arguments, sandbox refusal, timeout, any exception) becomes an error result with
``error_kind`` set, so the model sees it and the conversation goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from raygent._native import strip_ansi
from raygent.errors import ToolError, ToolNotFound, ToolTimeout
from raygent.messages import ToolCall, ToolResult

__all__ = ["ToolPipeline", "ToolLike", "plan_steps", "cap_output"]


class ToolLike(Protocol):
    """What the pipeline needs of a tool (``raygent.tools.Tool`` has it)."""

    name: str
    read_only: bool
    timeout_s: float | None

    def invoke(self, arguments: dict[str, Any]) -> Awaitable[Any]: ...


def plan_steps(calls: Sequence[ToolCall], tools: Mapping[str, ToolLike]) -> list[list[ToolCall]]:
    """Split one turn's calls into ordered steps: runs of read-only calls, each mutating call alone.

    An unknown tool counts as read-only: it touches nothing (it fails with ``not_found``).
    """
    steps: list[list[ToolCall]] = []
    for call in calls:
        if _read_only(call, tools) and steps and all(_read_only(c, tools) for c in steps[-1]):
            steps[-1].append(call)
        else:
            steps.append([call])
    return steps


def _read_only(call: ToolCall, tools: Mapping[str, ToolLike]) -> bool:
    tool = tools.get(call.name)
    return tool is None or tool.read_only


def cap_output(text: str, max_chars: int) -> str:
    """Keep the head and tail of ``text`` within ``max_chars``, with a marker of what was cut."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters truncated ...]\n{text[-half:]}"


class ToolPipeline:
    """Runs tool calls against a registry of tools.

    Parameters
    ----------
    tools : Mapping[str, ToolLike]
        The registry, by tool name.
    max_concurrency : int, default 8
        Calls running at once across all turns fed to this pipeline.
    default_timeout_s : float, default 120.0
        Timeout of a call whose tool sets none (seconds). On timeout the call's coroutine is
        cancelled (``run_command`` kills its process group) and an error result is returned.
    max_output_chars : int, default 100_000
        Longer outputs keep their head and tail with a visible truncation marker.
    """

    def __init__(
        self,
        tools: Mapping[str, ToolLike],
        *,
        max_concurrency: int = 8,
        default_timeout_s: float = 120.0,
        max_output_chars: int = 100_000,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.tools = dict(tools)
        self.default_timeout_s = default_timeout_s
        self.max_output_chars = max_output_chars
        self._slots = asyncio.Semaphore(max_concurrency)

    async def run_call(self, call: ToolCall) -> ToolResult:
        """Run one call under the concurrency limit and its timeout; never raises for tool errors."""
        async with self._slots:
            started = time.perf_counter()
            try:
                content = await self._invoke(call)
                is_error, kind = False, None
            except ToolError as e:
                content, is_error, kind = f"{e.kind}: {e}", True, e.kind
            except Exception as e:  # a tool's own bug must not end the session
                content, is_error, kind = f"error: {type(e).__name__}: {e}", True, "error"
            duration_ms = (time.perf_counter() - started) * 1000.0
        return ToolResult(
            call_id=call.id,
            name=call.name,
            content=cap_output(strip_ansi(content), self.max_output_chars),
            is_error=is_error,
            error_kind=kind,
            duration_ms=duration_ms,
        )

    async def _invoke(self, call: ToolCall) -> str:
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools))
            raise ToolNotFound(f"no tool named {call.name!r}; known tools: {known}", tool=call.name)
        timeout_s = tool.timeout_s if tool.timeout_s is not None else self.default_timeout_s
        try:
            out = await asyncio.wait_for(tool.invoke(dict(call.arguments)), timeout_s)
        except (asyncio.TimeoutError, TimeoutError) as e:
            if isinstance(e, ToolTimeout):
                raise
            raise ToolTimeout(
                f"{call.name} did not finish within {timeout_s:g} s and was cancelled",
                tool=call.name,
                timeout_s=timeout_s,
            ) from None
        if isinstance(out, str):
            return out
        if isinstance(out, bytes):
            return out.decode("utf-8", "replace")
        return orjson.dumps(out, default=str).decode()

    async def run_turn(self, calls: Sequence[ToolCall]) -> AsyncIterator[ToolResult]:
        """Run one assistant turn's calls step by step (see :func:`plan_steps`).

        Yields
        ------
        ToolResult
            Each result as soon as its call finishes: in call order across steps, in completion
            order within a step of parallel read-only calls.
        """
        for step in plan_steps(calls, self.tools):
            if len(step) == 1:
                yield await self.run_call(step[0])
                continue
            for fut in asyncio.as_completed([self.run_call(c) for c in step]):
                yield await fut

    async def run_all(
        self, calls: Sequence[ToolCall], on_result: Callable[[ToolResult], None] | None = None
    ) -> list[ToolResult]:
        """Run one turn and return the results in the order of ``calls``."""
        by_id: dict[str, ToolResult] = {}
        async for r in self.run_turn(calls):
            by_id[r.call_id] = r
            if on_result is not None:
                on_result(r)
        return [by_id[c.id] for c in calls]
