"""Per-tool circuit breaker and retry backoff.

A breaker is ``closed`` (calls pass) until ``failures`` calls fail within ``window_s`` seconds;
it is then ``open`` (calls fail at once with kind ``"circuit_open"``) for ``cooldown_s``
seconds, after which it is ``half_open``: one probe call passes; its success closes the breaker,
its failure opens it again for another cool-down.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

__all__ = ["CircuitBreaker", "backoff_s", "CLOSED", "OPEN", "HALF_OPEN"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """The breaker of one tool.

    Parameters
    ----------
    failures : int, default 5
        Failures within ``window_s`` that open the breaker.
    window_s : float, default 60.0
        Sliding window over which failures are counted, in seconds.
    cooldown_s : float, default 30.0
        Seconds the breaker stays open before it lets one probe call through.
    clock : callable, default time.monotonic
        Returns seconds; injectable for tests.
    """

    __slots__ = ("failures", "window_s", "cooldown_s", "_clock", "_fails", "_state", "_opened_at",
                 "_probing", "opened_count")

    def __init__(
        self,
        *,
        failures: int = 5,
        window_s: float = 60.0,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or window_s <= 0 or cooldown_s < 0:
            raise ValueError("breaker failures must be >= 1, window_s > 0 and cooldown_s >= 0")
        self.failures = failures
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._fails: deque[float] = deque()
        self._state = CLOSED
        self._opened_at = 0.0
        self._probing = False
        self.opened_count = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (an open breaker past its cool-down)."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = HALF_OPEN
            self._probing = False
        return self._state

    def retry_in_s(self) -> float:
        """Seconds until an open breaker half-opens (0 if it is not open)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may run now; in ``half_open`` only one probe at a time is allowed."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """An allowed call ended without an outcome that counts (cancelled, model's mistake)."""
        self._probing = False

    def success(self) -> None:
        """The call succeeded: a half-open breaker closes and the failure window is cleared."""
        self._probing = False
        if self._state != CLOSED:
            self._state = CLOSED
            self._fails.clear()

    def failure(self) -> None:
        """The call failed: count it; open on the threshold, or re-open a half-open breaker."""
        now = self._clock()
        self._probing = False
        if self.state == HALF_OPEN:
            self._open(now)
            return
        self._fails.append(now)
        while self._fails and now - self._fails[0] > self.window_s:
            self._fails.popleft()
        if self._state == CLOSED and len(self._fails) >= self.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self._state = OPEN
        self._opened_at = now
        self._fails.clear()
        self.opened_count += 1


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (1-based), in seconds: exponential with jitter.

    ``base_s * 2 ** (attempt - 1)``, capped at ``max_s``, then scaled by a uniform factor in
    [0.5, 1.0] so callers that failed together do not retry together.
    """
    return min(max_s, base_s * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)
