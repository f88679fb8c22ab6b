"""Online model of tool use: which tool follows which, how long each takes, how often it fails.

First version: a first-order Markov chain over tool names (transition counts, with the session
start as the state ``None``) and running means of durations. The runtime feeds it tool events
fire-and-forget; nothing waits on it in the hot path.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

__all__ = ["Predictor", "ToolEvent", "ToolStats"]


class ToolEvent(msgspec.Struct, frozen=True):
    """One finished tool call as the predictor hears it.

    ``session_id`` separates sequences: the first call of a session follows the start state.
    """

    session_id: str
    tool: str
    duration_ms: float
    ok: bool = True


class ToolStats(msgspec.Struct):
    """Per-tool statistics: call count, failures, mean duration (ms, running mean)."""

    calls: int = 0
    failures: int = 0
    mean_duration_ms: float = 0.0

    @property
    def success_rate(self) -> float:
        return 1.0 - self.failures / self.calls if self.calls else 1.0


class Predictor:
    """Tool-to-tool transition counts and running mean durations.

    Examples
    --------
    >>> p = Predictor()
    >>> p.observe(ToolEvent("s", "grep", 3.0))
    >>> p.observe(ToolEvent("s", "read_file", 1.0))
    >>> p.next_tools("grep")
    [('read_file', 1.0)]
    """

    def __init__(self) -> None:
        self._counts: dict[str | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._last: dict[str, str] = {}
        self.stats: dict[str, ToolStats] = {}

    def observe(self, event: ToolEvent) -> None:
        prev = self._last.get(event.session_id)
        self._counts[prev][event.tool] += 1
        self._last[event.session_id] = event.tool
        st = self.stats.setdefault(event.tool, ToolStats())
        st.calls += 1
        st.failures += 0 if event.ok else 1
        st.mean_duration_ms += (event.duration_ms - st.mean_duration_ms) / st.calls

    def end_session(self, session_id: str) -> None:
        """Forget the session's last tool, so its next call counts from the start state."""
        self._last.pop(session_id, None)

    def next_tools(self, after: str | None, *, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most likely tools to follow ``after`` (``None``: a session's first call).

        Returns
        -------
        list of (tool, probability)
            Sorted by probability, highest first (ties by name); empty when ``after`` was never
            followed by anything.
        """
        row = self._counts.get(after)
        if not row:
            return []
        total = sum(row.values())
        ranked = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(tool, n / total) for tool, n in ranked[:k]]

    def mean_duration_ms(self, tool: str) -> float | None:
        st = self.stats.get(tool)
        return st.mean_duration_ms if st else None

    def snapshot(self) -> dict:
        """Plain-data view: transitions ``{prev: {next: count}}`` (start state as ``""``) and stats."""
        return {
            "transitions": {
                (k or ""): dict(v) for k, v in self._counts.items()
            },
            "stats": {
                name: {
                    "calls": s.calls,
                    "failures": s.failures,
                    "success_rate": s.success_rate,
                    "mean_duration_ms": s.mean_duration_ms,
                }
                for name, s in self.stats.items()
            },
        }
